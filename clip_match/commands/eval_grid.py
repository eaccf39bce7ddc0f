"""`clip-match eval-grid PUZZLES.jsonl [--bundle B]`: puzzle accuracy, tile precision/recall, latency.

Reports k known (top-k) and k unknown (the bundle's learned selector, else its calibrated rule, else
the largest gap; ``--k-unknown`` picks), per layout and, when the puzzles' lines name their art style
("style"), per style. Fitting, on a separately generated validation set, never on puzzles you report:

- ``--calibrate OUT.json`` fits the tile crop and the k-unknown rule (solving the puzzles once per
  candidate crop);
- ``--fit-selector OUT.json`` fits the learned k-unknown selector (`clip_match.grid.selector`) on the
  puzzles as scored with the tile crop (the one just calibrated, with both).

Written into a bundle directory (``BUNDLE/grid_calibration.json``, ``BUNDLE/grid_selector.json``), each
is listed in the bundle's manifest and becomes the bundle's default.

``--read-prompt`` (screenshots, ``datasets/emoji/generate.py screenshots``) solves each screenshot twice,
with the prompt given and with the prompt read from the image, and reports apart: the grid located,
the prompt read (Chinese, English, icons), the reading time, and accuracy both ways.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import ClipMatchError
from ..grid.evaluate import fit_calibration, read_report, report, score_puzzles, score_read
from ..grid.prompt import compile_pattern
from ..grid.selector import fit_selector
from ..grid.solver import K_UNKNOWN, GridSolver
from .options import add_json_option, add_model_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("puzzles", metavar="PUZZLES.jsonl", help="puzzle lines; images relative to its folder")
    parser.add_argument("--layout", default="auto", help="force a layout instead of detecting it")
    parser.add_argument("--calibrate", metavar="OUT.json",
                        help="fit the tile crop and k-unknown rule on these puzzles, write them")
    parser.add_argument("--fit-selector", metavar="OUT.json",
                        help="fit the learned k-unknown selector on these puzzles, write it")
    parser.add_argument("--source", metavar="TEXT",
                        help="with --calibrate/--fit-selector: what the puzzles are, kept in OUT.json "
                             "(default: their path)")
    parser.add_argument("--calibration", metavar="JSON",
                        help="tile crop and k-unknown rule to use (default: the bundle's)")
    parser.add_argument("--selector", metavar="JSON", help="learned k-unknown selector to use (default: the bundle's)")
    parser.add_argument("--k-unknown", choices=K_UNKNOWN, default="auto",
                        help="k unknown: the learned selector, the calibrated rule, or auto (the selector when there "
                             "is one; the default)")
    parser.add_argument("--read-prompt", action="store_true",
                        help="screenshots: also read each prompt from its image and score the reading and the "
                             "answers with it apart from those with the prompt given")
    parser.add_argument("--prompt-pattern", metavar="REGEX",
                        help="with --read-prompt: a regular expression with one named group, the target")
    add_model_options(parser, threads=True)
    add_json_option(parser, "the report")


def run(args: argparse.Namespace) -> int:
    if args.read_prompt:
        return run_read(args)
    k_unknown = "rule" if args.fit_selector else args.k_unknown  # (an existing selector is being replaced)
    solver = GridSolver(args.bundle, device=args.device, precision=args.precision, threads=args.threads,
                        calibration=args.calibration, selector=args.selector, k_unknown=k_unknown,
                        bundle_calibration=not args.calibrate)
    source = args.source or str(args.puzzles)
    if args.calibrate:
        calibration, scored = fit_calibration(solver, args.puzzles, args.layout, source=source)
        calibration.save(args.calibrate)
        rule, name = calibration.rule, f"calibrated {calibration.rule.kind} (fitted on these puzzles)"
        print(f"wrote {args.calibrate}: tile crop {calibration.tile_crop:g}, {rule.kind} {rule.value:g}, "
              f"accuracy {calibration.accuracy:.4f}", file=sys.stderr)
    else:
        scored = score_puzzles(solver, args.puzzles, args.layout)
        rule, name = solver.k_unknown_rule()
    if args.fit_selector:
        rule = fit_selector(scored.scores, scored.answers, solver.encoder.fingerprint, source)
        rule.save(args.fit_selector)
        name = "learned selector (fitted on these puzzles)"
        print(f"wrote {args.fit_selector}: accuracy {rule.accuracy:.4f} with k unknown", file=sys.stderr)
    result = {**report(scored, rule, name), "tile_crop": solver.tile_crop}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"{result['puzzles']} puzzles; k unknown: {result['k_unknown_rule']}; tile crop {solver.tile_crop:g}")
    print_rows("layout", layout_blocks(result))
    if "styles" in result:
        print_rows("style", result["styles"])
    print(f"latency ms: median {result['latency_ms']['median']:.1f}, p95 {result['latency_ms']['p95']:.1f}")
    return 0


def layout_blocks(result: dict) -> dict[str, dict]:
    """A report's blocks per layout (and "all")."""
    return {name: block for name, block in result.items() if isinstance(block, dict) and "k_known" in block}


def print_rows(title: str, blocks: dict[str, dict]) -> None:
    """A header and two rows (k known, k unknown) per block, the first column as wide as its names."""
    width = max([6, *map(len, blocks)])
    print(f"{title:<{width}} {'n':>5}  {'k':<8} {'accuracy':>8} {'precision':>9} {'recall':>7}")
    for name, block in blocks.items():
        for case in ("k_known", "k_unknown"):
            m = block[case]
            print(f"{name:<{width}} {block['puzzles']:>5}  {case:<8} {m['puzzle_accuracy']:>8.4f} "
                  f"{m['tile_precision']:>9.4f} {m['tile_recall']:>7.4f}")


def run_read(args: argparse.Namespace) -> int:
    """--read-prompt: the screenshots solved with the prompt given and read, and the reading itself."""
    if args.calibrate or args.fit_selector:
        raise ClipMatchError("--read-prompt scores screenshots; fit --calibrate / --fit-selector on puzzles without it")
    if args.prompt_pattern is not None:
        compile_pattern(args.prompt_pattern)
    solver = GridSolver(args.bundle, device=args.device, precision=args.precision, threads=args.threads,
                        calibration=args.calibration, selector=args.selector, k_unknown=args.k_unknown)
    rule, name = solver.k_unknown_rule()
    result = {**read_report(score_read(solver, args.puzzles, args.layout, args.prompt_pattern), rule, name),
              "tile_crop": solver.tile_crop}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    read = ", ".join(f"{kind} {block['right']:.4f} ({block['puzzles']})" for kind, block in result["prompt_read"].items())
    print(f"{result['puzzles']} screenshots; k unknown: {name}; tile crop {solver.tile_crop:g}")
    print(f"grid located (tile boxes within 3 px): {result['grid_located']:.4f}")
    print(f"prompt read right (target text; icon found): {read}; not read: {result['read_errors']}")
    print(f"reading ms: median {result['reading_ms']['median']:.1f}, p95 {result['reading_ms']['p95']:.1f}")
    for prompt in ("given", "read"):
        print_rows(prompt, layout_blocks(result[prompt]))
    return 0
