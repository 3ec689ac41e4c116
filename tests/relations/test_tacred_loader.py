"""The TACRED loader's output and refusals are pinned to a frozen copy of the loader as it was before it was made
fast (commit 31d5f6a): same examples (every field, ``extra`` and its key order), same error type and message,
on the real SemEval / TACRED-sample files, on hand-made tricky cases and on a seeded fuzz of mutated examples."""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from knotwork.relations import TACRED_LABELS, RelationExample, TacredFormatError, load_tacred
from knotwork.relations.data import examples_from_list
from tests.conftest import SHARED_DATA
from tests.relations.conftest import make_example

# ------------------------------------------------------------------ frozen reference (verbatim, commit 31d5f6a)

_REQUIRED = ("id", "token", "relation", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type")
_REQUIRED_SET = frozenset(_REQUIRED)
_STR_TYPES = {str}


def ref_example_from_dict(obj: Mapping[str, Any], *, index: int = 0,
                          labels: Collection[str] | None = None) -> RelationExample:
    ident = obj.get("id", f"<index {index}>") if isinstance(obj, Mapping) else f"<index {index}>"
    if not isinstance(obj, Mapping):
        raise TacredFormatError(f"example {ident}: expected a JSON object, got {type(obj).__name__}")
    if not _REQUIRED_SET <= obj.keys():
        missing = next(key for key in _REQUIRED if key not in obj)
        raise TacredFormatError(f"example {ident}: missing field {missing!r}")
    tokens = obj["token"]
    if not isinstance(tokens, list) or not tokens or set(map(type, tokens)) != _STR_TYPES:
        raise TacredFormatError(f"example {ident}: field 'token' must be a non-empty list of strings")
    if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)) or obj["id"] == "":
        raise TacredFormatError(f"example {ident}: field 'id' must be a non-empty string, got {obj['id']!r}")
    for key in ("relation", "subj_type", "obj_type"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise TacredFormatError(f"example {ident}: field {key!r} must be a non-empty string, got {obj[key]!r}")
    n = len(tokens)
    for side in ("subj", "obj"):
        start, end = obj[f"{side}_start"], obj[f"{side}_end"]
        if type(start) is not int or type(end) is not int or not (0 <= start <= end < n):
            raise TacredFormatError(
                f"example {ident}: field '{side}_start'/'{side}_end' = {start!r}/{end!r} is not an inclusive span "
                f"inside {n} tokens"
            )
    if labels is not None and obj["relation"] not in labels:
        raise TacredFormatError(f"example {ident}: field 'relation' = {obj['relation']!r} is not a known relation")
    extra = {k: v for k, v in obj.items() if k not in _REQUIRED_SET}
    return RelationExample(
        id=str(obj["id"]), tokens=tuple(tokens), relation=str(obj["relation"]), subj_start=obj["subj_start"],
        subj_end=obj["subj_end"], obj_start=obj["obj_start"], obj_end=obj["obj_end"],
        subj_type=str(obj["subj_type"]), obj_type=str(obj["obj_type"]), extra=extra,
    )


def ref_examples_from_list(raw: Any, *, source: str = "<data>",
                           labels: Collection[str] | None = None) -> list[RelationExample]:
    if not isinstance(raw, list):
        raise TacredFormatError(f"{source}: expected a JSON list of examples, got {type(raw).__name__}")
    label_set = None if labels is None else frozenset(labels)
    try:
        examples = [ref_example_from_dict(obj, index=i, labels=label_set) for i, obj in enumerate(raw)]
    except TacredFormatError as err:
        raise TacredFormatError(f"{source}: {err}") from err
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise TacredFormatError(f"{source}: example {ex.id}: duplicate id")
        seen.add(ex.id)
    return examples


def ref_load_tacred(path: str | Path, *, labels: Collection[str] | None = None) -> list[RelationExample]:
    path = Path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TacredFormatError(f"{path}: not UTF-8 text (byte {err.start}); is this the right file?") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise TacredFormatError(f"{path}: malformed JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    return ref_examples_from_list(raw, source=str(path), labels=labels)


# ------------------------------------------------------------------ comparison


def outcome(fn, *args, **kwargs):
    """('ok', a comparable copy of every example) or ('error', exception type, message)."""
    try:
        examples = fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the type is part of what is compared
        return ("error", type(err), str(err))
    assert isinstance(examples, list)
    return ("ok", [snapshot(ex) for ex in examples])


def snapshot(ex: RelationExample) -> tuple:
    """Every field with its type, and the key order of ``extra`` (it decides the order ``dump_tacred`` writes)."""
    assert type(ex) is RelationExample
    values = tuple((f.name, type(getattr(ex, f.name)), getattr(ex, f.name)) for f in fields(ex))
    return (*values, tuple(ex.extra), tuple(map(type, ex.tokens)))


def same_as_reference(raw, tmp_path: Path | None = None, *, labels=None, as_text: str | bytes | None = None):
    """Assert the new loader and the frozen one agree on ``raw`` (in memory and, with ``tmp_path``, from a file)."""
    ref = outcome(ref_examples_from_list, raw, source="src", labels=labels)
    assert outcome(examples_from_list, raw, source="src", labels=labels) == ref
    if tmp_path is not None:
        path = tmp_path / "case.json"
        data = json.dumps(raw) if as_text is None else as_text
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        assert outcome(load_tacred, path, labels=labels) == outcome(ref_load_tacred, path, labels=labels)
    return ref


# ------------------------------------------------------------------ real files


@pytest.mark.parametrize("name", ["semeval2010/train.json", "semeval2010/dev.json", "semeval2010/test.json",
                                  "tacred_sample/sample.json"])
def test_real_files_load_exactly_as_before(name):
    path = SHARED_DATA / "re" / name
    if not path.is_file():
        pytest.skip(f"real data not found at {path}; see shared/data/README.md")
    new, ref = outcome(load_tacred, path), outcome(ref_load_tacred, path)
    assert new[0] == "ok" and new == ref
    labels = TACRED_LABELS if name.startswith("tacred") else None
    assert outcome(load_tacred, path, labels=labels) == outcome(ref_load_tacred, path, labels=labels)


def test_real_semeval_with_a_planted_error_deep_in_the_file(tmp_path):
    path = SHARED_DATA / "re" / "semeval2010" / "dev.json"
    if not path.is_file():
        pytest.skip(f"real data not found at {path}; see shared/data/README.md")
    raw = json.loads(path.read_text(encoding="utf-8"))
    bad = [dict(ex) for ex in raw]
    bad[700]["obj_end"] = len(bad[700]["token"])  # one past the end
    kind, _, message = same_as_reference(bad, tmp_path)
    assert kind == "error" and f"example {raw[700]['id']}: field 'obj_start'/'obj_end'" in message
    dup = [*raw, dict(raw[3])]
    assert same_as_reference(dup, tmp_path)[2] == f"src: example {raw[3]['id']}: duplicate id"
    mixed = [dict(ex) for ex in raw]
    mixed[10] = {**mixed[10], "note": 1}  # a different key order in one example
    assert same_as_reference(mixed, tmp_path)[0] == "ok"


# ------------------------------------------------------------------ hand-made tricky cases


def _ok(i: int = 0, **overrides) -> dict:
    return make_example(f"e{i}", **overrides)


CASES: dict[str, list] = {
    "empty list": [],
    "one good": [_ok()],
    "int and str ids": [_ok(0, id=7), _ok(1, id="8")],
    "int id equal to a str id is a duplicate": [_ok(0, id=7), _ok(1, id="7")],
    "duplicate ids": [_ok(0), _ok(1), _ok(0)],
    "duplicate then a bad example: the bad one wins": [_ok(0), _ok(0), _ok(2, subj_end=99)],
    "span past the end": [_ok(0), _ok(1, obj_end=7)],
    "span reversed": [_ok(0, subj_start=1, subj_end=0)],
    "negative start": [_ok(0, obj_start=-1)],
    "bool start": [_ok(0, subj_start=False)],
    "float end": [_ok(0, subj_end=1.0)],
    "string end": [_ok(0, obj_end="3")],
    "huge int end": [_ok(0, obj_end=2**80)],
    "null span": [_ok(0, obj_start=None)],
    "empty tokens": [_ok(0, token=[])],
    "tokens a string": [_ok(0, token="Bill Gates")],
    "token not a string": [_ok(0, token=["a", 1, "b", "c"])],
    "token null": [_ok(0, token=["a", None, "b", "c"])],
    "nested token": [_ok(0, token=[["a"], "b", "c", "d"])],
    "empty id": [_ok(0, id="")],
    "bool id": [_ok(0, id=True)],
    "float id": [_ok(0, id=1.5)],
    "null id": [_ok(0, id=None)],
    "empty relation": [_ok(0, relation="")],
    "int relation": [_ok(0, relation=3)],
    "null subj_type": [_ok(0, subj_type=None)],
    "empty obj_type": [_ok(0, obj_type="")],
    "not an object": [_ok(0), ["a", "list"]],
    "a string element": ["example"],
    "null element": [None],
    "extra fields in different orders": [_ok(0), {"x": 1, **_ok(1)}, _ok(2, stanford_ner=["O"] * 7),
                                         {k: v for k, v in reversed(_ok(3).items())}],
    "no extra fields": [{k: v for k, v in _ok(0).items() if k != "stanford_head"}],
    "unicode tokens": [_ok(0, token=["Zoë", "Æsir", "—", "日本", "😀", "x", "y"])],
}


def _missing(field: str, ident: bool = True) -> list:
    obj = _ok(0)
    del obj[field]
    if not ident:
        del obj["id"]
    return [_ok(1), obj]


for _field in ("id", "token", "relation", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type"):
    CASES[f"missing {_field}"] = _missing(_field)
CASES["missing id and relation: named by index"] = _missing("relation", ident=False)


@pytest.mark.parametrize("name", list(CASES))
def test_tricky_cases_match_the_reference(name, tmp_path):
    raw = CASES[name]
    same_as_reference(raw, tmp_path)
    same_as_reference(raw, labels=["no_relation"])
    same_as_reference(raw, labels=TACRED_LABELS[1:])  # 'no_relation' unknown


def test_refusals_name_the_file_and_example(tmp_path):
    result = same_as_reference(CASES["span past the end"], tmp_path)
    assert result == ("error", TacredFormatError,
                      "src: example e1: field 'obj_start'/'obj_end' = 3/7 is not an inclusive span inside 7 tokens")
    assert same_as_reference(CASES["duplicate ids"])[2] == "src: example e0: duplicate id"
    assert same_as_reference(CASES["missing obj_type"])[2] == "src: example e0: missing field 'obj_type'"


def test_other_mappings_and_top_level_values():
    ok = _ok(0)
    for raw in ([OrderedDict(ok)], [MappingProxyType(ok)], {"a": 1}, "text", None, 3):
        same_as_reference(raw)


class _Str(str):
    pass


def test_subclasses_go_through_the_same_checks():
    same_as_reference([_ok(0, id=_Str("x"), relation=_Str("r"), subj_type=_Str("PERSON"))])
    same_as_reference([_ok(0, token=[_Str("a"), "b", "c", "d"])])


@pytest.mark.parametrize(("name", "data"), [
    ("latin-1", '[{"id": "caf\xe9"}]'.encode("latin-1")),
    ("utf-16", json.dumps([_ok(0)]).encode("utf-16")),
    ("utf-8 bom", b"\xef\xbb\xbf" + json.dumps([_ok(0)]).encode()),
    ("invalid byte deep in the file", json.dumps([_ok(i) for i in range(50)]).encode()[:900] + b"\xff\xfe" + b"]"),
    ("truncated", json.dumps([_ok(0), _ok(1)])[:-30]),
    ("trailing data", json.dumps([_ok(0)]) + " []"),
    ("crlf lines", json.dumps([_ok(0), _ok(1)], indent=1).replace("\n", "\r\n")),
    ("lone cr lines then an error", json.dumps([_ok(0)], indent=1).replace("\n", "\r") + "x"),
    ("crlf then an error", json.dumps([_ok(0)], indent=1).replace("\n", "\r\n") + "x"),
    ("nan span", json.dumps([_ok(0)]).replace('"subj_start": 0', '"subj_start": NaN')),
    ("empty file", b""),
    ("an object", json.dumps({"id": "x"})),
])
def test_file_level_cases_match_the_reference(name, data, tmp_path):
    path = tmp_path / "case.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    assert outcome(load_tacred, path) == outcome(ref_load_tacred, path)


# ------------------------------------------------------------------ seeded fuzz

_MUTATIONS: list = [None, True, False, 0, -1, 1, 6, 7, 1.0, "", "x", [], ["a"], {}, 2**70]


def _fuzzed(rng: random.Random, n: int) -> list:
    out: list = []
    for i in range(n):
        length = rng.randint(1, 6)
        obj: dict = {"id": rng.choice([f"id{i}", i, f"id{rng.randint(0, n)}"])}
        obj["token"] = [rng.choice(["a", "b", "The", "é"]) for _ in range(length)]
        s = rng.randint(0, length - 1)
        o = rng.randint(0, length - 1)
        obj.update(relation=rng.choice(["no_relation", "per:title", "Cause-Effect"]), subj_start=s,
                   subj_end=rng.randint(s, length - 1), obj_start=o, obj_end=o, subj_type="PERSON",
                   obj_type="ORG")
        if rng.random() < 0.3:
            obj["extra"] = rng.choice(["v", 1, [1, 2], {"k": None}])
        if rng.random() < 0.1:
            obj = dict(rng.sample(list(obj.items()), len(obj)))  # another key order
        if rng.random() < 0.04:
            key = rng.choice([*obj])
            if rng.random() < 0.3:
                del obj[key]
            else:
                obj[key] = rng.choice(_MUTATIONS)
        out.append(obj)
    return out


def test_seeded_fuzz_matches_the_reference():
    kinds = []
    for seed in range(300):
        rng = random.Random(seed)
        raw = _fuzzed(rng, rng.choice([1, 3, 20, 60]))
        kinds.append(same_as_reference(raw)[0])
        same_as_reference(raw, labels=["no_relation", "per:title"])
    assert 30 < kinds.count("ok") < 270  # the fuzz reaches both the accepted and the refused path


def test_the_cycle_collector_is_restored_after_loading(tmp_path):
    import gc

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([_ok(0)]))
    bad.write_text(json.dumps([_ok(0, subj_end=9)]))
    assert gc.isenabled()
    load_tacred(good)
    with pytest.raises(TacredFormatError):
        load_tacred(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_tacred(good)
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
