"""Synthetic TACRED-format fixtures (ids shaped like the real ones, inclusive spans, string and int heads)."""

from __future__ import annotations

import json

import pytest


def make_example(ident: str, relation: str = "no_relation", **overrides) -> dict:
    obj = {
        "id": ident,
        "relation": relation,
        "token": ["Bill", "Gates", "founded", "Microsoft", "in", "1975", "."],
        "subj_start": 0,
        "subj_end": 1,
        "obj_start": 3,
        "obj_end": 3,
        "subj_type": "PERSON",
        "obj_type": "ORGANIZATION",
        "stanford_head": ["2", "3", "0", "3", "6", "3", "3"],
    }
    obj.update(overrides)
    return obj


@pytest.fixture
def tacred_file(tmp_path):
    """A 4-example TACRED JSON file: ids 61b3a65fb90000000000..3, one per label below."""
    rels = ["org:founded_by", "no_relation", "per:employee_of", "no_relation"]
    objs = [make_example(f"61b3a65fb9000000000{i}", rel) for i, rel in enumerate(rels)]
    objs[2]["stanford_head"] = [2, 3, 0, 3, 6, 3, 3]  # ints, as in the LDC release
    path = tmp_path / "data" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(objs))
    return path
