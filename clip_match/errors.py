"""One exception type for every user-facing failure, so the CLI can print it and exit non-zero."""
from __future__ import annotations


class ClipMatchError(Exception):
    """A problem with the user's input or environment, worded for the user.

    The message names the file, line, key or field at fault; the CLI prints it without a
    traceback and exits with status 2.
    """


def is_positive_int(value: object) -> bool:
    """Whether ``value`` is a whole number >= 1 (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def positive_batch_size(batch_size: int) -> int:
    """``batch_size``, or an error unless it is a whole number >= 1."""
    if not is_positive_int(batch_size):
        raise ClipMatchError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def where(path: object, line: int | None = None, key: object | None = None) -> str:
    """Format a location prefix like ``data/train_texts.jsonl:12`` or ``lmdb/imgs[key=7]``."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if key is not None:
        text += f"[key={key}]"
    return text
