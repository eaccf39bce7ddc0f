"""`clip-match index build|add`: embed candidate texts with a bundle into a FAISS index directory.

With ``--latex --render N`` every new candidate is typeset N times at index time and its renders
are its example images (`clip_match.index.renders`).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ClipMatchError
from ..formulas.layout_codes import check_layout_weight
from ..formulas.render import INSTALL_TEX, RENDERER_CHOICES, Renderer, choose_renderers
from ..fsutil import check_output_dir
from ..index.candidates import Candidate, candidate_key, read_candidates
from ..index.examples import EXAMPLE_TEXT_WEIGHT, Examples, check_text_weight, read_examples
from ..index.label_index import LabelIndex
from ..index.renders import (REPORT_NAME, RENDER_LAYOUT_WEIGHT, RENDER_TEXT_WEIGHT, RenderRun, check_cache_dir,
                             default_cache_dir, read_report, render_examples, report_text)
from ..runtime.encoder import Encoder
from .options import add_model_options, one_line_warnings

RENDERER_NAMES = {"tex": "TeX Live (latex + dvipng)", "mathtext": "matplotlib's mathtext (Computer Modern)"}


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="embed a candidate file into a new index directory")
    build.add_argument("--candidates", required=True, help="text file (one per line) or .jsonl with id, text")
    build.add_argument("--out", required=True, help="index directory to write")
    build.add_argument("--latex", action="store_true", help="normalise candidates as LaTeX (im2markup tokens)")
    build.add_argument("--factory", help="FAISS factory string (default: chosen by size: Flat, then IVF)")
    build.add_argument("--search-params", default=None, help='FAISS search parameters, e.g. "nprobe=32"')
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    build.add_argument("--text-weight", type=float, default=None,
                       help="with --examples or --render: share of the text in each candidate's vector (0: examples "
                            f"only, 1: text only; default {RENDER_TEXT_WEIGHT:g} with --render, "
                            f"{EXAMPLE_TEXT_WEIGHT:g} with --examples)")
    build.add_argument("--layout-weight", type=float, default=None,
                       help="with --examples or --render: share of the layout match (where the ink is; for typeset "
                            "formulas and other drawings on plain paper) in every score (0: model only; default "
                            f"{RENDER_LAYOUT_WEIGHT:g} with --render, else 0)")
    add = actions.add_parser("add", help="add new candidates to an existing index directory")
    add.add_argument("--index", required=True, help="index directory to extend (rewritten atomically)")
    add.add_argument("--candidates", required=True, help="text file (one per line) or .jsonl with id, text")
    for sub in (build, add):
        add_model_options(sub)
        sub.add_argument("--batch-size", type=int, default=256, help="texts per text-tower call")
        sub.add_argument("--examples", metavar="DATA_DIR",
                         help="example images of the candidates: a TSV/JSONL dataset whose texts are candidate texts")
        sub.add_argument("--examples-split", default="train", help="split of --examples to read (default: train)")
        as_built = " (default: as the index was built)" if sub is add else ""
        sub.add_argument("--render", type=int, metavar="N",
                         help="LaTeX candidates: typeset each new one and use N varied renders of it as its example "
                              f"images{as_built or ' (5 is a good start)'}")
        sub.add_argument("--renderer", choices=RENDERER_CHOICES,
                         help="with --render: auto (N copies by each installed renderer, TeX Live and mathtext: a query "
                              "typeset by either engine finds its candidate best), "
                              f"tex or mathtext alone{as_built or ' (default: auto)'}")
        sub.add_argument("--render-cache", metavar="DIR",
                         help="with --render: where clean renders are kept by content, so that each formula is "
                              f"typeset once{as_built or ' (default: IDX.render-cache beside the index IDX)'}")


def run(args: argparse.Namespace) -> int:
    one_line_warnings("index")
    encoder = Encoder.load(args.bundle, args.device, args.precision)
    inputs = [path for path in (args.candidates, args.examples) if path]
    out, overwrite = (args.out, args.overwrite) if args.action == "build" else (args.index, True)
    check_output_dir(out, overwrite, inputs)  # before the embedding, not after it
    if args.action == "build":
        _build(encoder, args, inputs)
    else:
        _add(encoder, args, inputs)
    return 0


@dataclass(frozen=True)
class _Rendering:
    """What `_render` did: the examples, the run's counts, the candidates without renders, where the
    renders are cached and the renderer choice (``index add`` reuses the last two)."""

    examples: Examples
    run: RenderRun
    failed: list[dict[str, str]]
    cache: Path
    renderer: str


def _build(encoder: Encoder, args: argparse.Namespace, inputs: list[str]) -> None:
    renders = _check_render(encoder, args, args.render or 0, args.latex)
    text_weight = check_text_weight(args.text_weight if args.text_weight is not None
                                    else RENDER_TEXT_WEIGHT if renders else EXAMPLE_TEXT_WEIGHT)
    layout_weight = check_layout_weight(args.layout_weight if args.layout_weight is not None
                                        else RENDER_LAYOUT_WEIGHT if renders else 0.0)
    if layout_weight and not (args.examples or renders):
        raise ClipMatchError("--layout-weight needs --examples or --render: the layout codes come from example images")
    candidates = read_candidates(args.candidates)
    rendering = _render(encoder, args, renders, candidates, layout_weight > 0, args.out, {}, frozenset())
    examples = rendering.examples if rendering else _examples(encoder, args, args.latex, layouts=layout_weight > 0)
    index = LabelIndex.build(encoder, candidates, latex=args.latex, factory=args.factory,
                             search_parameters=args.search_params, batch_size=args.batch_size,
                             examples=examples, text_weight=text_weight if examples else 1.0,
                             layout_weight=layout_weight)
    index.save(args.out, overwrite=args.overwrite, inputs=inputs, extra_files=_report_files(None, rendering))
    print(f"{args.out}: {len(index)} candidates, dim {index.dim}, FAISS {index.factory}"
          f"{' (' + index.search_parameters + ')' if index.search_parameters else ''}"
          f"{f', text weight {index.text_weight:g}' if examples else ''}"
          f"{f', layout weight {index.layout_weight:g}' if index.layout_weight else ''}")
    _print_renders(args.out, rendering)


def _add(encoder: Encoder, args: argparse.Namespace, inputs: list[str]) -> None:
    index = LabelIndex.load(args.index, fingerprint=encoder.fingerprint)
    previous = read_report(args.index)
    renders = args.render
    if renders is None:  # an index built with renders renders its new candidates too, unless given examples
        renders = previous["renders_per_candidate"] if previous and not args.examples else 0
    renders = _check_render(encoder, args, renders, index.latex)
    candidates = read_candidates(args.candidates)
    rendering = _render(encoder, args, renders, candidates, index.layout_weight > 0, args.index, previous or {},
                        index.keys)
    examples = rendering.examples if rendering else _examples(encoder, args, index.latex,
                                                              layouts=index.layout_weight > 0)
    added = index.add(encoder, candidates, batch_size=args.batch_size, examples=examples)
    index.save(args.index, overwrite=True, inputs=inputs, extra_files=_report_files(previous, rendering))
    print(f"{args.index}: added {added}, now {len(index)} candidates")
    _print_renders(args.index, rendering)


def _check_render(encoder: Encoder, args: argparse.Namespace, renders: int, latex: bool) -> int:
    """``renders`` (0: none), after refusing options that do not go together."""
    if renders < 0:
        raise ClipMatchError(f"--render must be 0 (no renders) or more, got {renders}")
    if not renders:
        if args.renderer or args.render_cache:
            raise ClipMatchError("--renderer and --render-cache go with --render N")
        return 0
    if not latex:
        raise ClipMatchError("--render typesets LaTeX: it needs a --latex index")
    if args.examples:
        raise ClipMatchError("give --render or --examples, not both")
    if encoder.framing is None:
        warnings.warn(f"{encoder.bundle.path}: this bundle has no formula preprocessing (no trim_margin in its "
                      "manifest), so it was not trained on formulas and its share of each score adds little; the "
                      "renders' layout match carries the ranking. A formula bundle does better with --latex --render")
    return renders


def _render(encoder: Encoder, args: argparse.Namespace, renders: int, candidates: list[Candidate], layouts: bool,
            index_dir: str, previous: dict[str, Any], skip: frozenset[str]) -> _Rendering | None:
    """``renders`` copies of each candidate not in ``skip`` (None when 0), with the options or else the
    ``previous`` report's settings."""
    if not renders:
        return None
    recorded = Path(previous["cache"]) if previous.get("cache") else None
    cache = check_cache_dir(args.render_cache or (recorded if recorded and recorded.is_dir()
                                                  else default_cache_dir(index_dir)), index_dir)
    choice = args.renderer or previous.get("renderer", "auto")
    renderers = choose_renderers(choice)
    _say_which(renderers, choice, renders, cache)
    earlier = (previous.get("runs") or [{}])[-1].get("renderers", [])
    now = [renderer.name for renderer in renderers]
    if earlier and earlier != now:
        warnings.warn(f"this index's renders were typeset by {' and '.join(earlier)}, the new ones by "
                      f"{' and '.join(now)}: their layout codes agree less well (rebuild the index to match them)")
    examples, run, failed = render_examples(encoder, candidates, renders, renderers, cache, args.action,
                                            skip_keys=skip, layouts=layouts)
    if failed and not run.rendered and args.action == "build":
        raise ClipMatchError(f"none of the {run.candidates} candidates could be typeset; the first: "
                             f"{failed[0]['text']!r}: {failed[0]['error']}")
    return _Rendering(examples, run, failed, cache, choice)


def _say_which(renderers: list[Renderer], choice: str, renders: int, cache: Path) -> None:
    how = " and ".join(RENDERER_NAMES[renderer.name] for renderer in renderers)
    hint = (f" (TeX Live not found: `{INSTALL_TEX}` typesets as most formula images are)"
            if choice == "auto" and renderers[0].name != "tex" else "")
    print(f"clip-match index: rendering {renders} copies of each new candidate with {how}{hint}; cache {cache}",
          file=sys.stderr, flush=True)


def _report_files(previous: dict[str, Any] | None, rendering: _Rendering | None) -> dict[str, str] | None:
    """The index directory's render report: updated by ``rendering``, else carried over (the
    directory is rewritten whole)."""
    if rendering:
        return {REPORT_NAME: report_text(previous, rendering.run, rendering.failed, rendering.renderer,
                                         rendering.cache)}
    return {REPORT_NAME: json.dumps(previous, indent=1, ensure_ascii=False) + "\n"} if previous else None


def _print_renders(index_dir: str, rendering: _Rendering | None) -> None:
    if not rendering:
        return
    run = rendering.run
    by = ", ".join(f"{name} {count}" for name, count in run.rendered.items())
    line = (f"{index_dir}: rendered {run.candidates - run.failed} of {run.candidates} new candidates "
            f"({by or 'none'}), {run.renders_per_candidate} copies by each renderer; typeset now {run.typeset}, "
            f"from the cache {run.from_cache}")
    if rendering.failed:
        line += (f"; {len(rendering.failed)} could not be typeset and keep their text only: listed in "
                 f"{Path(index_dir) / REPORT_NAME}")
    print(line)


def _examples(encoder: Encoder, args: argparse.Namespace, latex: bool, layouts: bool) -> Examples | None:
    """The ``--examples``, keyed like the candidates (None without the option)."""
    if not args.examples:
        return None
    return read_examples(encoder, args.examples, args.examples_split, key=lambda text: candidate_key(text, latex),
                         layouts=layouts)
