"""Tiny synthetic TACRED-format data for JRRELP tests (the KG is known by construction)."""

from __future__ import annotations

import numpy as np

from knotwork.relations import RelationExample

# relation -> (subject type, object types it allows); the cue word makes RE learnable.
TABLE = {
    "per:employee_of": ("PERSON", ("ORGANIZATION",), "works"),
    "per:city_of_birth": ("PERSON", ("CITY",), "born"),
    "org:founded_by": ("ORGANIZATION", ("PERSON",), "founded"),
    "no_relation": ("PERSON", ("PERSON", "CITY"), "saw"),
}


def synthetic_examples(n: int, seed: int) -> list[RelationExample]:
    """``n`` sentences "<subj> <filler>* <cue> <filler>* <obj>" with a relation-specific cue word."""
    rng = np.random.default_rng(seed)
    rels = sorted(TABLE)
    fillers = ["the", "a", "of", "in", "and", "then", "later"]
    out = []
    for i in range(n):
        rel = rels[int(rng.integers(len(rels)))]
        s_type, o_types, cue = TABLE[rel]
        o_type = o_types[int(rng.integers(len(o_types)))]
        left = list(rng.choice(fillers, int(rng.integers(0, 4))))
        right = list(rng.choice(fillers, int(rng.integers(0, 4))))
        tokens = ["Xs", *left, cue, *right, "Yo"]
        out.append(
            RelationExample(
                id=f"s{seed}-{i}", tokens=tuple(tokens), relation=rel, subj_start=0, subj_end=0,
                obj_start=len(tokens) - 1, obj_end=len(tokens) - 1, subj_type=s_type, obj_type=o_type,
            )
        )
    return out
