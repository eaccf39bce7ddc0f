"""Render formulas with matplotlib's mathtext: no TeX needed, slower and less complete.

mathtext silently draws ``x ^ { i }`` (a space after ^ or _) as plain ``x i`` on the baseline,
so space-tokenised formulas (IM2LaTeX, CROHME) are compacted first. It cannot draw
environments (arrays, matrices, ~7% of IM2LaTeX): those come back as failures.
"""
from __future__ import annotations

import importlib.util
import io
import re
from typing import Sequence

from PIL import Image, ImageChops

from ..errors import ClipMatchError
from .render import INSTALL_MATHTEXT, RENDER_DPI, Rendered

_CONTROL_WORD_END = re.compile(r"\\[A-Za-z]+$")
_TEXT_MODE = frozenset({"\\mbox", "\\hbox", "\\text", "\\textrm", "\\textit", "\\textbf", "\\textnormal"})
# TeX commands mathtext lacks, mapped to the nearest it has ("" drops a size or style switch).
_SUBSTITUTES = {
    **{f"\\{size}{side}": "" for size in ("big", "Big", "bigg", "Bigg") for side in ("", "l", "r", "m")},
    "\\le": "\\leq", "\\ge": "\\geq",
    "\\displaystyle": "", "\\textstyle": "", "\\scriptstyle": "", "\\boldmath": "",
}


def to_mathtext(formula: str) -> str:
    """Rewrite a space-tokenised formula for mathtext: drop the spaces math mode ignores anyway.

    A space stays where TeX needs it: after a control word followed by a letter (``\\alpha x``),
    as a control space (``\\ ``), and inside text-mode groups (``\\mbox { a b }``). Commands
    mathtext lacks are swapped for their nearest equivalent or dropped (``\\Big``).
    """
    out: list[str] = []
    depth = 0
    text_group_depth: int | None = None  # brace depth of the text-mode group we are in
    text_group_next = False
    for token in formula.split():
        token = _SUBSTITUTES.get(token, token)
        if not token:
            continue
        if out:
            prev = out[-1]
            if text_group_depth is not None or prev == "\\" or (_CONTROL_WORD_END.search(prev) and token[0].isalpha()):
                out.append(" ")
        out.append(token)
        if token in _TEXT_MODE:
            text_group_next = True
        escaped = False
        for char in token:
            if char == "{" and not escaped:
                depth += 1
                if text_group_next and text_group_depth is None:
                    text_group_depth, text_group_next = depth, False
            elif char == "}" and not escaped:
                if text_group_depth == depth:
                    text_group_depth = None
                depth -= 1
            escaped = char == "\\" and not escaped
    return "".join(out)


# matplotlib's math font sets; "dejavusans" is its default.
MATHTEXT_FONTS = ("dejavusans", "dejavuserif", "cm", "stix", "stixsans")


def mathtext_available() -> bool:
    """True when matplotlib is installed (without importing it: that takes a second)."""
    return importlib.util.find_spec("matplotlib") is not None


class MathtextRenderer:
    """Callable: formulas -> one `Rendered` per formula (grayscale, black on white, tight crop).

    matplotlib is imported here, not with the module: the runtime needs it only for this fallback."""

    name = "mathtext"

    def __init__(self, dpi: int = RENDER_DPI, font: str = "dejavusans"):
        if font not in MATHTEXT_FONTS:
            raise ClipMatchError(f"unknown mathtext font {font!r} (choose from {', '.join(MATHTEXT_FONTS)})")
        try:
            import matplotlib
        except ImportError:
            raise ClipMatchError(f"matplotlib is not installed: {INSTALL_MATHTEXT} (for mathtext), "
                                 "or use --renderer tex") from None

        matplotlib.use("Agg")
        from matplotlib import mathtext

        self._math_to_image = mathtext.math_to_image
        self._rc_context = matplotlib.rc_context
        self.font = font
        # mathtext draws 10 pt text by default where LaTeX draws 12 pt: scale dpi to match glyph size.
        self.dpi = dpi * 12 / 10
        self.settings = {"renderer": self.name, "dpi": dpi, "matplotlib": matplotlib.__version__}
        if font != "dejavusans":  # (matplotlib's default: render caches were keyed without it)
            self.settings["font"] = font

    def __call__(self, formulas: Sequence[str]) -> list[Rendered]:
        return [self._render(formula) for formula in formulas]

    def _render(self, formula: str) -> Rendered:
        buffer = io.BytesIO()
        try:
            with self._rc_context({"mathtext.fontset": self.font}):
                self._math_to_image(f"${to_mathtext(formula)}$", buffer, dpi=self.dpi, format="png")
        except Exception as error:  # mathtext's parser raises several types for what it cannot draw
            message = str(error).strip().splitlines()
            return Rendered(None, "mathtext: " + (message[-1] if message else type(error).__name__))
        with Image.open(buffer) as image:
            image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, "white")
        gray = Image.alpha_composite(white, image).convert("L")
        box = ImageChops.invert(gray).getbbox()
        if box is None:
            return Rendered(None, "mathtext: empty render")
        return Rendered(gray.crop(box))
