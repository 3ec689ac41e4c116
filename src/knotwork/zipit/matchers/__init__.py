"""Matchers: pure functions ``(corr (O, O), sizes) -> (merge (n, O), unmerge (O, n))`` for one feature space.

Registered by the names used on the command line; ``get_matcher(name)`` fails with the list of known names.
"""

from __future__ import annotations

from collections.abc import Callable

from knotwork._errors import ZipitError
from knotwork.zipit.matchers._common import from_clusters, split_blocks
from knotwork.zipit.matchers.identity import identity_match
from knotwork.zipit.matchers.permute import permute_match
from knotwork.zipit.matchers.zipit import zipit_match, zipit_match_naive

MATCHERS: dict[str, Callable] = {
    "zipit": zipit_match,
    "permute": permute_match,
    "identity": identity_match,
}


def get_matcher(name: str) -> Callable:
    """The matcher registered as ``name``."""
    try:
        return MATCHERS[name]
    except KeyError:
        raise ZipitError(f"unknown matcher {name!r}; known matchers: {sorted(MATCHERS)}") from None


__all__ = ["MATCHERS", "from_clusters", "get_matcher", "identity_match", "permute_match", "split_blocks",
           "zipit_match", "zipit_match_naive"]
