"""Formula renderers: what each returns, how a long list is rendered in batches, and which to use.

Two renderers typeset LaTeX offline: TeX Live + dvipng (`render_tex`, what the IM2LaTeX images
were made with) and matplotlib's mathtext (`render_mathtext`, no TeX needed, fewer formulas and
another font). `clip-match index build --render` and ``datasets/formulas`` both use them from here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from PIL import Image
from tqdm import tqdm

from ..errors import ClipMatchError

RENDER_DPI = 240  # clean renders; scale 0.28-0.55 of this is the size of real IM2LaTeX formulas
RENDERER_CHOICES = ("auto", "tex", "mathtext")
# How to get each renderer (install_tex.sh: Debian's texlive-latex-base, texlive-latex-recommended,
# texlive-fonts-recommended and dvipng).
INSTALL_TEX = "bash datasets/formulas/install_tex.sh"
INSTALL_MATHTEXT = "pip install matplotlib"


@dataclass(frozen=True)
class Rendered:
    """One formula's clean render (grayscale "L", black ink on white, tightly cropped) or why it failed."""

    image: Image.Image | None
    error: str | None = None


class Renderer(Protocol):
    """Formulas -> one `Rendered` per formula; ``settings`` is everything its output depends on
    besides the formula (a render cache keys on it)."""

    name: str
    settings: dict[str, Any]

    def __call__(self, formulas: Sequence[str]) -> list[Rendered]: ...


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
    with tqdm(total=len(formulas), desc=f"render ({renderer.name})", unit="formula",
              disable=not progress, leave=False) as bar:
        for start in range(0, len(formulas), batch_size):
            batch = formulas[start:start + batch_size]
            results.extend(renderer(batch))
            bar.update(len(batch))
    return results


def get_renderer(name: str, dpi: int = RENDER_DPI) -> Renderer:
    """The renderer called ``name``: "tex" (TeX Live + dvipng) or "mathtext" (matplotlib only), in its
    default font, or "RENDERER:FONT" (`render_tex.TEX_FONTS`, `render_mathtext.MATHTEXT_FONTS`);
    an error saying how to install it when it is missing."""
    renderer, _, font = name.partition(":")
    fonts = {"font": font} if font else {}
    if renderer == "tex":
        from .render_tex import TexRenderer
        return TexRenderer(dpi=dpi, **fonts)
    if renderer == "mathtext":
        from .render_mathtext import MathtextRenderer
        return MathtextRenderer(dpi=dpi, **fonts)
    raise ClipMatchError(f"unknown renderer {name!r} (choose tex or mathtext, optionally as RENDERER:FONT)")


def choose_renderers(choice: str, dpi: int = RENDER_DPI) -> list[Renderer]:
    """The renderers that each typeset every candidate of an index: ``choice`` alone, or for "auto"
    every one installed, TeX Live then mathtext. Each draws a formula its own way (TeX's spacing
    against mathtext's), and a query typeset by either engine, in any font, finds its candidate
    best when the candidate's examples hold both (datasets/formulas/RESULTS.md); mathtext also
    draws some of what TeX refuses. mathtext draws in Computer Modern, TeX's font and that of most
    formula images."""
    if choice != "auto":
        return [_index_renderer(choice, dpi)]
    from .render_mathtext import mathtext_available
    from .render_tex import tex_available

    names = [name for name, available in (("tex", tex_available()), ("mathtext", mathtext_available())) if available]
    if not names:
        raise ClipMatchError(f"no formula renderer installed: install TeX Live ({INSTALL_TEX}; latex and dvipng) "
                             f"or, for matplotlib's mathtext, matplotlib ({INSTALL_MATHTEXT})")
    return [_index_renderer(name, dpi) for name in names]


def _index_renderer(name: str, dpi: int) -> Renderer:
    return get_renderer("mathtext:cm" if name == "mathtext" else name, dpi)
