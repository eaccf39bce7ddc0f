"""`clip-match resize SLIM.pt --model demo --out RESIZED.pt`: the same ResNet model at another input
resolution (`clip_match.model.resize`), to go on training at a larger size."""
from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="trained weights (trainer, slim or official checkpoint)")
    parser.add_argument("--model", required=True, help="the target config, a name or a JSON file: the same model "
                                                       "as the checkpoint's but for its image_resolution")
    parser.add_argument("--out", type=Path, required=True, help="slim checkpoint to write")


def run(args: argparse.Namespace) -> int:
    from ..model.config import load_config
    from ..model.resize import resize_checkpoint  # torch

    print(resize_checkpoint(args.checkpoint, load_config(args.model), args.out))
    return 0
