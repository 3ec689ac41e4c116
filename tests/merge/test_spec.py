"""MergeSpec: the typed merge config; a report's config redoes the merge; errors name the field."""

from __future__ import annotations

import pytest

from knotwork._errors import MergeError
from knotwork.merge.spec import MergeSpec


def test_round_trip_and_effective_values():
    spec = MergeSpec.from_mapping({
        "method": "ties", "out": "m", "rank": 64,
        "adapters": [{"path": "a", "weight": 2.0}, "b"], "parameters": {"scale": 0.6},
    })
    assert spec.weights == (2.0, 1.0) and spec.config().task_scales == (2.0, 1.0)
    data = spec.to_mapping()
    assert data["parameters"] == {"scale": 0.6, "topk": 20.0, "topk_scope": "global"}  # effective topk, not null
    again = MergeSpec.from_mapping(data)
    assert again.config() == MergeSpec.from_mapping(again.to_mapping()).config()
    assert again.config().topk == 20.0 and again.rank == 64 and again.adapters == ("a", "b")
    # A merge report is accepted as a config: its "config" section is used.
    assert MergeSpec.from_mapping({"method": "x", "config": data}).method == "ties"


@pytest.mark.parametrize("data, match", [
    ({"adapters": ["a"], "out": "m", "methd": "ta"}, "unknown field 'methd'"),
    ({"adapters": [], "out": "m"}, "'adapters' must be a non-empty list"),
    ({"adapters": ["a"]}, "'out' .* is required"),
    ({"adapters": ["a"], "out": "m", "method": "tiez"}, "unknown merge method 'tiez'"),
    ({"adapters": ["a"], "out": "m", "parameters": {"topk": 0}}, "'topk' parameter of MergeConfig"),
    ({"adapters": ["a"], "out": "m", "parameters": {"k": 1}}, "unknown merge parameter 'k'"),
    ({"adapters": ["a"], "out": "m", "rank": 0}, "rank must be an integer >= 1 or 'full'"),
    ({"adapters": ["a", "b"], "out": "m", "weights": [1.0]}, "1 task weights for 2 adapters"),
    ({"adapters": [{"path": "a", "weight": float("nan")}], "out": "m"}, "not a finite number"),
    ({"adapters": [3], "out": "m"}, r"adapters\[0\] must be a path"),
    ({"adapters": ["a"], "out": "m", "device": "tpu"}, "device must be one of"),
    ({"adapters": ["a"], "out": "m", "threads": 0}, "threads must be an integer >= 1"),
])
def test_bad_fields_are_named(data, match):
    with pytest.raises(MergeError, match=f"merge.yaml: .*{match}"):
        MergeSpec.from_mapping(data, source="merge.yaml")
