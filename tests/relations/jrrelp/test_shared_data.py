"""On the real SemEval data (skipped without ../shared/data): the head-word KG equals an independent count."""

from __future__ import annotations

import json
from collections import Counter

from knotwork.relations import load_tacred
from knotwork.relations.jrrelp import build_kg

from ...conftest import require_shared


def test_semeval_head_kg_matches_independent_count():
    path = require_shared("re", "semeval2010", "train.json")
    raw = json.loads(path.read_text())
    kg = build_kg(load_tacred(path), node_key="head", min_count=2)
    obj_counts = Counter(r["obj_head"] for r in raw)
    subj_counts = Counter(r["subj_head"] for r in raw)
    assert len(kg.objects) == 1 + sum(c >= 2 for c in obj_counts.values())
    assert len(kg.relations) == 10
    # Independent recount of one query's object set.
    first = raw[0]
    s = first["subj_head"] if subj_counts[first["subj_head"]] >= 2 else "<unk>"
    expected = {r["obj_head"] if obj_counts[r["obj_head"]] >= 2 else "<unk>" for r in raw
                if (r["subj_head"] if subj_counts[r["subj_head"]] >= 2 else "<unk>") == s
                and r["relation"] == first["relation"]}
    got = kg.edges[(kg.subject_id(s), kg.relation_id(first["relation"]))]
    assert {kg.objects[o] for o in got} == expected
