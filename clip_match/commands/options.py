"""Argument groups that several commands share, built from the runtime's own constants."""
from __future__ import annotations

import argparse
import warnings

from ..runtime.bundle import TOWER_PRECISIONS
from ..runtime.encoder import DEVICES


def add_model_options(parser: argparse.ArgumentParser, bundle: bool = True, threads: bool = False) -> None:
    """``--bundle`` (unless the command takes it as an argument), ``--device``, ``--precision`` and
    optionally ``--threads``: which model runs, and where."""
    if bundle:
        parser.add_argument("--bundle", help="model bundle directory, or a packaged model: demo (emoji puzzles) or "
                                             "formula (formula images); default: demo, or for a query the packaged "
                                             "model its index was built with")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", choices=TOWER_PRECISIONS,
                        help="tower precision (default: fp16 on CUDA, else fp32, else what the bundle has)")
    if threads:
        parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: its choice)")


def add_json_option(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def one_line_warnings(command: str) -> None:
    """Show warnings as ``clip-match COMMAND: warning: ...`` on stderr (no source lines)."""
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"clip-match {command}: warning: {message}\n"
