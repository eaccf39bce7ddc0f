"""`clip-match export CHECKPOINT --arch NAME --out BUNDLE_DIR`, or with cn_clip's `pytorch_to_onnx.py`
flags: `--model-arch RN50 --pytorch-ckpt-path CKPT --save-onnx-path P --convert-text --convert-vision`.

With ``--save-onnx-path P`` the bundle is written to the directory ``P`` and, beside it, the files
cn_clip's deployment guide reads: ``P.img.fp32.onnx``, ``P.img.fp16.onnx``, ``P.txt.fp32.onnx``,
``P.txt.fp16.onnx`` (for the towers named by ``--convert-vision`` / ``--convert-text``); its
inference snippet runs on them unchanged, on the CPU provider too.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import ClipMatchError
from ..runtime.bundle import TOWER_PRECISIONS
from .options import add_json_option

_LABELS = {"image_min_cosine": "image", "text_min_cosine": "text",
           "image_calibration_min_cosine": "image on calibration folder"}
CN_CLIP_PRECISIONS = "fp32,fp16"  # what cn_clip's pytorch_to_onnx.py writes


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", help="CN-CLIP checkpoint (official format: {'state_dict': ...})")
    parser.add_argument("--pytorch-ckpt-path", metavar="CHECKPOINT", help="cn_clip's name for CHECKPOINT")
    parser.add_argument("--arch", "--model-arch", dest="arch", required=True,
                        help="architecture: RN50@RBT3-chinese (or RN50), another cn_clip name, tiny, demo, or a JSON config")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="bundle directory to write")
    out.add_argument("--save-onnx-path", metavar="P",
                     help="cn_clip's output prefix: the bundle goes to directory P, and P.img|txt.fp32|fp16.onnx beside "
                          "it (replaced when they exist, as cn_clip does)")
    parser.add_argument("--convert-text", action="store_true", help="with --save-onnx-path: write P.txt.*.onnx")
    parser.add_argument("--convert-vision", action="store_true", help="with --save-onnx-path: write P.img.*.onnx")
    parser.add_argument("--download-root", help="ignored: clip_match never downloads weights")
    parser.add_argument("--precision", default=None,
                        help=f"comma-separated precisions to export, from {','.join(TOWER_PRECISIONS)} (default fp32; "
                             f"{CN_CLIP_PRECISIONS} with --save-onnx-path)")
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
    from ..export.exporter import export_bundle, parse_precisions, write_cn_clip_files
    from ..model.config import load_config
    from ..runtime.bundle import Bundle

    checkpoint = _checkpoint(args)
    cn_clip_towers = _cn_clip_towers(args)
    config = load_config(args.arch, context_length=args.context_length)
    precisions = parse_precisions(args.precision or (CN_CLIP_PRECISIONS if args.save_onnx_path else "fp32"))
    out = export_bundle(checkpoint, config, args.out or args.save_onnx_path, precisions=precisions,
                        verify=args.verify, overwrite=args.overwrite or bool(args.save_onnx_path),
                        calibration_images=args.calibration_images)
    manifest = Bundle.load(out).manifest
    written = write_cn_clip_files(out, args.save_onnx_path, cn_clip_towers) if args.save_onnx_path else []
    if args.json:
        json.dump(manifest, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
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
    for path in written:
        print(f">>> {path}", file=sys.stderr)
    return 0


def _checkpoint(args: argparse.Namespace) -> str:
    if args.checkpoint and args.pytorch_ckpt_path:
        raise ClipMatchError("give the checkpoint once: as CHECKPOINT or as --pytorch-ckpt-path, not both")
    checkpoint = args.checkpoint or args.pytorch_ckpt_path
    if not checkpoint:
        raise ClipMatchError("no checkpoint: give CHECKPOINT (or --pytorch-ckpt-path); clip_match never downloads "
                             "pretrained weights, download the official .pt file yourself")
    if args.download_root:
        print("clip-match export: note: --download-root is ignored (clip_match never downloads weights)",
              file=sys.stderr)
    return checkpoint


def _cn_clip_towers(args: argparse.Namespace) -> tuple[str, ...]:
    """The towers cn_clip's flags ask for, as bundle tower names (checked before the long export)."""
    towers = tuple(tower for tower, asked in (("image", args.convert_vision), ("text", args.convert_text)) if asked)
    if args.save_onnx_path and not towers:
        raise ClipMatchError("--save-onnx-path needs --convert-text and/or --convert-vision (cn_clip converts "
                             "nothing without them)")
    if towers and not args.save_onnx_path:
        raise ClipMatchError("--convert-text/--convert-vision go with --save-onnx-path (cn_clip's output prefix); "
                             "with --out the bundle always holds both towers")
    return towers
