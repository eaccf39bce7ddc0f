"""`clip-match train`: the trainer (`clip_match.train`); its flags, cn_clip's names, live in
`clip_match.train.config` because `python -m clip_match.train` (under torchrun) parses them too."""
from __future__ import annotations

import argparse

from ..train.config import configure, from_args

__all__ = ["configure", "run"]


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    train(from_args(args))
    return 0
