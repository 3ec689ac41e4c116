"""The one table from command-line name to merge method. Adding a method = one file + one line here.

KnOTS variants are not separate code: ``knots(method)`` runs the same merge on KnOTS-aligned representations.
"""

from __future__ import annotations

from dataclasses import replace

from knotwork.merge.methods.base import MergeMethod
from knotwork.merge.methods.dare import DARE, DARE_TIES
from knotwork.merge.methods.ta import TA
from knotwork.merge.methods.ties import TIES

KNOTS_REFERENCE = "Stoica et al., Model merging with SVD to tie the KnOTS, ICLR 2025 (arXiv 2410.19735)"


def knots(method: MergeMethod) -> MergeMethod:
    """``method`` applied to the KnOTS representations R_i = Σ V_iᵀ instead of the updates ΔW_i."""
    return replace(method, name=f"knots-{method.name}", reference=f"{KNOTS_REFERENCE}; {method.reference}", aligned=True)


_BASE = (TA, TIES, DARE, DARE_TIES)
METHODS: dict[str, MergeMethod] = {m.name: m for m in _BASE} | {knots(m).name: knots(m) for m in _BASE}


def get_method(name: str) -> MergeMethod:
    """Look up a method by its command-line name; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


def available_methods() -> list[str]:
    return sorted(METHODS)
