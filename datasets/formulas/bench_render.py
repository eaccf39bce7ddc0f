"""Benchmark: batched TeX rendering against one LaTeX run per formula (and mathtext), in one process.

    python -m datasets.formulas.bench_render [--formulas 400] [--single 20]

Renders the first N IM2LaTeX validation formulas ~200 per document, then a subset one per
document (the baseline), and prints ms/formula and the speed-up. Skips (exit 0, with a message)
when the formula data or TeX is absent.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from clip_match.formulas.render import get_renderer, render_all  # noqa: E402
from clip_match.formulas.render_tex import tex_available  # noqa: E402

from .sources import load_im2latex, missing_data_reason  # noqa: E402


def _ms_per_formula(formulas: list[str], renderer, batch_size: int) -> tuple[float, int]:
    start = time.perf_counter()
    results = render_all(formulas, renderer, batch_size=batch_size, progress=False)
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / len(formulas), sum(r.image is None for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.formulas.bench_render", description=__doc__.splitlines()[0])
    parser.add_argument("--formulas", type=int, default=400, help="formulas rendered in batches (default 400)")
    parser.add_argument("--single", type=int, default=20, help="formulas rendered one per document (default 20)")
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args(argv)
    reason = missing_data_reason() or (None if tex_available() else "latex/dvipng not installed")
    if reason:
        print(f"bench_render: skipped: {reason}", file=sys.stderr)
        return 0
    formulas = [f.latex for f in load_im2latex()[:args.formulas]]
    tex, mathtext = get_renderer("tex"), get_renderer("mathtext")
    batched, batched_failed = _ms_per_formula(formulas, tex, args.batch_size)
    single, _ = _ms_per_formula(formulas[:args.single], tex, 1)
    mt, mt_failed = _ms_per_formula(formulas[:args.single * 5], mathtext, args.batch_size)
    print(f"tex batched ({args.batch_size}/document): {batched:.2f} ms/formula over {len(formulas)} "
          f"({batched_failed} failed)")
    print(f"tex one per document (baseline): {single:.2f} ms/formula over {args.single}")
    print(f"mathtext: {mt:.2f} ms/formula over {args.single * 5} ({mt_failed} failed)")
    print(f"speed-up of batching: {single / batched:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
