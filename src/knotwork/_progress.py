"""Progress bars from one place: every bar goes to stderr, is off when stderr is not a terminal or the CLI's
``-q`` was given, and library code reports progress through a callback instead of drawing bars itself."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

_state = {"enabled": None}  # None: decide by whether stderr is a terminal; set by the CLI's -q / -v


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on (True), off (False), or back to "when stderr is a terminal" (None)."""
    _state["enabled"] = enabled


def progress_enabled() -> bool:
    if _state["enabled"] is not None:
        return bool(_state["enabled"])
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool | None = None, leave: bool = False):
    """A tqdm bar on stderr (a no-op bar when progress is off). Use as a context manager or an iterator."""
    from tqdm.auto import tqdm

    on = progress_enabled() if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not on, leave=leave, file=sys.stderr,
                dynamic_ncols=True)


def as_callback(progress: bool | Callable[[int], Any] | None, *, total: int | None, desc: str,
                unit: str = "it"):
    """Turn a library function's ``progress`` argument into ``(update(n), close())``.

    ``progress`` may be a callable (called with the number of finished items), True (a bar), or False/None.
    """
    if callable(progress):
        return progress, (lambda: None)
    if progress:
        bar = progress_bar(total=total, desc=desc, unit=unit, enabled=True)
        return bar.update, bar.close
    return (lambda n=1: None), (lambda: None)
