"""Progress bars: off by default in library calls, on in the command line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(
    items: Iterable[T], *, enabled: bool, desc: str = "", total: int | None = None
) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar when ``enabled``; otherwise return them unchanged."""
    if not enabled:
        return items
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
