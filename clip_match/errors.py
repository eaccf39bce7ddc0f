"""One exception type for every user-facing failure, so the CLI can print it and exit non-zero."""
from __future__ import annotations


class ClipMatchError(Exception):
    """A problem with the user's input or environment, worded for the user.

    The message names the file, line, key or field at fault; the CLI prints it without a
    traceback and exits with status 2.
    """


def where(path: object, line: int | None = None, key: object | None = None) -> str:
    """Format a location prefix like ``data/train_texts.jsonl:12`` or ``lmdb/imgs[key=7]``."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if key is not None:
        text += f"[key={key}]"
    return text
