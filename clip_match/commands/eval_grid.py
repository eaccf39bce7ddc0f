"""`clip-match eval-grid PUZZLES.jsonl [--bundle B]`: puzzle accuracy, tile precision/recall, latency.

Reports k known (top-k) and k unknown (the bundle's calibrated rule, else largest gap), per layout
and, when the puzzles' lines name their art style ("style"), per style.
``--calibrate OUT.json`` instead fits the tile crop and the k-unknown rule on these puzzles
(solving them once per candidate crop) and writes them: use a separately generated validation
set, never the puzzles you report. Written into a bundle directory as ``grid_calibration.json``
(``--calibrate BUNDLE/grid_calibration.json``), it is listed in the bundle's manifest and becomes
the bundle's default.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..grid.evaluate import fit_calibration, report, score_puzzles
from ..grid.select import SelectionRule
from ..grid.solver import GridSolver
from .options import add_json_option, add_model_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("puzzles", metavar="PUZZLES.jsonl", help="puzzle lines; images relative to its folder")
    parser.add_argument("--layout", default="auto", help="force a layout instead of detecting it")
    parser.add_argument("--calibrate", metavar="OUT.json",
                        help="fit the tile crop and k-unknown rule on these puzzles, write them")
    parser.add_argument("--source", metavar="TEXT",
                        help="with --calibrate: what the puzzles are, kept in OUT.json (default: their path)")
    parser.add_argument("--calibration", metavar="JSON",
                        help="tile crop and k-unknown rule to use (default: the bundle's)")
    add_model_options(parser, threads=True)
    add_json_option(parser, "the report")


def run(args: argparse.Namespace) -> int:
    solver = GridSolver(args.bundle, device=args.device, precision=args.precision, threads=args.threads,
                        calibration=args.calibration, bundle_calibration=not args.calibrate)
    if args.calibrate:
        calibration, scored = fit_calibration(solver, args.puzzles, args.layout, source=args.source)
        calibration.save(args.calibrate)
        rule, name = calibration.rule, f"calibrated {calibration.rule.kind} (fitted on these puzzles)"
        print(f"wrote {args.calibrate}: tile crop {calibration.tile_crop:g}, {rule.kind} {rule.value:g}, "
              f"accuracy {calibration.accuracy:.4f}", file=sys.stderr)
    else:
        scored = score_puzzles(solver, args.puzzles, args.layout)
        if solver.calibration is not None:
            rule, name = solver.calibration.rule, f"calibrated {solver.calibration.rule.kind}"
        else:
            rule, name = SelectionRule("gap"), "largest gap (uncalibrated)"
    result = {**report(scored, rule, name), "tile_crop": solver.tile_crop}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"{result['puzzles']} puzzles; k unknown: {result['k_unknown_rule']}; tile crop {solver.tile_crop:g}")
    print_rows("layout", {name: block for name, block in result.items() if isinstance(block, dict) and "k_known" in block})
    if "styles" in result:
        print_rows("style", result["styles"])
    print(f"latency ms: median {result['latency_ms']['median']:.1f}, p95 {result['latency_ms']['p95']:.1f}")
    return 0


def print_rows(title: str, blocks: dict[str, dict]) -> None:
    """A header and two rows (k known, k unknown) per block, the first column as wide as its names."""
    width = max([6, *map(len, blocks)])
    print(f"{title:<{width}} {'n':>5}  {'k':<8} {'accuracy':>8} {'precision':>9} {'recall':>7}")
    for name, block in blocks.items():
        for case in ("k_known", "k_unknown"):
            m = block[case]
            print(f"{name:<{width}} {block['puzzles']:>5}  {case:<8} {m['puzzle_accuracy']:>8.4f} "
                  f"{m['tile_precision']:>9.4f} {m['tile_recall']:>7.4f}")
