"""`clip-match export CHECKPOINT --arch NAME --out BUNDLE_DIR`."""
from __future__ import annotations

import argparse
import json
import sys

from ..runtime.bundle import TOWER_PRECISIONS
from .options import add_json_option

_LABELS = {"image_min_cosine": "image", "text_min_cosine": "text",
           "image_calibration_min_cosine": "image on calibration folder"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="CN-CLIP checkpoint (official format: {'state_dict': ...})")
    parser.add_argument("--arch", required=True,
                        help="architecture: RN50@RBT3-chinese (or RN50), another cn_clip name, tiny, demo, or a JSON config")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--precision", default="fp32",
                        help=f"comma-separated precisions to export, from {','.join(TOWER_PRECISIONS)} (default fp32)")
    parser.add_argument("--calibration-images", metavar="DIR", default=None,
                        help="image folder to calibrate a static int8 image tower on (a seeded sample of up to "
                             "200 images, plus up to 50 held out for verification); without it int8 "
                             "convolutions stay fp32")
    parser.add_argument("--context-length", type=int, default=None,
                        help="text context length (default: the architecture's, 52 for official models)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="compare each precision with PyTorch fp32 and fail below the cosine thresholds (default on)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    add_json_option(parser, "the bundle manifest on stdout")


def run(args: argparse.Namespace) -> int:
    from ..model.config import load_config
    from ..runtime.bundle import Bundle
    from ..export.exporter import export_bundle, parse_precisions

    config = load_config(args.arch, context_length=args.context_length)
    out = export_bundle(args.checkpoint, config, args.out, precisions=parse_precisions(args.precision),
                        verify=args.verify, overwrite=args.overwrite,
                        calibration_images=args.calibration_images)
    manifest = Bundle.load(out).manifest
    if args.json:
        json.dump(manifest, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(f"wrote {out} ({config.name}, {', '.join(manifest['precisions'])}, fingerprint {manifest['fingerprint']})",
              file=sys.stderr)
        for precision, result in manifest["verification"].items():
            cosines = ", ".join(f"{_LABELS.get(name, name)} {value:.6f}" for name, value in result.items())
            print(f"  {precision} least cosine to PyTorch fp32: {cosines}", file=sys.stderr)
        image = manifest.get("quantization", {}).get("int8", {}).get("image")
        if image and image["method"] == "static":
            print(f"  int8 image tower: static, calibrated on {image['calibration_images']} images "
                  f"({image['held_out_images']} held out, {image['skipped_unreadable']} unreadable skipped)",
                  file=sys.stderr)
    return 0
