"""The JRRELP and ConvE studies' bookkeeping, in this process at a tiny budget: a unit killed after an epoch
resumes to the uninterrupted unit's record, a page that fails does not stop the runs, settings are compared key by
key, and the ConvE study keeps the earliest of tied rounds (its test scoring raised on a tie before)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _common  # noqa: E402
import conve_linkpred as conve  # noqa: E402
import jrrelp_study as study  # noqa: E402

LIMITS = (40, 20, 20)
TINY = dict(study.PALSTM, epochs=3, patience=3, hidden_dim=20, attention_dim=10, embedding_dim=20, position_dim=5,
            conve_width=5, conve_channels=4, lambda_kglp=1.0, lambda_coupling=1.0)


class Killed(Exception):
    pass


@pytest.fixture
def records(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(_common, "RESULTS", _common.RESULTS)  # run_one and main point it at tmp folders
    threads = torch.get_num_threads()  # and set one torch thread, as in their worker processes
    yield tmp_path
    torch.set_num_threads(threads)


def _unit(data, folder: Path, prep: dict) -> dict:
    study.run_one("palstm/jrrelp", 0, TINY, str(data), LIMITS, str(folder / "records"), prep, str(folder / "cache"))
    return json.loads((folder / "records" / "jrrelp" / "palstm__jrrelp__seed0.json").read_text())["data"]


def test_a_unit_killed_after_an_epoch_resumes_to_the_uninterrupted_record(records, monkeypatch):
    data = require_shared("re", "semeval2010")
    prep = study.prepare(data, records / "prep", "none", 17, "random", lambda msg: None)
    whole = _unit(data, records / "whole", prep)

    def kill(unit, epoch):
        if epoch == 2:
            raise Killed

    monkeypatch.setattr(study, "_after_checkpoint", kill)
    with pytest.raises(Killed):
        _unit(data, records / "broken", prep)
    saved = study.checkpoint_path(records / "broken" / "cache", "palstm__jrrelp__seed0")
    assert saved.is_file() and not (records / "broken" / "records" / "jrrelp").exists()
    epochs = []
    monkeypatch.setattr(study, "_after_checkpoint", lambda unit, epoch: epochs.append(epoch))
    resumed = _unit(data, records / "broken", prep)
    assert epochs == [3] and resumed["resumed_after_epoch"] == 2 and not saved.exists()  # only epoch 3 ran again
    for key in ("history", "best_epoch", "epochs_run", "dev_f1", "test_f1", "test_macro_f1", "predictions", "settings"):
        assert resumed[key] == whole[key], key
    assert resumed["cpu_seconds"] > 0 and resumed["seconds"] > 0


def test_a_page_that_fails_to_render_does_not_stop_the_runs(records, monkeypatch, capsys):
    data = require_shared("re", "semeval2010")

    def broken(*args, **kwargs):
        raise ValueError("no page today")

    monkeypatch.setattr(study, "report", broken)
    args = ["--data", str(data), "--typing", "none", "--word-vectors", "random", "--seeds", "1", "--max-epochs", "1",
            "--train-limit", "30", "--dev-limit", "10", "--test-limit", "10", "--workers", "1",
            "--records", str(records / "records"), "--out", str(records / "page.md"), "--cache", str(records / "c")]
    with pytest.raises(ValueError, match="no page today"):  # the last render is unguarded: the command fails
        study.main(args)
    out = capsys.readouterr().out
    assert out.count("page not rendered after") == 2 and "finished palstm/jrrelp seed 0" in out
    assert sorted(p.name for p in (records / "records" / "jrrelp").iterdir()) == [
        "palstm__baseline__seed0.json", "palstm__jrrelp__seed0.json"]


def test_settings_differences_name_the_key():
    old = {"config": {"epochs": 1, "patience": 10}, "limits": {"train": None}, "prepared": {"types_sha": "a"}}
    new = {"config": {"epochs": 1, "patience": 5}, "limits": {"train": 60}, "prepared": {"types_sha": "a"}}
    assert study.differences(old, new) == ["config.patience: 10 in the record, 5 planned",
                                           "limits.train: None in the record, 60 planned"]
    assert study.differences(old, old) == []
    assert study.differences(None, new) == [f"settings: None in the record, {new!r} planned"]


def _fake_minilm(words, batch_size=256):
    """A stand-in for MiniLM (a minute on a shared CPU): a fixed random vector per word."""
    import zlib

    import numpy as np

    return np.stack([np.random.default_rng(zlib.crc32(w.encode())).normal(size=384) for w in words])


def test_reuse_accepts_last_bit_vectors_and_refuses_other_vectors_or_types(records, monkeypatch, capsys):
    """A new session's machine recomputes the prepared files: vectors 1e-7 off (relative) are reused and named in the
    log and on the page; vectors 1e-2 off are refused; a type assignment with 5 head words moved is refused, with 5."""
    import numpy as np

    from knotwork._errors import InputError

    data = require_shared("re", "semeval2010")
    monkeypatch.setattr(study, "minilm_encode", _fake_minilm)
    page = records / "page.md"
    args = ["--data", str(data), "--typing", "minilm", "--types", "3", "--word-vectors", "minilm", "--seeds", "1",
            "--max-epochs", "1", "--train-limit", "30", "--dev-limit", "10", "--test-limit", "10", "--workers", "1",
            "--records", str(records / "records"), "--out", str(page), "--cache", str(records / "c")]
    study.main(args)
    assert "2 runs to do, 0 done" in capsys.readouterr().out
    (folder,) = (records / "c").iterdir()
    vectors_file, types_file = folder / "vectors.npz", folder / "types.json"
    original, original_types = vectors_file.read_bytes(), types_file.read_text()

    def perturb(relative: float) -> None:
        with np.load(vectors_file) as z:
            words, vectors, kept = z["words"], z["vectors"], z["variance_kept"]
        noise = np.random.default_rng(7).normal(size=vectors.shape)
        changed = (vectors * (1 + relative * noise)).astype(np.float32)
        assert not np.array_equal(changed, vectors)  # some entries changed by a bit or more
        np.savez(vectors_file, words=words, vectors=changed, variance_kept=kept)

    perturb(1e-7)
    study.main(args)
    out = capsys.readouterr().out
    assert "0 runs to do, 2 done" in out and "finished" not in out
    line = re.search(r"2 run\(s\) were made with word vectors that differ in the last bits from this machine's "
                     r"\(palstm/baseline seed 0; palstm/jrrelp seed 0\): max relative difference of their "
                     r"fingerprint (\S+), within the tolerance 1e-04", out)
    assert line and 0 < float(line.group(1)) < 1e-6, out
    assert line.group(0) in page.read_text()

    vectors_file.write_bytes(original)
    perturb(1e-2)
    with pytest.raises(InputError, match=r"palstm__baseline__seed0: .*\(word vectors: their fingerprint differs "
                                         r"from the record's by [0-9.]+e-0[23] \(relative; tolerance 1e-04\)"):
        study.main(args)

    vectors_file.write_bytes(original)
    body = json.loads(original_types)
    moved = sorted(w for w, t in body["types"].items() if t == "C00")[:5]
    body["types"].update(dict.fromkeys(moved, "C01"))
    types_file.write_text(json.dumps(body))
    with pytest.raises(InputError, match=rf"palstm__baseline__seed0: .*\(entity types: 5 of {len(body['types'])} "
                                         r"head words have another type than in the record .*reuse would mix"):
        study.main(args)
    types_file.write_text(original_types)
    study.main(args)  # the files as made: reused without a note
    out = capsys.readouterr().out
    assert "0 runs to do, 2 done" in out and "last bits" not in out


def test_changed_types_matches_type_names_before_counting():
    # C00 <-> C01 renamed (5 words keep their clusters), and the word of C02 joined the renamed C00: one change.
    old = "C00 C00 C00 C01 C01 C02"
    assert study.changed_types(old, "C01 C01 C01 C00 C00 C00") == 1
    assert study.changed_types(old, old) == 0
    assert study.changed_types(old, "C00 C01 C00 C01 C01 C02") == 1


def test_pca_vectors_fix_the_sign_an_eigensolver_leaves_open(monkeypatch):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(50, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
    got, _ = study.pca_vectors(x, 4, 0.5)
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: (eigh(a)[0], -eigh(a)[1]))  # the other LAPACK's signs
    flipped, _ = study.pca_vectors(x, 4, 0.5)
    np.testing.assert_array_equal(flipped, got)
    assert (got[np.abs(got).argmax(0), np.arange(4)] > 0).all()


def test_cpu_projection_scales_each_arm_by_its_planned_runs():
    recs = [{"name": "palstm/baseline", "seed": 0, "cpu_seconds": 1800.0},
            {"name": "palstm/jrrelp", "seed": 0, "cpu_seconds": 3600.0}]
    line = study.cpu_projection(recs, {"palstm/baseline": [0, 1, 2], "palstm/jrrelp": [0, 1, 2]})
    # 3 x 0.5 h + 3 x 1 h = 4.5 h planned, 2 x 0.5 + 2 x 1 = 3 h left; 20 pairs: 20 x 1.5 h = 30 h
    assert "4.50 CPU-hours for the 6 planned runs (3.00 still to run); 20 paired seeds" in line
    assert "would take 30.00 CPU-hours" in line and "palstm/baseline 30.0 CPU-min/run (1 run)" in line
    assert study.cpu_projection([], {"palstm/baseline": [0]}) is None


# ------------------------------------------------------------------------------------------------------ ConvE


def test_best_round_keeps_the_earliest_of_a_tie():
    curve = [{"round": 1, "mrr": 0.2}, {"round": 2, "mrr": 0.3}, {"round": 3, "mrr": 0.3}, {"round": 4, "mrr": 0.1}]
    assert conve.best_round(curve) == (0.3, 2)
    assert conve.best_round(curve[:1]) == (0.2, 1)


def test_trend_compares_the_last_five_rounds_with_the_five_before():
    def curve(values):
        return [{"round": i + 1, "mrr": v} for i, v in enumerate(values)]

    assert conve.trend(curve([0.1] * 9)).startswith("not judged: 9 round(s)")
    rising = conve.trend(curve([0.1] * 5 + [0.2] * 5))
    assert rising.startswith("still rising (mean 0.2000 over rounds 6-10 against 0.1000 over rounds 1-5, +100.0 %)")
    # rounds 3-7 mean 0.2, rounds 8-12 mean 0.2 + 0.001: +0.5 %, within the 1 % of a plateau
    assert conve.trend(curve([0.0, 0.0, *[0.2] * 5, *[0.201] * 5])).startswith("at a plateau (")
    assert conve.trend(curve([0.3] * 5 + [0.2] * 5)).startswith("falling (")
    assert conve.above_baseline(curve([0.01, 0.02, 0.05, 0.04]), 0.02)["round"] == 3
    assert conve.above_baseline(curve([0.01, 0.02]), 0.02) is None


def _tiny_kg(folder: Path) -> Path:
    kg = folder / "kg" / "wn18rr"
    kg.mkdir(parents=True)
    names = [f"e{i}" for i in range(12)]
    for split, n in (("train", 40), ("valid", 6), ("test", 6)):
        rows = [f"{names[(3 * i + len(split)) % 12]}\tr{i % 3}\t{names[(5 * i + 1) % 12]}" for i in range(n)]
        (kg / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return kg.parent


def test_conve_resume_after_tied_rounds_scores_the_round_training_kept(records, monkeypatch):
    from knotwork.relations.jrrelp import linkpred

    def flat(model, triples, split, **options):  # every round ties: training keeps round 1 in best.pt
        return {"mrr": 0.25, "mr": 4.0, "hits@1": 0.1, "hits@3": 0.3, "hits@10": 0.9, "n_triples": 6}

    monkeypatch.setattr(linkpred, "evaluate_link_prediction", flat)
    base = ["--data", str(_tiny_kg(records)), "--datasets", "wn18rr", "--steps", "1", "--cache", str(records / "c"),
            "--records", str(records / "r"), "--out", str(records / "conve.md"), "--threads", "1"]
    conve.main([*base, "--rounds", "2"])
    conve.main([*base, "--rounds", "3"])  # resumes after round 2; it raised "best.pt does not hold round 2" before
    folder = records / "r" / "conve"
    test = json.loads((folder / "wn18rr__test.json").read_text())["data"]
    assert (test["rounds"], test["best_round"], test["threads"]) == (3, 1, 1)
    text = (records / "conve.md").read_text()
    assert "not judged: 3 round(s)" in text and "never exceeded the relation-frequency baseline" in text
    # the page states the rounds run of those planned, and the threads the records were made with
    assert "**wn18rr: complete, 3 of 3 planned rounds.**" in text and "rounds run with 1 torch thread(s)" in text
    conve.main([*base, "--rounds", "5", "--report-only", "--threads", "2"])  # a rendering with other settings
    text = (records / "conve.md").read_text()
    assert "**wn18rr: PARTIAL, 3 of 5 planned rounds** (the run stopped at its deadline; the valid MRR is not " \
           "judged: 3 round(s)" in text
    assert "rounds run with 1 torch thread(s)" in text and "2 torch thread(s)" not in text
