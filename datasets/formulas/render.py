"""What every formula renderer returns, and how a long list of formulas is rendered in batches."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from PIL import Image
from tqdm import tqdm

from clip_match.errors import ClipMatchError


@dataclass(frozen=True)
class Rendered:
    """One formula's clean render (grayscale "L", black ink on white, tightly cropped) or why it failed."""

    image: Image.Image | None
    error: str | None = None


Renderer = Callable[[Sequence[str]], "list[Rendered]"]

# Commands that read or write files or redefine TeX itself have no place in a formula.
_UNSAFE = re.compile(r"\\(input|include|openin|openout|read|write|immediate|special|csname|catcode|def|gdef|edef|"
                     r"xdef|let|newcommand|renewcommand|usepackage|documentclass|end\s*\{\s*document)(?![A-Za-z])")


def unsafe_reason(formula: str) -> str | None:
    """Why ``formula`` must not be given to TeX, or None when it may."""
    match = _UNSAFE.search(formula)
    return f"refused command \\{match.group(1)}" if match else None


def render_all(formulas: Sequence[str], renderer: Renderer, batch_size: int = 200,
               progress: bool = True) -> list[Rendered]:
    """Render ``formulas`` ``batch_size`` at a time (one LaTeX document per batch), with a progress bar."""
    results: list[Rendered] = []
    with tqdm(total=len(formulas), desc=f"render ({getattr(renderer, 'name', 'renderer')})", unit="formula",
              disable=not progress, leave=False) as bar:
        for start in range(0, len(formulas), batch_size):
            batch = formulas[start:start + batch_size]
            results.extend(renderer(batch))
            bar.update(len(batch))
    return results


def get_renderer(name: str, dpi: int = 240) -> Renderer:
    """The renderer called ``name``: "tex" (TeX Live + dvipng) or "mathtext" (matplotlib only)."""
    if name == "tex":
        from .render_tex import TexRenderer
        return TexRenderer(dpi=dpi)
    if name == "mathtext":
        from .render_mathtext import MathtextRenderer
        return MathtextRenderer(dpi=dpi)
    raise ClipMatchError(f"unknown renderer {name!r} (choose tex or mathtext)")
