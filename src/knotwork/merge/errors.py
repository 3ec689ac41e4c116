"""Errors raised by knotwork.merge; each names the adapter, file or module at fault."""

from __future__ import annotations

from knotwork._errors import MergeError

__all__ = ["AdapterError", "MergeError"]


class AdapterError(MergeError):
    """An adapter directory is missing, corrupt, unsupported, or incompatible with the others (exit code 2)."""
