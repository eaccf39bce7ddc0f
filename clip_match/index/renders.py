"""Example images rendered at index time: ``clip-match index build --latex --render N``.

Each new candidate is typeset by each renderer (`clip_match.formulas.render.choose_renderers`: TeX
Live and matplotlib's mathtext, those installed), each render varied into N seeded copies
(`clip_match.formulas.variants`), and those copies are its example images (`examples`), as
``--examples`` with a folder of renders would give. Clean renders are kept in
a cache by content (`clip_match.formulas.render_cache`), so `index add` and rebuilds typeset only
formulas they have not met. A candidate that no renderer can typeset keeps its text vector; the
index directory's ``render_report.json`` counts and lists those, with the settings `index add`
reuses.

Defaults with renders, from the formula measurements (datasets/formulas/RESULTS.md): text weight
0, because a small model finds a formula from its renders far better than from its LaTeX (bank
84.8 % against 57.0 % R@1; open 50.8 % against 7.8 % R@5), and layout weight 0.75, chosen on a
development bank (98.6 % R@1 there; 98.4 % bank and 98.9 % open R@1 blended against 84.8 % and
31.2 % by the model alone; on mathtext-typeset queries 75.1 % against 61.6 % by layout alone).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..errors import ClipMatchError
from ..formulas.render import Renderer
from ..formulas.render_cache import RenderCache, TypesetCounts, typeset
from ..formulas.variants import variants
from ..jsonio import parse_object
from .candidates import Candidate, candidate_key
from .examples import ExampleAverager, Examples, ImageEncoder

REPORT_NAME = "render_report.json"
RENDER_TEXT_WEIGHT = 0.0
RENDER_LAYOUT_WEIGHT = 0.75
CHUNK = 200  # formulas per renderer call: one LaTeX document (~150 ms to start, ~2 ms a formula)


def default_cache_dir(index_dir: str | os.PathLike) -> Path:
    """``IDX.render-cache`` beside the index ``IDX``: outside it, because `index add` and ``--overwrite``
    replace the index directory whole, and a cache is worth most exactly then."""
    index_dir = Path(index_dir)
    return index_dir.parent / f"{index_dir.name}.render-cache"


def check_cache_dir(cache_dir: str | os.PathLike, index_dir: str | os.PathLike) -> Path:
    cache_dir = Path(cache_dir)
    if cache_dir.resolve().is_relative_to(Path(index_dir).resolve()):
        raise ClipMatchError(f"render cache {cache_dir} is inside the index directory {index_dir}, which every "
                             "`index add` replaces: choose a folder outside it (default: beside it)")
    return cache_dir


@dataclass
class RenderRun:
    """What one `render_examples` call did (the report's ``runs`` entries)."""

    action: str
    renderers: list[str]
    renders_per_candidate: int
    candidates: int = 0
    rendered: dict[str, int] = field(default_factory=dict)  # per renderer
    failed: int = 0
    typeset: int = 0
    from_cache: int = 0


def render_examples(encoder: ImageEncoder, candidates: Sequence[Candidate], renders: int,
                    renderers: Sequence[Renderer], cache_dir: str | os.PathLike, action: str,
                    skip_keys: frozenset[str] = frozenset(), layouts: bool = True,
                    progress: bool = True) -> tuple[Examples, RenderRun, list[dict[str, str]]]:
    """Examples of each candidate (under its LaTeX key) that is not in ``skip_keys``: ``renders``
    varied copies of its render by each of ``renderers``. Also what was done, and the candidates
    that no renderer could typeset (``{"id", "text", "error"}``: they get no examples)."""
    todo: dict[str, Candidate] = {}
    for candidate in candidates:
        key = candidate_key(candidate.text, latex=True)
        if key and key not in skip_keys:
            todo.setdefault(key, candidate)
    run = RenderRun(action, [renderer.name for renderer in renderers], renders, candidates=len(todo))
    counts, cache = TypesetCounts(), RenderCache(cache_dir)
    averager = ExampleAverager(encoder, layouts)
    failed: list[dict[str, str]] = []
    items = list(todo.items())
    with tqdm(total=len(items), desc=f"rendering examples ({'/'.join(run.renderers)})", unit="formula",
              disable=None if progress else True) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            texts = [list(dict.fromkeys((candidate.text.strip(), key))) for key, candidate in chunk]
            errors: list[list[str] | None] = [[] for _ in chunk]  # (None once a renderer typeset it)
            for renderer in renderers:
                for i, result in enumerate(typeset(texts, renderer, cache, counts)):
                    if result.image is None:
                        if errors[i] is not None:
                            errors[i].extend(result.errors)
                        continue
                    errors[i] = None
                    run.rendered[renderer.name] = run.rendered.get(renderer.name, 0) + 1
                    for image in variants(result.image, int(result.key[:16], 16), renders):
                        averager.add([chunk[i][0]], image)
            failed += [{"id": candidate.id, "text": candidate.text, "error": "; ".join(error)}
                       for (_, candidate), error in zip(chunk, errors) if error is not None]
            bar.update(len(chunk))
    run.failed, run.typeset, run.from_cache = len(failed), counts.typeset, counts.from_cache
    return averager.examples(), run, failed


def read_report(index_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The index's render report, or None for an index built without ``--render``."""
    path = Path(index_dir) / REPORT_NAME
    if not path.is_file():
        return None
    report = parse_object(path.read_bytes(), str(path))
    if not isinstance(report.get("renders_per_candidate"), int) or not isinstance(report.get("failed"), list):
        raise ClipMatchError(f"{path}: not a render report (rebuild the index with --render)")
    return report


def report_text(previous: dict[str, Any] | None, run: RenderRun, failed: list[dict[str, str]],
                renderer: str, cache_dir: str | os.PathLike) -> str:
    """The render report after ``run``: the settings `index add` reuses (renderer choice, renders
    per candidate, cache), every candidate without renders so far, and each run's counts."""
    earlier = previous or {"failed": [], "runs": []}
    all_failed = earlier["failed"] + failed
    report = {
        "renderer": renderer, "renders_per_candidate": run.renders_per_candidate,
        "cache": str(Path(cache_dir).resolve()),
        "failed_count": len(all_failed), "failed": all_failed,
        "runs": earlier.get("runs", []) + [asdict(run)],
    }
    return json.dumps(report, indent=1, ensure_ascii=False) + "\n"
