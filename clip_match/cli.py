"""`clip-match` entry point.

Each subcommand lives in its own module of `clip_match.commands` (see there), imported only when
that subcommand runs (so `clip-match query` never imports torch).

User errors are raised as `ClipMatchError` and printed as one line, exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from .errors import ClipMatchError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("clip_match.commands.prepare", "images + labels -> {split}_imgs.tsv / {split}_texts.jsonl"),
    "build-lmdb": ("clip_match.commands.build_lmdb", "TSV/JSONL -> verified LMDB (Chinese-CLIP layout)"),
    "inspect": ("clip_match.commands.inspect", "counts, duplicates and samples of a TSV/JSONL or LMDB dataset"),
    "export": ("clip_match.commands.export", "checkpoint -> ONNX model bundle (fp32/fp16/int8), verified"),
    "train": ("clip_match.commands.train", "fine-tune or train a CN-CLIP model on LMDB data"),
    "resize": ("clip_match.commands.resize", "checkpoint -> the same ResNet model at another input resolution"),
    "unexport": ("clip_match.commands.unexport", "model bundle -> slim checkpoint, to train on from it"),
    "index": ("clip_match.commands.index", "build or extend a FAISS index of candidate texts"),
    "query": ("clip_match.commands.query", "rank candidate texts for images, or images for a text"),
    "grid": ("clip_match.commands.grid", "solve a 2x3 / 3x3 tile puzzle for a prompt"),
    "eval-grid": ("clip_match.commands.eval_grid", "accuracy and latency on a puzzles.jsonl"),
    "eval-retrieval": ("clip_match.commands.eval_retrieval", "formula retrieval R@1/5/10 of real query images"),
    "annotate": ("clip_match.commands.annotate", "label image-text pairs in the browser; export them"),
    "serve": ("clip_match.commands.serve", "HTTP service: grid, query and embed, with dynamic batching"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser, configuring only the subcommand named in ``argv`` (fast start-up)."""
    parser = argparse.ArgumentParser(prog="clip-match", description="Image-text matching with Chinese-CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_line) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_line, description=help_line)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ClipMatchError as error:
        print(f"clip-match {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clip-match {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `clip-match query ... | head -1`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
