"""Build formula image-text datasets (Chinese-CLIP TSV/JSONL) from LaTeX, offline.

    python -m datasets.formulas.build open OUT_DIR     # open protocol: train half / query half
    python -m datasets.formulas.build bank OUT_DIR     # bank protocol: ~4,000-formula bank
    python -m datasets.formulas.build render FORMULAS.txt OUT_DIR   # your own formula list

Every command writes ``train`` (augmented renders, several per formula) and ``valid`` (one
fresh render of a sample of training formulas) splits; ``open`` and ``bank`` also write the
``test`` split: the real IM2LaTeX query images, each linked to its formula among all the
candidates. With ``--real-train N`` the training split also holds the real images of up to N
IM2LaTeX formulas that are not queries. With ``--candidate-renders N`` they also write the
``candidates`` split: N fresh renders of every candidate formula, never trained on, made as a user
would render their own formula list when indexing it, so that query images can be ranked against
images of each candidate (``eval-retrieval --examples candidates``), not only against its text.
``formulas.json`` records the settings, counts and every formula that failed to render. The
output directory appears only when complete, after the query-leak check passed.

Robustness (``--fonts``, ``--photo-probability``) and its held-out protocols: every training copy
of a formula is typeset in a font drawn from ``--fonts`` (TeX font packages and mathtext font sets),
and a share of them photographed (`augment.photograph`). ``--query-fonts`` adds one query split per
font the model never trained on (``test_font_<font>``: renders of the query formulas in it, scanned or
screenshotted), ``--query-photos`` the ``test_photo`` split (each real query image photographed).
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import sys
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from clip_match.data.formats import write_split
from clip_match.errors import ClipMatchError
from clip_match.formulas.evaluate import (
    RENDER_ID_OFFSET, REPORTED_BANK_SIZE, Formula, Protocol, SplitRecords, bank_protocol, check_no_query_images,
    open_protocol, query_split, real_train_split, unique_formulas,
)
from clip_match.formulas.render import RENDER_DPI, get_renderer, render_all
from clip_match.fsutil import atomic_dir, atomic_file

from .augment import AugmentConfig, augment, photo_jpeg
from .sources import load_crohme, load_im2latex, read_formula_file, shared_data_dir

CANDIDATE_SPLIT = "candidates"
PHOTO_SPLIT = "test_photo"
FONT_SPLIT_PREFIX = "test_font_"
PHOTO_SEED_TAG = 7_001  # photo query split: its own random stream, apart from every training image's


def font_split(font: str) -> str:
    """The query split of renders in ``font`` ("tex:stix2" -> "test_font_tex_stix2")."""
    return FONT_SPLIT_PREFIX + font.replace(":", "_")


class FontRenders:
    """Clean renders of formulas in several fonts: copy k of formula f is typeset in the font drawn
    from (seed, f, k), or in the base font (``fonts[0]``) where that font failed on f."""

    def __init__(self, fonts: Sequence[str], seed: int, base: dict[int, bytes]):
        self.fonts, self.seed, self.pngs = list(fonts), seed, {fonts[0]: base}

    def font_for(self, fid: int, copy: int) -> str:
        return self.fonts[random.Random(f"{self.seed}:{fid}:{copy}").randrange(len(self.fonts))]

    def render(self, formulas: Sequence[Formula], copies: range, dpi: int, batch_size: int, workers: int,
               from_source: bool, progress: bool) -> dict[str, int]:
        """Typeset every (formula, font) that some copy needs; returns each font's failure count."""
        wanted: dict[str, list[Formula]] = {}
        for formula in formulas:
            for font in sorted({self.font_for(formula.fid, copy) for copy in copies} - {self.fonts[0]}):
                if formula.fid not in self.pngs.get(font, {}):
                    wanted.setdefault(font, []).append(formula)
        jobs = [(font, todo, dpi, batch_size, from_source) for font, todo in wanted.items()]
        failures = {}
        with mapper(min(workers, len(jobs))) as imap:
            for font, done, failed in tqdm(imap(_render_font_job, jobs), total=len(jobs), desc="render fonts",
                                           unit="font", disable=not progress, leave=False):
                self.pngs.setdefault(font, {}).update(done)
                failures[font] = failed
        return failures

    def png(self, fid: int, copy: int, base: bytes) -> bytes:
        return self.pngs.get(self.font_for(fid, copy), {}).get(fid, base)


@contextmanager
def mapper(workers: int) -> Iterator[Callable[..., Iterator]]:
    """An ordered ``imap(function, jobs, chunksize=1)``: in this process for one worker, else in fresh
    ("spawn") processes. A forked copy of a process that has run threads (OpenBLAS, onnxruntime) can
    inherit a lock one of them held and hang on its first call into that library."""
    if workers <= 1:
        yield lambda function, jobs, chunksize=1: map(function, jobs)
        return
    with get_context("spawn").Pool(workers) as pool:
        yield pool.imap


def _render_font_job(job: tuple[str, list[Formula], int, int, bool]) -> tuple[str, dict[int, bytes], int]:
    font, formulas, dpi, batch_size, from_source = job
    rendered, failures = render_clean(formulas, font, dpi, batch_size, False, from_source)
    return font, {formula.fid: png for formula, png in rendered}, len(failures)


def render_clean(formulas: Sequence[Formula], renderer_name: str, dpi: int, batch_size: int,
                 progress: bool, from_source: bool = True) -> tuple[list[tuple[Formula, bytes]], list[dict]]:
    """Clean renders as PNG bytes (compact in memory) and the failures ``{fid, latex, error}``.

    ``from_source`` typesets each formula's source LaTeX, and its normalised text where the source
    fails (im2markup's tokens break some, e.g. ``\\hspace { 1 c m }``).
    """
    renderer = get_renderer(renderer_name, dpi)
    results = render_all([f.render_latex if from_source else f.latex for f in formulas], renderer, batch_size,
                         progress)
    retry = [i for i, (f, r) in enumerate(zip(formulas, results))
             if from_source and r.image is None and f.render_latex != f.latex]
    for i, result in zip(retry, render_all([formulas[i].latex for i in retry], renderer, batch_size, False)):
        results[i] = result
    rendered, failures = [], []
    for formula, result in zip(formulas, results):
        if result.image is None:
            failures.append({"fid": formula.fid, "latex": formula.latex, "error": result.error})
        else:
            buffer = io.BytesIO()
            result.image.save(buffer, "PNG", compress_level=1)
            rendered.append((formula, buffer.getvalue()))
    return rendered, failures


def _augment_job(job: tuple[bytes, int, int], config: AugmentConfig, seed: int) -> bytes:
    png, fid, copy = job
    with Image.open(io.BytesIO(png)) as render:
        return augment(render.convert("L"), config, seed, fid, copy)


def write_rendered_split(out_dir: Path, split: str, rendered: Sequence[tuple[Formula, bytes]], copies: range,
                         config: AugmentConfig, seed: int, workers: int, progress: bool,
                         real: SplitRecords = ([], []), fonts: FontRenders | None = None) -> int:
    """Write ``len(copies)`` augmented images of every rendered formula (each copy in its font of
    ``fonts``, if given) as one split, followed by the ``real`` images (`real_train_split`; a
    rendered formula's line links its real images too); returns the image count."""
    jobs = [(fonts.png(formula.fid, copy, png) if fonts else png, formula.fid, copy)
            for formula, png in rendered for copy in copies]
    image_ids = [RENDER_ID_OFFSET + i for i in range(len(jobs))]
    work = partial(_augment_job, config=config, seed=seed)
    real_images, real_texts = real
    real_ids = {fid: ids for fid, _, ids in real_texts}
    texts = [(formula.fid, formula.latex,
              image_ids[i * len(copies):(i + 1) * len(copies)] + real_ids.pop(formula.fid, []))
             for i, (formula, _) in enumerate(rendered)]
    texts += [text for text in real_texts if text[0] in real_ids]
    with mapper(workers) as imap:
        encoded = tqdm(imap(work, jobs, chunksize=16), total=len(jobs), desc=f"augment ({split})",
                       unit="image", disable=not progress, leave=False)
        write_split(out_dir, split, itertools.chain(zip(image_ids, encoded), real_images), texts)
    return len(jobs) + len(real_images)


def build(out_dir: Path, train: Sequence[Formula], args: argparse.Namespace, protocol: Protocol | None = None,
          notes: dict | None = None) -> dict:
    """Render, augment and write the splits (and the query split of ``protocol``) into ``out_dir``."""
    if not train:
        raise ClipMatchError("no training formulas (raise --limit or keep CROHME)")
    config = replace(AugmentConfig(), jpeg_probability=args.jpeg_probability,
                     photo_probability=args.photo_probability)
    progress = not args.no_progress
    from_source = args.render_text == "source"
    train_fonts = args.fonts or [args.renderer]
    with atomic_dir(out_dir, overwrite=args.overwrite) as tmp:
        rendered, failures = render_clean(train, train_fonts[0], args.dpi, args.batch_size, progress,
                                          from_source=from_source)
        if not rendered:
            raise ClipMatchError(f"none of the {len(train)} formulas rendered; first error: {failures[0]['error']}")
        counts = {"formulas": len(train), "rendered": len(rendered), "render_failures": len(failures)}
        fonts = None
        if len(train_fonts) > 1:
            fonts = FontRenders(train_fonts, args.seed, {formula.fid: png for formula, png in rendered})
            counts["font_render_failures"] = fonts.render([f for f, _ in rendered], range(args.renders + 1), args.dpi,
                                                          args.batch_size, args.workers, from_source, progress)
        real = real_train_split(protocol) if protocol is not None else ([], [])
        counts["train_images"] = write_rendered_split(tmp, "train", rendered, range(args.renders), config,
                                                      args.seed, args.workers, progress, real, fonts)
        if protocol is not None:
            counts["real_train_images"] = len(real[0])
        valid = random.Random(args.seed).sample(rendered, min(args.valid_size, len(rendered)))
        valid.sort(key=lambda item: item[0].fid)
        counts["valid_images"] = write_rendered_split(tmp, "valid", valid, range(args.renders, args.renders + 1),
                                                      config, args.seed, args.workers, progress, fonts=fonts)
        manifest = {
            "command": args.command, "seed": args.seed, "renderer": train_fonts[0], "dpi": args.dpi,
            "fonts": train_fonts, "render_text": args.render_text,
            "renders_per_formula": args.renders,
            "candidate_renders_per_formula": getattr(args, "candidate_renders", 0),
            "augment": config.to_json(), "counts": counts,
            "notes": notes or {}, "render_failures": failures,
        }
        if protocol is not None:
            images, texts = query_split(protocol)
            write_split(tmp, "test", images, texts)
            counts.update(query_images=len(images), candidates=len(texts))
            manifest["leak_check"] = check_no_query_images(tmp, protocol)
            if args.candidate_renders:
                candidates, failed = render_clean(protocol.queries, args.renderer, args.dpi, args.batch_size,
                                                  progress, from_source=from_source)
                manifest["candidate_render_failures"] = failed  # (these keep their text vector only)
                first = args.renders + 1  # augmentation copies no training or validation image used
                counts["candidate_images"] = write_rendered_split(
                    tmp, CANDIDATE_SPLIT, candidates, range(first, first + args.candidate_renders), config,
                    args.seed, args.workers, progress)
            for font in args.query_fonts:
                if font in train_fonts:
                    raise ClipMatchError(f"--query-fonts {font}: the model trains in this font (--fonts); a held-out "
                                         "font split needs a font it never saw")
                clean, failed = render_clean(protocol.queries, font, args.dpi, args.batch_size, progress,
                                             from_source=from_source)
                copy = args.renders + 1 + args.candidate_renders  # (a copy number no other split used)
                counts[font_split(font)] = write_rendered_split(  # (rank against all: eval-retrieval --candidates test)
                    tmp, font_split(font), clean, range(copy, copy + 1), replace(config, photo_probability=0.0),
                    args.seed, args.workers, progress)
                manifest.setdefault("query_font_render_failures", {})[font] = len(failed)
            if args.query_photos:
                photos = [(image_id, photo_jpeg(Image.open(io.BytesIO(data)),
                                                np.random.default_rng([args.seed, PHOTO_SEED_TAG, image_id])))
                          for image_id, data in tqdm(images, desc="photograph queries", unit="image",
                                                     disable=not progress, leave=False)]
                write_split(tmp, PHOTO_SPLIT, photos, texts)
                counts[PHOTO_SPLIT] = len(photos)
            manifest["protocol"] = {"name": protocol.name, "seed": protocol.seed, **protocol.notes,
                                    "train_fids": [f.fid for f in protocol.train],
                                    "query_fids": [f.fid for f in protocol.queries],
                                    "real_train_fids": [f.fid for f in protocol.real_train]}
        with atomic_file(tmp / "formulas.json", "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
    return manifest


def _im2latex(args: argparse.Namespace) -> list[Formula]:
    formulas = load_im2latex(args.data_dir)
    return formulas[:args.limit] if args.limit else formulas


def run_open(args: argparse.Namespace) -> dict:
    extra = load_crohme(args.data_dir) if args.crohme else []
    protocol = open_protocol(_im2latex(args), extra, seed=args.seed, real_train=args.real_train)
    return build(args.out_dir, protocol.train, args, protocol)


def run_bank(args: argparse.Namespace) -> dict:
    protocol = bank_protocol(_im2latex(args), bank_size=args.bank_size, seed=args.seed, real_train=args.real_train,
                             outside=REPORTED_BANK_SIZE if args.dev else 0)
    return build(args.out_dir, protocol.train, args, protocol)


def run_render(args: argparse.Namespace) -> dict:
    formulas = unique_formulas(read_formula_file(args.formulas))
    if not formulas:
        raise ClipMatchError(f"{args.formulas}: no formulas (expected one LaTeX formula per line)")
    return build(args.out_dir, formulas, args)


def _font_list(value: str) -> list[str]:
    """--fonts / --query-fonts: comma-separated RENDERER:FONT names, each checked against its renderer."""
    fonts = [font.strip() for font in value.split(",") if font.strip()]
    for font in fonts:
        renderer, _, name = font.partition(":")
        if renderer == "tex":
            from clip_match.formulas.render_tex import TEX_FONTS as known
        elif renderer == "mathtext":
            from clip_match.formulas.render_mathtext import MATHTEXT_FONTS as known
        else:
            raise argparse.ArgumentTypeError(f"{font!r}: the renderer must be tex or mathtext (RENDERER:FONT)")
        if name and name not in known:
            raise argparse.ArgumentTypeError(f"{font!r}: unknown {renderer} font (choose from {', '.join(known)})")
    if not fonts:
        raise argparse.ArgumentTypeError("no fonts given")
    return fonts


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.formulas.build",
        description="Render LaTeX formulas to augmented images in Chinese-CLIP's TSV/JSONL format "
                    "(train/valid splits; the open and bank protocols add the real-image test split).",
        epilog=f"Formula data: ${'{'}CLIP_MATCH_SHARED_DATA{'}'} or {shared_data_dir()} "
               "(im2latex/ and formulas/). TeX: datasets/formulas/install_tex.sh.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {
        "open": (run_open, "open protocol: train on renders of one seeded half of IM2LaTeX val (+ CROHME), "
                           "query with the real images of the other half"),
        "bank": (run_bank, "bank protocol: train on renders of a seeded formula bank, query with its real images"),
        "render": (run_render, "render your own formulas (one per line) into train/valid splits"),
    }
    for name, (function, help_line) in commands.items():
        command = sub.add_parser(name, help=help_line, description=help_line)
        if name == "render":
            command.add_argument("formulas", type=Path, help="UTF-8 text file, one LaTeX formula per line")
        command.add_argument("out_dir", type=Path, help="output directory (created complete, or not at all)")
        if name != "render":
            command.add_argument("--data-dir", type=Path, default=None,
                                 help="folder holding im2latex/ and formulas/ (default: $CLIP_MATCH_SHARED_DATA "
                                      "or ../shared/data)")
            command.add_argument("--limit", type=int, default=0,
                                 help="use only the first N IM2LaTeX formulas (quick trial runs)")
            command.add_argument("--real-train", type=int, default=0, metavar="N",
                                 help="also train on the real images of up to N IM2LaTeX formulas that are not "
                                      "queries (default 0: renders only)")
            command.add_argument("--candidate-renders", type=int, default=0, metavar="N",
                                 help=f"also write the {CANDIDATE_SPLIT!r} split: N renders of every candidate "
                                      "formula, not trained on, for ranking against images of the candidates "
                                      "(eval-retrieval --examples candidates; default 0: none)")
        if name == "open":
            command.add_argument("--no-crohme", dest="crohme", action="store_false",
                                 help="train on the IM2LaTeX half only, without the CROHME captions")
        if name == "bank":
            command.add_argument("--bank-size", type=int, default=REPORTED_BANK_SIZE,
                                 help=f"formulas in the bank (default {REPORTED_BANK_SIZE})")
            command.add_argument("--dev", action="store_true",
                                 help=f"a development bank, drawn from the formulas outside the reported "
                                      f"{REPORTED_BANK_SIZE}-formula bank of the same seed: tune recipes on its real "
                                      "images, never on the reported ones")
        command.add_argument("--seed", type=int, default=0, help="split and augmentation seed (default 0)")
        command.add_argument("--renderer", choices=("tex", "mathtext"), default="tex",
                             help="tex: TeX Live + dvipng (default); mathtext: matplotlib only, fewer formulas")
        command.add_argument("--render-text", choices=("source", "normalised"), default="source",
                             help="typeset each formula as its source wrote it (default: real images were made "
                                  "from it; \\left( and thin spaces show) or its normalised candidate text")
        command.add_argument("--dpi", type=int, default=RENDER_DPI,
                             help=f"clean render resolution (default {RENDER_DPI})")
        command.add_argument("--fonts", type=_font_list, default=[], metavar="FONT,...",
                             help="typeset each training copy in a font drawn from these (RENDERER:FONT, e.g. "
                                  "tex:cm,tex:palatino,mathtext:dejavuserif; a font twice is drawn twice as often; "
                                  "the first also renders formulas the drawn font fails on; default: --renderer)")
        command.add_argument("--photo-probability", type=float, default=0.0, metavar="P",
                             help="share of training images photographed (perspective, uneven light, paper, blur, "
                                  "JPEG; default 0)")
        if name != "render":
            command.add_argument("--query-fonts", type=_font_list, default=[], metavar="FONT,...",
                                 help="held-out protocol: one query split per font, never trained on "
                                      f"({FONT_SPLIT_PREFIX}<font>: the query formulas rendered in it)")
            command.add_argument("--query-photos", action="store_true",
                                 help=f"held-out protocol: the {PHOTO_SPLIT} split, each real query image photographed")
        command.add_argument("--renders", type=int, default=4, help="augmented images per formula in train (default 4)")
        command.add_argument("--valid-size", type=int, default=500,
                             help="training formulas given one fresh render in the valid split (default 500)")
        command.add_argument("--jpeg-probability", type=float, default=AugmentConfig.jpeg_probability,
                             help="share of images saved as JPEG at a random quality (default %(default)s)")
        command.add_argument("--batch-size", type=int, default=200, help="formulas per LaTeX document (default 200)")
        command.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                             help="augmentation processes (default: up to 4)")
        command.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
        command.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
        command.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
        command.set_defaults(run=function)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    for name in ("renders", "batch_size", "workers", "dpi"):
        if getattr(args, name) < 1:
            print(f"build {args.command}: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    for name in ("photo_probability", "jpeg_probability"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"build {args.command}: error: --{name.replace('_', '-')} must be between 0 and 1", file=sys.stderr)
            return 2
    if min(getattr(args, "limit", 0), getattr(args, "real_train", 0), getattr(args, "candidate_renders", 0),
           args.valid_size) < 0:
        print(f"build {args.command}: error: --limit, --real-train, --candidate-renders and --valid-size cannot be "
              "negative",
              file=sys.stderr)
        return 2
    try:
        manifest = args.run(args)
    except ClipMatchError as error:
        print(f"build {args.command}: error: {error}", file=sys.stderr)
        return 2
    summary = {"out_dir": str(args.out_dir), **manifest["counts"]}
    if "leak_check" in manifest:
        summary["leak_check_images"] = sum(manifest["leak_check"].values())
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"build {args.command}: wrote {args.out_dir}: " + ", ".join(f"{k} {v}" for k, v in summary.items()
                                                                       if k != "out_dir"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
