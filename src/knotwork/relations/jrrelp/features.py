"""Turn RelationExamples into model inputs: a word vocabulary for PA-LSTM, entity markers for transformers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from knotwork._errors import JrrelpError
from knotwork.relations.data import RelationExample

PAD, UNK = "<pad>", "<unk>"
ENTITY_MASKING = ("none", "type")


@dataclass(frozen=True)
class Vocab:
    """A word vocabulary; id 0 is padding, id 1 the unknown word."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.words[:2] != (PAD, UNK):
            raise JrrelpError(f"a Vocab must start with {PAD!r}, {UNK!r}; got {self.words[:2]}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        return self._index.get(word, 1)  # type: ignore[attr-defined]


def entity_token(side: str, entity_type: str | None) -> str:
    """The token that replaces a masked entity: ``SUBJ-PERSON`` (the PA-LSTM convention), ``SUBJ`` without a type."""
    mark = "SUBJ" if side == "subj" else "OBJ"
    return f"{mark}-{entity_type}" if entity_type else mark


def _words(ex: RelationExample, *, lowercase: bool, entity_masking: str) -> list[str]:
    words = [w.lower() if lowercase else w for w in ex.tokens]
    if entity_masking == "type":
        for i in range(ex.subj_start, ex.subj_end + 1):
            words[i] = entity_token("subj", ex.subj_type)
        for i in range(ex.obj_start, ex.obj_end + 1):
            words[i] = entity_token("obj", ex.obj_type)
    return words


def build_vocab(
    examples: Sequence[RelationExample],
    *,
    min_count: int = 2,
    lowercase: bool = True,
    entity_masking: str = "none",
    extra_words: Sequence[str] = (),
) -> Vocab:
    """Vocabulary of the training words seen at least ``min_count`` times, plus ``extra_words``.

    ``extra_words`` keeps the KG node tokens (entity types or head words) in the vocabulary, so every node has
    its own row in the shared embedding table, as JRRELP's parameter sharing requires.
    """
    if entity_masking not in ENTITY_MASKING:
        raise JrrelpError(f"entity_masking must be one of {ENTITY_MASKING}, got {entity_masking!r}")
    counts = Counter(w for ex in examples for w in _words(ex, lowercase=lowercase, entity_masking=entity_masking))
    words = [w for w, c in sorted(counts.items()) if c >= min_count and w not in (PAD, UNK)]
    seen = set(words)
    words += [w for w in dict.fromkeys(extra_words) if w not in seen and w not in (PAD, UNK)]
    return Vocab((PAD, UNK, *words))


def _relative_positions(start: int, end: int, length: int, max_distance: int) -> list[int]:
    # PA-LSTM's position feature: negative before the entity, 0 inside, positive after; clipped.
    pos = [i - start if i < start else (0 if i <= end else i - end) for i in range(length)]
    return [max(-max_distance, min(max_distance, p)) for p in pos]


@dataclass(frozen=True)
class PALSTMFeaturizer:
    """Word ids and subject/object relative positions for :class:`~knotwork.relations.jrrelp.palstm.PALSTMEncoder`."""

    vocab: Vocab
    lowercase: bool = True
    entity_masking: str = "none"
    max_distance: int = 100

    def __call__(self, ex: RelationExample) -> dict[str, list[int]]:
        words = _words(ex, lowercase=self.lowercase, entity_masking=self.entity_masking)
        n = len(words)
        return {
            "input_ids": [self.vocab.id(w) for w in words],
            "subj_pos": _relative_positions(ex.subj_start, ex.subj_end, n, self.max_distance),
            "obj_pos": _relative_positions(ex.obj_start, ex.obj_end, n, self.max_distance),
        }

    def node_tokens(self, side: str, node: str, node_key: str) -> list[int]:
        """Vocabulary ids whose embeddings represent a KG node (one id for a word vocabulary)."""
        word = entity_token(side, node) if node_key == "type" else (node.lower() if self.lowercase else node)
        return [self.vocab.id(word)]

    def collate(self, feats: Sequence[Mapping[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Pad to the longest example; positions are shifted to be non-negative embedding ids."""
        n = max(len(f["input_ids"]) for f in feats)
        ids = torch.zeros(len(feats), n, dtype=torch.long)
        sp = torch.zeros_like(ids)
        op = torch.zeros_like(ids)
        mask = torch.zeros(len(feats), n, dtype=torch.bool)
        for i, f in enumerate(feats):
            k = len(f["input_ids"])
            ids[i, :k] = torch.tensor(f["input_ids"])
            sp[i, :k] = torch.tensor(f["subj_pos"]) + self.max_distance
            op[i, :k] = torch.tensor(f["obj_pos"]) + self.max_distance
            mask[i, :k] = True
        return {"input_ids": ids, "subj_pos": sp, "obj_pos": op, "mask": mask}


@dataclass(frozen=True)
class MarkerFeaturizer:
    """Word-piece ids with entity markers around subject and object (Baldini Soares et al. 2019).

    Markers are the tokenizer's ``[unused0]``..``[unused3]`` (as in OpenNRE), so no embedding rows are added.
    ``tokenize`` maps one word to its word-piece ids (e.g. a Hugging Face tokenizer's ``encode`` without
    special tokens).
    """

    tokenize: object  # Callable[[str], list[int]]; a dataclass field cannot be typed as a callable cleanly
    cls_id: int
    sep_id: int
    marker_ids: tuple[int, int, int, int]
    max_length: int = 128
    pad_id: int = 0

    def __call__(self, ex: RelationExample) -> dict[str, list[int]]:
        s0, s1, o0, o1 = self.marker_ids
        ids, subj_at, obj_at = [self.cls_id], 0, 0
        for i, word in enumerate(ex.tokens):
            if i == ex.subj_start:
                subj_at = len(ids)
                ids.append(s0)
            if i == ex.obj_start:
                obj_at = len(ids)
                ids.append(o0)
            ids.extend(self.tokenize(word))  # type: ignore[operator]
            if i == ex.subj_end:
                ids.append(s1)
            if i == ex.obj_end:
                ids.append(o1)
        ids.append(self.sep_id)
        if len(ids) > self.max_length:
            # Keep a window that contains both markers rather than dropping an entity.
            lo = max(0, min(subj_at, obj_at) - 8)
            ids = ids[lo : lo + self.max_length]
            subj_at, obj_at = subj_at - lo, obj_at - lo
            subj_at, obj_at = min(subj_at, len(ids) - 1), min(obj_at, len(ids) - 1)
        return {"input_ids": ids, "subj_at": [subj_at], "obj_at": [obj_at]}

    def node_tokens(self, side: str, node: str, node_key: str) -> list[int]:
        """Word-piece ids of the node's name; its embedding is the mean of their input embeddings."""
        pieces = self.tokenize(node)  # type: ignore[operator]
        return list(pieces) or [self.pad_id]

    def collate(self, feats: Sequence[Mapping[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(feats), n, dtype=torch.bool)
        for i, f in enumerate(feats):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = True
        subj = torch.tensor([f["subj_at"][0] for f in feats])
        obj = torch.tensor([f["obj_at"][0] for f in feats])
        return {"input_ids": ids, "mask": mask, "subj_at": subj, "obj_at": obj}
