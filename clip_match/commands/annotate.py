"""`clip-match annotate`: label images (or tile puzzles) in the browser, then export (or import) a training dataset.

    clip-match annotate IMAGE_DIR --out DATASET_DIR [--port 8765] [--host 127.0.0.1]
    clip-match annotate PUZZLE_DIR --out DATASET_DIR --puzzles [--layout auto|2x3|3x3] [--prompts puzzles.jsonl]
        model assistance: [--bundle B] [--device D] [--precision P] | --no-assist;  [--order path|uncertain]
    clip-match annotate export DATASET_DIR --out DATA_DIR [--split 0.8,0.1,0.1] [--seed N] [--overwrite]
    clip-match annotate import DATA_DIR --out DATASET_DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..annotate.server import ORDERS
from ..data.prepare import split_fractions
from ..errors import ClipMatchError
from .options import add_model_options

ACTIONS = ("export", "import")
SERVE_ONLY = ("puzzles", "layout", "prompts", "bundle", "device", "precision", "no_assist", "order")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("clip-match annotate IMAGE_DIR --out DATASET_DIR [--port N] [--bundle B | --no-assist] "
                    "[--order uncertain]\n"
                    "       clip-match annotate PUZZLE_DIR --out DATASET_DIR --puzzles [--layout 3x3|2x3|auto] "
                    "[--prompts puzzles.jsonl] ...\n"
                    "       clip-match annotate export DATASET_DIR --out DATA_DIR [--split 0.8,0.1,0.1] [--seed N]\n"
                    "       clip-match annotate import DATA_DIR --out DATASET_DIR")
    parser.add_argument("target", metavar="IMAGE_DIR | export | import", help="folder of images to label, or an action")
    parser.add_argument("source", nargs="?", metavar="DIR", help="DATASET_DIR for export, DATA_DIR for import")
    parser.add_argument("--out", required=True, help="DATASET_DIR (annotation state) or, for export, DATA_DIR")
    parser.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--puzzles", action="store_true",
                        help="puzzle mode: each image is a tile puzzle; mark the tiles that match its prompt")
    parser.add_argument("--layout", help="puzzle mode: 2x3, 3x3 or auto (default: found per image)")
    parser.add_argument("--prompts", metavar="JSONL", help="puzzle mode: lines {\"image\": ..., \"prompt\": ...}")
    add_model_options(parser)
    parser.add_argument("--no-assist", action="store_true", help="no model suggestions")
    parser.add_argument("--order", choices=ORDERS,
                        help="path (default) or uncertain: what the model is least sure of first")
    parser.add_argument("--split", type=split_fractions, help="export: train,valid,test fractions (default 0.8,0.1,0.1)")
    parser.add_argument("--seed", type=int, help="export: shuffle seed for the split (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="export: replace existing files")


def run(args: argparse.Namespace) -> int:
    if args.target in ACTIONS and args.source is not None:
        given = [f"--{name.replace('_', '-')}" for name in SERVE_ONLY if getattr(args, name) not in (None, False, "auto")]
        if given:
            raise ClipMatchError(f"{', '.join(given)} belong to labelling, not to `clip-match annotate {args.target}`")
        if args.target == "export":
            return _export(args)
        return _import(args)
    if args.target in ACTIONS and not Path(args.target).is_dir():
        raise ClipMatchError(f"annotate {args.target}: missing {'DATASET_DIR' if args.target == 'export' else 'DATA_DIR'}")
    if args.source is not None:
        raise ClipMatchError(f"unexpected argument {args.source!r} (actions are: {', '.join(ACTIONS)})")
    if args.split is not None or args.seed is not None or args.overwrite:
        raise ClipMatchError("--split, --seed and --overwrite belong to `clip-match annotate export`")
    if not args.puzzles and (args.layout is not None or args.prompts is not None):
        raise ClipMatchError("--layout and --prompts belong to puzzle mode: add --puzzles")
    if args.no_assist and args.bundle is not None:
        raise ClipMatchError("--bundle and --no-assist exclude each other")
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from ..annotate.assist import Assistant
    from ..annotate.exchange import attach_image_dir
    from ..annotate.puzzles import attach_puzzle_dir
    from ..annotate.server import AnnotationServer
    from ..annotate.store import LabelStore

    image_dir, dataset_dir = Path(args.target), Path(args.out)
    if not image_dir.is_dir():
        raise ClipMatchError(f"{image_dir}: not a folder of {'puzzles' if args.puzzles else 'images'}")
    if os.path.realpath(image_dir) == os.path.realpath(dataset_dir):
        raise ClipMatchError(f"--out {dataset_dir}: must not be IMAGE_DIR itself (use e.g. {image_dir}/labels)")
    store = LabelStore(dataset_dir)
    store.use_mode("puzzles" if args.puzzles else "images")
    previous = store.get_meta("image_dir")
    if previous is not None and previous != os.path.realpath(image_dir):
        print(f"note: {dataset_dir} was labelling {previous}; now {image_dir} (labels are kept by relative path)",
              file=sys.stderr)
    if args.puzzles:
        counts = attach_puzzle_dir(store, image_dir, args.layout or "auto", args.prompts)
    else:
        counts = attach_image_dir(store, image_dir)
    if counts["images"] == 0:
        raise ClipMatchError(f"{image_dir}: no {'puzzles' if args.puzzles else 'images'} found "
                             f"({counts['skipped']} other files)")
    if args.no_assist:
        assistant = None
    else:
        assistant = Assistant.start(store, Path(os.path.realpath(image_dir)), args.bundle, args.device, args.precision)
    try:
        server = AnnotationServer(image_dir, store, host=args.host, port=args.port, assistant=assistant,
                                  order=args.order or "path")
    except OSError as error:
        raise ClipMatchError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    server.warm_thumbnails()
    what = "puzzles" if args.puzzles else "images"
    skipped = f", {counts['skipped']} files skipped (listed in the page)" if counts["skipped"] else ""
    print(f"clip-match annotate: {counts['images']} {what}{skipped}; state in {store.path}", file=sys.stderr)
    print(f"clip-match annotate: {server.assistant.status['message']}", file=sys.stderr)
    print(f"clip-match annotate: open {server.url}  (Ctrl+C stops; everything is saved as you go)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("clip-match annotate: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..annotate.exchange import export_dataset

    summary = export_dataset(args.source, args.out, split=args.split or (0.8, 0.1, 0.1), seed=args.seed or 0,
                             overwrite=args.overwrite)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..annotate.exchange import import_dataset

    if args.split is not None or args.seed is not None or args.overwrite:
        raise ClipMatchError("--split, --seed and --overwrite belong to `clip-match annotate export`")
    summary = import_dataset(args.source, args.out)
    print(json.dumps(summary, ensure_ascii=False))
    print(f"next: clip-match annotate {summary['image_dir']} --out {args.out}", file=sys.stderr)
    return 0
