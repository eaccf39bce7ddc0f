"""Render LaTeX formulas with TeX Live + dvipng, many formulas per document.

Starting `latex` costs ~150 ms, so formulas are typeset ~200 to a document, one per page, and
dvipng crops every page tightly in one call (~1.7 ms per formula). LaTeX runs with
``-halt-on-error``: when formula k breaks, pages 0..k-1 are already in the DVI, formula k is
recorded as failed (with LaTeX's error line) and the batch resumes at k+1, so one bad formula
never costs the others.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..errors import ClipMatchError
from .render import INSTALL_TEX, RENDER_DPI, Rendered, unsafe_reason

# Same document class and math environment as im2markup, which made the IM2LaTeX images; %s takes a
# font's packages.
PREAMBLE = r"""\documentclass[12pt]{article}
\usepackage{amsmath,amssymb,amsfonts}%s
\pagestyle{empty}
\setlength{\textwidth}{100cm}
\setlength{\textheight}{100cm}
\setlength{\parindent}{0pt}
\begin{document}
"""
# \null puts something on every page so that an empty formula still ships exactly one page.
PAGE = "\\null\n\\begin{displaymath}\n%s\n\\end{displaymath}\n\\newpage\n"
TIMEOUT_S = 120
# Math fonts by name -> the packages that switch to them. "cm" (Computer Modern) is TeX's own and the
# IM2LaTeX images'; the others are what formulas in papers, textbooks and Word-to-PDF documents use.
# Only "cm", "palatino", "times", "txfonts", "pxfonts" and "euler" come with install_tex.sh; the rest
# need the Debian packages `install_tex.sh --fonts` adds (texlive-fonts-extra, texlive-latex-extra, lmodern, ...).
TEX_FONTS = {
    "cm": "",
    "lmodern": r"\usepackage{lmodern}",
    "palatino": r"\usepackage{mathpazo}",
    "times": r"\usepackage{mathptmx}",
    "txfonts": r"\usepackage{txfonts}",
    "pxfonts": r"\usepackage{pxfonts}",
    "euler": r"\usepackage{euler}",
    "newtx": r"\usepackage{newtxtext,newtxmath}",
    "newpx": r"\usepackage{newpxtext,newpxmath}",
    "stix2": r"\usepackage{stix2}",
    "libertinus": r"\usepackage{libertinus}",
    "fourier": r"\usepackage{fourier}",
    "kpfonts": r"\usepackage{kpfonts}",
    "cmbright": r"\usepackage{cmbright}",
    "arev": r"\usepackage{arev}",
}


def tex_available() -> bool:
    """True when `latex` and `dvipng` are on PATH (`INSTALL_TEX` installs them)."""
    return shutil.which("latex") is not None and shutil.which("dvipng") is not None


class TexRenderer:
    """Callable: formulas -> one `Rendered` per formula (grayscale, black on white, tight crop)."""

    name = "tex"

    def __init__(self, dpi: int = RENDER_DPI, font: str = "cm"):
        if font not in TEX_FONTS:
            raise ClipMatchError(f"unknown TeX font {font!r} (choose from {', '.join(TEX_FONTS)})")
        if not tex_available():
            raise ClipMatchError(f"latex/dvipng not found: install TeX Live ({INSTALL_TEX}), "
                                 "or use --renderer mathtext")
        self.dpi = dpi
        self.preamble = PREAMBLE % ("\n" + TEX_FONTS[font] if TEX_FONTS[font] else "")
        self.settings = {"renderer": self.name, "dpi": dpi, "preamble": self.preamble, "page": PAGE}

    def __call__(self, formulas: Sequence[str]) -> list[Rendered]:
        results: list[Rendered | None] = [None] * len(formulas)
        pending = []
        for i, formula in enumerate(formulas):
            reason = unsafe_reason(formula)
            if reason:
                results[i] = Rendered(None, reason)
            else:
                pending.append(i)
        with tempfile.TemporaryDirectory(prefix="clip_match_tex_") as tmp:
            while pending:
                done, failed, error = self._run(Path(tmp), [formulas[i] for i in pending])
                for i, image in zip(pending, done):
                    results[i] = Rendered(image, None)
                if failed is None:
                    break
                results[pending[failed]] = Rendered(None, error)
                pending = pending[failed + 1:]
        return results  # type: ignore[return-value]

    def _run(self, tmp: Path, formulas: list[str]) -> tuple[list[Image.Image], int | None, str]:
        """Typeset ``formulas``; return the images of the pages before the first failure,
        that failure's position (None when all succeeded) and its error message."""
        for old in tmp.iterdir():
            old.unlink()
        (tmp / "batch.tex").write_text(self.preamble + "".join(PAGE % f for f in formulas) + "\\end{document}\n")
        try:
            proc = subprocess.run(
                ["latex", "-interaction=batchmode", "-halt-on-error", "-no-shell-escape", "batch.tex"],
                cwd=tmp, capture_output=True, timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            proc = None
        pages = _pages_written(tmp / "batch.log")
        images = self._dvi_to_images(tmp, pages) if pages else []
        if proc is not None and proc.returncode == 0 and pages == len(formulas):
            return images, None, ""
        if pages >= len(formulas):  # LaTeX failed after the last page: blame the last formula
            pages = len(formulas) - 1
            images = images[:pages]
        error = "latex timed out" if proc is None else _first_error(tmp / "batch.log")
        return images, pages, error

    def _dvi_to_images(self, tmp: Path, pages: int) -> list[Image.Image]:
        subprocess.run(
            ["dvipng", "-q", "-T", "tight", "-D", str(self.dpi), "-bg", "White", "-fg", "Black",
             "-z", "1", "-o", "p%d.png", "batch.dvi"],
            cwd=tmp, capture_output=True, timeout=TIMEOUT_S, check=False,
        )
        images = []
        for page in range(1, pages + 1):
            path = tmp / f"p{page}.png"
            if not path.exists():
                raise ClipMatchError(f"dvipng wrote no image for page {page} of {tmp / 'batch.dvi'}")
            with Image.open(path) as image:
                images.append(image.convert("L"))
        return images


def _pages_written(log: Path) -> int:
    """Number of pages LaTeX shipped, read from its log ('[1] [2] ...' or 'Output written ... (N pages')."""
    if not log.exists():
        return 0
    text = log.read_text(errors="replace")
    match = re.search(r"Output written on \S+ \((\d+) pages?", text)
    if match:
        return int(match.group(1))
    shipped = re.findall(r"\[(\d+)\]", text)
    return int(shipped[-1]) if shipped else 0


def _first_error(log: Path) -> str:
    """LaTeX's first error line ('! Undefined control sequence.'), for the failure report."""
    if not log.exists():
        return "latex failed without a log"
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("! "):
            return "latex: " + line[2:].strip()
    return "latex failed"
