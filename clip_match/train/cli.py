"""``clip-match train``: the trainer behind the package's command-line dispatcher."""
from __future__ import annotations

import argparse

from .config import configure, from_args

__all__ = ["configure", "run"]


def run(args: argparse.Namespace) -> int:
    from .trainer import train

    train(from_args(args))
    return 0
