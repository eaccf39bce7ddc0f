"""Small value checks shared by the runtime, the index and the model configs."""
from __future__ import annotations

from .errors import ClipMatchError


def is_positive_int(value: object) -> bool:
    """Whether ``value`` is a whole number >= 1 (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def positive_batch_size(batch_size: int) -> int:
    """``batch_size``, or an error unless it is a whole number >= 1."""
    if not is_positive_int(batch_size):
        raise ClipMatchError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size
