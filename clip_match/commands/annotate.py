"""`clip-match annotate`: label images in the browser, then export (or import) a training dataset.

    clip-match annotate IMAGE_DIR --out DATASET_DIR [--port 8765] [--host 127.0.0.1]
    clip-match annotate export DATASET_DIR --out DATA_DIR [--split 0.8,0.1,0.1] [--seed N] [--overwrite]
    clip-match annotate import DATA_DIR --out DATASET_DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..data.prepare import split_fractions
from ..errors import ClipMatchError

ACTIONS = ("export", "import")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("clip-match annotate IMAGE_DIR --out DATASET_DIR [--port N]\n"
                    "       clip-match annotate export DATASET_DIR --out DATA_DIR [--split 0.8,0.1,0.1] [--seed N]\n"
                    "       clip-match annotate import DATA_DIR --out DATASET_DIR")
    parser.add_argument("target", metavar="IMAGE_DIR | export | import", help="folder of images to label, or an action")
    parser.add_argument("source", nargs="?", metavar="DIR", help="DATASET_DIR for export, DATA_DIR for import")
    parser.add_argument("--out", required=True, help="DATASET_DIR (annotation state) or, for export, DATA_DIR")
    parser.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--split", type=split_fractions, help="export: train,valid,test fractions (default 0.8,0.1,0.1)")
    parser.add_argument("--seed", type=int, help="export: shuffle seed for the split (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="export: replace existing TSV/JSONL files")


def run(args: argparse.Namespace) -> int:
    if args.target in ACTIONS and args.source is not None:
        if args.target == "export":
            return _export(args)
        return _import(args)
    if args.target in ACTIONS and not Path(args.target).is_dir():
        raise ClipMatchError(f"annotate {args.target}: missing {'DATASET_DIR' if args.target == 'export' else 'DATA_DIR'}")
    if args.source is not None:
        raise ClipMatchError(f"unexpected argument {args.source!r} (actions are: {', '.join(ACTIONS)})")
    if args.split is not None or args.seed is not None or args.overwrite:
        raise ClipMatchError("--split, --seed and --overwrite belong to `clip-match annotate export`")
    return _serve(Path(args.target), Path(args.out), args.host, args.port)


def _serve(image_dir: Path, dataset_dir: Path, host: str, port: int) -> int:
    from ..annotate.exchange import attach_image_dir
    from ..annotate.server import AnnotationServer
    from ..annotate.store import LabelStore

    if not image_dir.is_dir():
        raise ClipMatchError(f"{image_dir}: not a folder of images")
    if os.path.realpath(image_dir) == os.path.realpath(dataset_dir):
        raise ClipMatchError(f"--out {dataset_dir}: must not be IMAGE_DIR itself (use e.g. {image_dir}/labels)")
    store = LabelStore(dataset_dir)
    previous = store.get_meta("image_dir")
    if previous is not None and previous != os.path.realpath(image_dir):
        print(f"note: {dataset_dir} was labelling {previous}; now {image_dir} (labels are kept by relative path)",
              file=sys.stderr)
    counts = attach_image_dir(store, image_dir)
    if counts["images"] == 0:
        raise ClipMatchError(f"{image_dir}: no images found ({counts['skipped']} other files)")
    try:
        server = AnnotationServer(image_dir, store, host=host, port=port)
    except OSError as error:
        raise ClipMatchError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    server.warm_thumbnails()
    skipped = f", {counts['skipped']} files skipped (listed in the page)" if counts["skipped"] else ""
    print(f"clip-match annotate: {counts['images']} images{skipped}; state in {store.path}", file=sys.stderr)
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
