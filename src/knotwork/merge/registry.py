"""The one table from command-line name to merge method. Adding a method = one file + one line here.

KnOTS variants are not separate code: ``knots(method)`` runs the same merge on KnOTS-aligned representations.
The table names each method's module and attribute, so the names (``METHOD_NAMES``, which the CLI's ``--method``
choices are built from) are known without importing torch; a method's module is imported on first use.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from knotwork.merge.methods.base import MergeMethod

KNOTS_REFERENCE = "Stoica et al., Model merging with SVD to tie the KnOTS, ICLR 2025 (arXiv 2410.19735)"

# command-line name -> "module:attribute" of its MergeMethod
_BASE = {
    "ta": "knotwork.merge.methods.ta:TA",
    "ties": "knotwork.merge.methods.ties:TIES",
    "dare": "knotwork.merge.methods.dare:DARE",
    "dare-ties": "knotwork.merge.methods.dare:DARE_TIES",
}
METHOD_NAMES: tuple[str, ...] = (*_BASE, *(f"knots-{name}" for name in _BASE))


def knots(method: MergeMethod) -> MergeMethod:
    """``method`` applied to the KnOTS representations R_i = Σ V_iᵀ instead of the updates ΔW_i."""
    return replace(method, name=f"knots-{method.name}", reference=f"{KNOTS_REFERENCE}; {method.reference}", aligned=True)


def _load(name: str) -> MergeMethod:
    module, attribute = _BASE[name].split(":")
    method = getattr(import_module(module), attribute)
    if method.name != name:
        raise RuntimeError(f"registry entry {name!r} points at a method named {method.name!r}")
    return method


_loaded: dict[str, MergeMethod] = {}


def _methods() -> dict[str, MergeMethod]:
    if not _loaded:
        base = {name: _load(name) for name in _BASE}
        _loaded.update(base)
        _loaded.update({f"knots-{name}": knots(m) for name, m in base.items()})
    return _loaded


def get_method(name: str) -> MergeMethod:
    """Look up a method by its command-line name; an unknown name lists the known ones."""
    if name not in METHOD_NAMES:
        raise KeyError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(METHOD_NAMES))}")
    return _methods()[name]


def available_methods() -> list[str]:
    return sorted(METHOD_NAMES)


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # {name: MergeMethod}, built on first use (it imports torch)
        return _methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
