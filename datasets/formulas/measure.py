"""The measurements behind the formula model's input sizes, and the render->real gap of a trained one.

    python -m datasets.formulas.measure inputs            # token lengths; symbol width after the square squash
    python -m datasets.formulas.measure gap BUNDLE DATA   # renders vs real images of the same valid formulas

``inputs`` reads the real IM2LaTeX validation split: how many tokens each distinct formula
needs (the text context), and how many pixels wide a symbol is once the runtime squashes the
real image to r x r (cn_clip's Resize((r, r))), per candidate resolution. ``gap`` scores the
real images of the ``valid`` split's formulas against those same candidates, to put beside the
trainer's validation on renders: equal numbers mean the renders look like the real images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from clip_match.formulas.evaluate import unique_formulas
from clip_match.runtime.tokenizer import normalize_text, tokenize

from .sources import load_im2latex

RESOLUTIONS = (64, 96, 128, 160, 192, 224)
# Tokens that draw nothing by themselves (grouping, scripts, spacing, font switches).
INVISIBLE = {"{", "}", "^", "_", "&", "~", "\\\\", "\\left", "\\right", "\\big", "\\Big", "\\bigl", "\\bigr",
             "\\mathrm", "\\mathbf", "\\mathcal", "\\it", "\\rm", "\\bf", "\\cal", "\\displaystyle",
             "\\scriptstyle", "\\operatorname", "\\hspace", "\\,", "\\;", "\\:", "\\!", "\\quad", "\\qquad"}


def measure_inputs(data_dir: Path | None, every: int = 8) -> None:
    formulas = unique_formulas(load_im2latex(data_dir))
    lengths = (tokenize([normalize_text(f.latex) for f in formulas], 512) != 0).sum(axis=1)
    print(f"{len(formulas)} distinct formulas; tokens incl. [CLS]/[SEP]: "
          + ", ".join(f"p{q} {np.percentile(lengths, q):.0f}" for q in (50, 90, 95, 99, 100)))
    for context in (52, 128, 160, 180):
        print(f"  context {context}: covers {np.mean(lengths <= context):.2%}")
    widths, per_symbol = [], []
    for formula in formulas[::every]:
        ink = np.asarray(Image.open(formula.images[0]).convert("L")) < 128
        columns = np.flatnonzero(ink.any(axis=0))
        if len(columns):
            symbols = sum(token not in INVISIBLE for token in formula.latex.split())
            widths.append(ink.shape[1])
            per_symbol.append((columns[-1] - columns[0] + 1) / max(symbols, 1))
    widths, per_symbol = np.array(widths), np.array(per_symbol)
    print(f"{len(widths)} real images (every {every}th formula): width median {np.median(widths):.0f} px, "
          f"ink per visible symbol median {np.median(per_symbol):.1f} px")
    for resolution in RESOLUTIONS:
        squashed = per_symbol * resolution / widths
        print(f"  r={resolution}: px per symbol median {np.median(squashed):.1f}, p10 {np.percentile(squashed, 10):.1f}; "
              f"images under 3 px/symbol {np.mean(squashed < 3):.0%}")


def measure_gap(bundle: Path, data_dir: Path) -> None:
    from clip_match import Encoder
    from clip_match.data.formats import decode_b64, read_jsonl, read_tsv
    from clip_match.retrieval_metrics import retrieval_metrics

    encoder = Encoder.load(bundle, device="cpu", precision="fp32", threads=1)
    valid = list(read_jsonl(data_dir / "valid_texts.jsonl"))
    real_ids = {text.text: text.image_ids for text in read_jsonl(data_dir / "test_texts.jsonl")}
    real = {line.image_id: line.b64 for line in read_tsv(data_dir / "test_imgs.tsv")}
    images, pairs = [], []
    for row, text in enumerate(valid):
        for image_id in real_ids.get(text.text, ()):
            pairs.append((len(images), row))
            images.append(decode_b64(real[image_id], f"{data_dir / 'test_imgs.tsv'}: image {image_id}"))
    metrics = retrieval_metrics(encoder.encode_images(images), encoder.encode_texts([t.text for t in valid]), pairs)
    print(f"{len(images)} real images of the {len(valid)} valid-split formulas, against those {len(valid)} "
          "candidates: " + "  ".join(f"R@{k} {metrics[f'i2t_r{k}']:.2f}" for k in (1, 5, 10)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.formulas.measure", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inputs = sub.add_parser("inputs", help="token lengths and symbol widths of the real IM2LaTeX formulas")
    inputs.add_argument("--data-dir", type=Path, default=None, help="folder holding im2latex/ (default: shared data)")
    gap = sub.add_parser("gap", help="a bundle on real images of the valid-split formulas (compare: renders)")
    gap.add_argument("bundle", type=Path)
    gap.add_argument("data_dir", type=Path, help="a bank dataset from `python -m datasets.formulas.build bank`")
    args = parser.parse_args(argv)
    if args.command == "inputs":
        measure_inputs(args.data_dir)
    else:
        measure_gap(args.bundle, args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
