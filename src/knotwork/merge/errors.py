"""Errors raised by knotwork.merge; each names the adapter, file or module at fault."""

from __future__ import annotations


class AdapterError(ValueError):
    """An adapter directory is missing, corrupt, unsupported, or incompatible with the others."""
