"""`clip-match index build|add`: embed candidate texts with a bundle into a FAISS index directory."""
from __future__ import annotations

import argparse

from ..errors import ClipMatchError
from ..formulas.layout_codes import check_layout_weight
from ..fsutil import check_output_dir
from ..index.candidates import candidate_key
from ..index.examples import EXAMPLE_TEXT_WEIGHT, Examples, check_text_weight, read_examples
from ..index.label_index import LabelIndex
from ..runtime.encoder import Encoder
from .options import add_model_options, one_line_warnings


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="embed a candidate file into a new index directory")
    build.add_argument("--candidates", required=True, help="text file (one per line) or .jsonl with id, text")
    build.add_argument("--out", required=True, help="index directory to write")
    build.add_argument("--latex", action="store_true", help="normalise candidates as LaTeX (im2markup tokens)")
    build.add_argument("--factory", help="FAISS factory string (default: chosen by size: Flat, then IVF)")
    build.add_argument("--search-params", default=None, help='FAISS search parameters, e.g. "nprobe=32"')
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    build.add_argument("--text-weight", type=float, default=EXAMPLE_TEXT_WEIGHT,
                       help="with --examples: share of the text in each candidate's vector (0: examples only, "
                            f"1: text only; default {EXAMPLE_TEXT_WEIGHT:g})")
    build.add_argument("--layout-weight", type=float, default=0.0,
                       help="with --examples: share of the layout match (where the ink is; for typeset formulas and "
                            "other drawings on plain paper) in every score (0: model only, the default)")
    add = actions.add_parser("add", help="add new candidates to an existing index directory")
    add.add_argument("--index", required=True, help="index directory to extend (rewritten atomically)")
    add.add_argument("--candidates", required=True, help="text file (one per line) or .jsonl with id, text")
    for sub in (build, add):
        add_model_options(sub)
        sub.add_argument("--batch-size", type=int, default=256, help="texts per text-tower call")
        sub.add_argument("--examples", metavar="DATA_DIR",
                         help="example images of the candidates: a TSV/JSONL dataset whose texts are candidate texts")
        sub.add_argument("--examples-split", default="train", help="split of --examples to read (default: train)")


def run(args: argparse.Namespace) -> int:
    one_line_warnings("index")
    encoder = Encoder.load(args.bundle, args.device, args.precision)
    inputs = [path for path in (args.candidates, args.examples) if path]
    out, overwrite = (args.out, args.overwrite) if args.action == "build" else (args.index, True)
    check_output_dir(out, overwrite, inputs)  # before the embedding, not after it
    if args.action == "build":
        check_text_weight(args.text_weight)
        if check_layout_weight(args.layout_weight) and not args.examples:
            raise ClipMatchError("--layout-weight needs --examples: the layout codes come from the example images")
        examples = _examples(encoder, args, args.latex, layouts=args.layout_weight > 0)
        index = LabelIndex.build(encoder, args.candidates, latex=args.latex, factory=args.factory,
                                 search_parameters=args.search_params, batch_size=args.batch_size,
                                 examples=examples, text_weight=args.text_weight if examples else 1.0,
                                 layout_weight=args.layout_weight)
        index.save(out, overwrite=overwrite, inputs=inputs)
        print(f"{args.out}: {len(index)} candidates, dim {index.dim}, FAISS {index.factory}"
              f"{' (' + index.search_parameters + ')' if index.search_parameters else ''}"
              f"{f', text weight {index.text_weight:g}' if examples else ''}"
              f"{f', layout weight {index.layout_weight:g}' if index.layout_weight else ''}")
    else:
        index = LabelIndex.load(args.index, fingerprint=encoder.fingerprint)
        added = index.add(encoder, args.candidates, batch_size=args.batch_size,
                          examples=_examples(encoder, args, index.latex, layouts=index.layout_weight > 0))
        index.save(out, overwrite=overwrite, inputs=inputs)
        print(f"{args.index}: added {added}, now {len(index)} candidates")
    return 0


def _examples(encoder: Encoder, args: argparse.Namespace, latex: bool, layouts: bool) -> Examples | None:
    """The ``--examples``, keyed like the candidates (None without the option)."""
    if not args.examples:
        return None
    return read_examples(encoder, args.examples, args.examples_split, key=lambda text: candidate_key(text, latex),
                         layouts=layouts)
