"""`clip-match unexport BUNDLE --calibration-images DIR --out SLIM.pt`: a bundle's model back as a slim
checkpoint (`clip_match.model.unexport`), to go on training from a model only its bundle still holds."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="a bundle written by `clip-match export` (ResNet image tower)")
    parser.add_argument("--calibration-images", metavar="DIR", required=True,
                        help="images like the training data (searched recursively): the batch norms' statistics, "
                             "which the export folded away, are measured on them")
    parser.add_argument("--out", type=Path, required=True, help="slim checkpoint to write")


def run(args: argparse.Namespace) -> int:
    from ..model.unexport import unexport  # torch

    print(json.dumps(unexport(args.bundle, args.calibration_images, args.out), indent=2, ensure_ascii=False))
    return 0
