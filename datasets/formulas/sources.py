"""Where the formula data lives and how it is read.

The data is not part of the repository. It is looked for in ``$CLIP_MATCH_SHARED_DATA`` when
set, otherwise in ``../shared/data`` next to the checkout:

- ``im2latex/``: the real IM2LaTeX-100K validation split, ``val/N.png`` and
  ``val.formulas.norm.txt`` (line N is the formula of image N, via ``val.matching.txt``);
- ``formulas/``: CROHME captions, one LaTeX formula per line, no images.

Every formula gets a stable integer id: IM2LaTeX line N -> N; CROHME lines are offset by
`CROHME_TRAIN_OFFSET` / `CROHME_TEST_OFFSET`, so ids never collide across sources.
"""
from __future__ import annotations

import os
from pathlib import Path

from clip_match.errors import ClipMatchError, where
from clip_match.formulas.evaluate import Formula

ENV_VAR = "CLIP_MATCH_SHARED_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
CROHME_TRAIN_OFFSET = 1_000_000
CROHME_TEST_OFFSET = 2_000_000
CROHME_FILES = (("crohme_train_captions.txt", CROHME_TRAIN_OFFSET), ("crohme2014_test_captions.txt", CROHME_TEST_OFFSET))


def shared_data_dir() -> Path:
    """``$CLIP_MATCH_SHARED_DATA`` if set, else ``<repo>/../shared/data``."""
    return Path(os.environ.get(ENV_VAR) or REPO_ROOT.parent / "shared" / "data")


def missing_data_reason(data_dir: Path | None = None) -> str | None:
    """Why the formula data cannot be used (for clear skips and errors), or None when it is there."""
    data_dir = data_dir or shared_data_dir()
    needed = [data_dir / "im2latex" / "val.formulas.norm.txt", data_dir / "im2latex" / "val.matching.txt",
              data_dir / "im2latex" / "val"]
    absent = [str(path) for path in needed if not path.exists()]
    if absent:
        return f"formula data not found: {', '.join(absent)} (set {ENV_VAR} to the folder holding im2latex/)"
    return None


def load_im2latex(data_dir: Path | None = None) -> list[Formula]:
    """IM2LaTeX validation formulas, each with its real image(s); ids are formula line numbers."""
    root = (data_dir or shared_data_dir()) / "im2latex"
    reason = missing_data_reason(root.parent)
    if reason:
        raise ClipMatchError(reason)
    formulas = _read_lines(root / "val.formulas.norm.txt")
    images: dict[int, list[Path]] = {}
    matching = root / "val.matching.txt"
    for number, line in enumerate(matching.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ClipMatchError(f"{where(matching, number)}: expected '<image file> <formula line>', got {line!r}")
        fid = int(parts[1])
        if fid >= len(formulas):
            raise ClipMatchError(f"{where(matching, number)}: formula line {fid} is past the end of "
                                 f"{root / 'val.formulas.norm.txt'} ({len(formulas)} lines)")
        image = root / "val" / parts[0]
        if not image.is_file():
            raise ClipMatchError(f"{where(matching, number)}: image {image} does not exist")
        images.setdefault(fid, []).append(image)
    return [Formula(fid, latex, tuple(images[fid])) for fid, latex in enumerate(formulas)
            if latex and fid in images]


def load_crohme(data_dir: Path | None = None) -> list[Formula]:
    """CROHME captions (text only); empty when the ``formulas/`` folder is absent."""
    root = (data_dir or shared_data_dir()) / "formulas"
    result = []
    for name, offset in CROHME_FILES:
        path = root / name
        if path.exists():
            result += [Formula(offset + i, latex) for i, latex in enumerate(_read_lines(path)) if latex]
    return result


def read_formula_file(path: Path) -> list[Formula]:
    """A user's formula list, one per line (blank lines skipped); ids are 0-based line numbers."""
    return [Formula(i, latex) for i, latex in enumerate(_read_lines(path)) if latex]


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClipMatchError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise ClipMatchError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return [line.strip() for line in text.splitlines()]
