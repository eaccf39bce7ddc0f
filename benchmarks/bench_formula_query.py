"""One formula image against 1,000 LaTeX candidates: latency of the whole query, in one run.

Builds a real candidate index as a user would (`clip-match index build --latex --render`, text
weight 0, layout weight 0.75) over ``--candidates`` distinct formulas made from a small seeded
grammar (sums, fractions, scripts, roots, Greek letters), then times `Matcher.rank` on single
images: decode, the model's preprocessing (light evened out, trim, fold), the image tower, the
layout code (light, deskew, trim) and the FAISS search. The baseline, run in the same process on
the same images, is the image tower's part alone (`Encoder.encode_images`), so the ratio says what
matching costs beyond the model. Queries are renders of candidates in another font
(TeX's Palatino when TeX is installed, else mathtext's DejaVu Serif), photographed.

    .venv/bin/python -m benchmarks.bench_formula_query [--bundle formula] [--candidates 1000] [--queries 60]
"""
from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from clip_match import cli  # noqa: E402
from clip_match.formulas.render import get_renderer  # noqa: E402
from clip_match.formulas.render_tex import tex_available  # noqa: E402
from clip_match.query import Matcher  # noqa: E402
from datasets.formulas.augment import photograph  # noqa: E402

GOAL_MS = 50.0


def formulas(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct formulas in IM2LaTeX's spaced-token style."""
    rng = random.Random(seed)
    letters = list("abcdefxyzijkn") + [r"\alpha", r"\beta", r"\gamma", r"\lambda", r"\omega", r"\phi"]

    def term(depth: int = 0) -> str:
        atom = rng.choice(letters)
        roll = rng.random()
        if depth < 2 and roll < 0.2:
            return rf"\frac {{ {term(depth + 1)} }} {{ {term(depth + 1)} }}"
        if depth < 2 and roll < 0.3:
            return rf"\sqrt {{ {term(depth + 1)} }}"
        if roll < 0.55:
            return f"{atom} ^ {{ {rng.randint(2, 9)} }}"
        if roll < 0.75:
            return f"{atom} _ {{ {rng.choice(letters)} }}"
        return atom

    seen: dict[str, None] = {}
    while len(seen) < count:
        parts = [term() for _ in range(rng.randint(2, 5))]
        formula = f" {rng.choice(['+', '-', '='])} ".join(parts)
        if rng.random() < 0.3:
            formula = rf"\sum _ {{ i = 1 }} ^ {{ n }} {formula}"
        seen.setdefault(formula, None)
    return list(seen)


def query_images(texts: list[str], seed: int) -> list[tuple[str, Image.Image]]:
    """``(text, image)``: each text typeset in another font than the candidates' renders, photographed."""
    renderer = get_renderer("tex:palatino" if tex_available() else "mathtext:dejavuserif")
    images = []
    for number, (text, rendered) in enumerate(zip(texts, renderer(texts))):
        if rendered.image is None:
            continue
        small = rendered.image.resize((max(1, rendered.image.width * 2 // 5), max(1, rendered.image.height * 2 // 5)),
                                      Image.LANCZOS)
        buffer = io.BytesIO()
        photograph(small, np.random.default_rng([seed, number])).save(buffer, "JPEG", quality=80)
        images.append((text, Image.open(io.BytesIO(buffer.getvalue()))))
    return images


def median_ms(work, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        work(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="formula", help="bundle directory or packaged name (default formula)")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()

    texts = formulas(args.candidates)
    with tempfile.TemporaryDirectory(prefix="bench_formula_query_") as tmp:
        candidates = Path(tmp) / "formulas.txt"
        candidates.write_text("\n".join(texts) + "\n", encoding="utf-8")
        start = time.perf_counter()
        code = cli.main(["index", "build", "--bundle", args.bundle, "--latex", "--candidates", str(candidates),
                         "--render", "5", "--out", str(Path(tmp) / "idx")])
        if code:
            raise SystemExit(f"index build failed ({code})")
        build_s = time.perf_counter() - start
        matcher = Matcher(args.bundle, Path(tmp) / "idx", device="cpu")
        picked = random.Random(1).sample(range(len(texts)), min(args.queries, len(texts)))
        truth, images = zip(*query_images([texts[i] for i in picked], seed=2))
        matcher.rank(images[0], top_k=5)  # warm-up: sessions, thread pools
        full = median_ms(lambda image: matcher.rank(image, top_k=5), images)
        tower = median_ms(lambda image: matcher.encoder.encode_images([image]), images)
        hits = [ranking.hits[0].text for ranking in matcher.rank(list(images), top_k=1)]
    print(f"index: {len(texts)} candidates, --render 5, built in {build_s:.1f} s (text weight 0, layout weight 0.75)")
    print(f"queries: {len(images)} photographed renders in another font; top-1 correct "
          f"{sum(h == t for h, t in zip(hits, truth))}/{len(images)}")
    print(f"median per query: whole query {full:.1f} ms, image tower alone {tower:.1f} ms "
          f"(ratio {full / tower:.2f}x); goal < {GOAL_MS:.0f} ms: {'met' if full < GOAL_MS else 'missed'}")


if __name__ == "__main__":
    main()
