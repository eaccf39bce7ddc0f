"""`clip-match export CHECKPOINT --arch NAME --out BUNDLE_DIR`."""
from __future__ import annotations

import argparse
import json
import sys

from ..runtime.bundle import PRECISIONS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="CN-CLIP checkpoint (official format: {'state_dict': ...})")
    parser.add_argument("--arch", required=True,
                        help="architecture: RN50@RBT3-chinese (or RN50), another cn_clip name, tiny, demo, or a JSON config")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--precision", default="fp32",
                        help=f"comma-separated precisions to export, from {','.join(PRECISIONS)} (default fp32)")
    parser.add_argument("--context-length", type=int, default=None,
                        help="text context length (default: the architecture's, 52 for official models)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="compare each precision with PyTorch fp32 and fail below the cosine thresholds (default on)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    parser.add_argument("--json", action="store_true", help="print the bundle manifest as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from ..model.config import load_config
    from ..runtime.bundle import Bundle
    from .exporter import export_bundle, parse_precisions

    config = load_config(args.arch, context_length=args.context_length)
    out = export_bundle(args.checkpoint, config, args.out, precisions=parse_precisions(args.precision),
                        verify=args.verify, overwrite=args.overwrite)
    manifest = Bundle.load(out).manifest
    if args.json:
        json.dump(manifest, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(f"wrote {out} ({config.name}, {', '.join(manifest['precisions'])}, fingerprint {manifest['fingerprint']})",
              file=sys.stderr)
        for precision, result in manifest["verification"].items():
            print(f"  {precision}: image cosine {result['image_min_cosine']:.6f}, "
                  f"text cosine {result['text_min_cosine']:.6f}", file=sys.stderr)
    return 0
