"""The demo's shipped sentences (src/knotwork/lora/demo_data): small, packaged, real (verbatim from the named split
of the shared corpora, same label), rebuilt exactly by scripts/make_demo_data.py; and the merge property the demo's
λ search relies on."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from knotwork.lora.demo import DEMO_TASKS, load_demo_tasks
from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "knotwork" / "lora" / "demo_data"
#: Where each demo task's sentences come from (shared/data/text/<folder>), as SOURCES.md states.
SOURCE = {"sentiment": "mr", "subjectivity": "subj", "question": "trec"}
SIZES = {"train": 320, "val": 32, "test": 100}


def shipped_files() -> dict[str, bytes]:
    return {p.relative_to(DATA).as_posix(): p.read_bytes() for p in sorted(DATA.rglob("*")) if p.is_file()}


def test_the_shipped_data_is_small_and_packaged():
    files = shipped_files()
    assert sum(len(b) for b in files.values()) <= 200_000  # the limit shared/data/README.md allows
    expected = {"SOURCES.md"} | {f"{t}/{f}" for t in DEMO_TASKS for f in ("labels.json", *(f"{s}.jsonl" for s in SIZES))}
    assert set(files) == expected
    # Every file is package data of knotwork.lora, so an installed package has it.
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["knotwork.lora"]
    unpackaged = [f for f in files if not any(fnmatch.fnmatch(f"demo_data/{f}", g) for g in globs)]
    assert not unpackaged
    sources = files["SOURCES.md"].decode()
    for cite in ("harvardnlp/sent-conv-torch@d61ded09c99c0199d8c5bca946cd65864de2b296", "Pang & Lee 2004",
                 "Pang & Lee 2005", "Li & Roth 2002"):
        assert cite in sources


def test_load_demo_tasks_reads_the_package_data():
    tasks = load_demo_tasks()
    assert [t.name for t in tasks] == list(DEMO_TASKS)
    for task in tasks:
        assert {s: len(task.splits[s]) for s in SIZES} == SIZES
        labels = json.loads((DATA / task.name / "labels.json").read_text())
        assert list(task.label_names) == labels
        first = json.loads((DATA / task.name / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
        assert (task.splits["test"].texts[0], task.splits["test"].labels[0]) == (first["text"], first["label"])
        assert set(task.splits["train"].labels) == set(range(len(labels)))  # every label is taught
        held = set(task.splits["val"].texts) | set(task.splits["test"].texts)
        assert not held & set(task.splits["train"].texts)
    names = [n for t in tasks for n in t.label_names]
    assert len(names) == len(set(names)) == 10  # the joint benchmark pools 10 distinct labels


@pytest.mark.shared_data
def test_every_shipped_sentence_is_verbatim_in_its_source_split():
    for task, folder in SOURCE.items():
        src = require_shared("text", folder)
        assert (DATA / task / "labels.json").read_bytes() == (src / "labels.json").read_bytes()
        for split in SIZES:
            source = set((src / f"{split}.jsonl").read_text(encoding="utf-8").splitlines())
            source_rows = {(r["text"], r["label"]) for r in map(json.loads, source)}
            lines = (DATA / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
            assert len(lines) == len(set(lines)) == SIZES[split]
            rows = [json.loads(line) for line in lines]
            missing = [r for r in rows if (r["text"], r["label"]) not in source_rows]
            assert not missing, f"{task}/{split}: {missing[:2]} not in shared/data/text/{folder}/{split}.jsonl"


@pytest.mark.shared_data
def test_the_builder_reproduces_the_shipped_files(tmp_path, monkeypatch):
    shared = require_shared("text").parent
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import make_demo_data

    make_demo_data.build(shared, tmp_path)
    rebuilt = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert rebuilt == shipped_files()


@pytest.mark.parametrize("method", ["ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties"])
def test_a_merge_at_lambda_is_lambda_times_the_merge_at_one(method):
    # run_demo merges once at λ = 1 and scales; the oracle is the library's own merge at λ.
    pytest.importorskip("knotwork.merge")
    import torch

    from knotwork.merge import merge_modules
    from knotwork.merge.config import MergeConfig

    g = torch.Generator().manual_seed(0)
    factors = {m: [(torch.randn(12, 2, generator=g, dtype=torch.float64),
                    torch.randn(2, 10, generator=g, dtype=torch.float64)) for _ in range(3)] for m in ("a", "b")}
    fixed = {"topk": 20.0} if method in ("ties", "knots-ties") else {"topk": 100.0, "drop_rate": 0.3, "seed": 1}
    fixed = {} if method == "ta" else fixed
    unit = merge_modules(factors, method=method, config=MergeConfig(scale=1.0, **fixed)).deltas
    direct = merge_modules(factors, method=method, config=MergeConfig(scale=0.35, **fixed)).deltas
    assert unit["a"].abs().max() > 0
    for m in factors:
        torch.testing.assert_close(direct[m], 0.35 * unit[m])
