"""Fine-tuning CN-CLIP: ``main(argv)`` runs the trainer as ``python -m clip_match.train``.

Training side: needs torch; the runtime never imports this package.
"""
from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Train with command-line flags (cn_clip's names); returns the exit status."""
    from .trainer import main as run_main

    return run_main(argv)
