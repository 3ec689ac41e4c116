"""Noise injection, simulated annotators and re-evaluation against direct re-computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.relations import reevaluate, score
from knotwork.relations.simulate import confusion_noise_weights, inject_label_noise, simulate_annotations


def test_noise_rate_is_exact_and_follows_weights():
    y = np.repeat(np.arange(4), 250)
    w = np.zeros((4, 4))
    w[0, 1] = w[1, 0] = w[2, 3] = w[3, 2] = 1.0  # only swaps 0<->1 and 2<->3 allowed
    noisy, flipped = inject_label_noise(y, rate=0.2, weights=w, seed=0)
    assert flipped.sum() == 200 and (noisy != y).sum() == 200
    pairs = set(zip(y[flipped].tolist(), noisy[flipped].tolist(), strict=True))
    assert pairs <= {(0, 1), (1, 0), (2, 3), (3, 2)}
    again, _ = inject_label_noise(y, rate=0.2, weights=w, seed=0)
    np.testing.assert_array_equal(noisy, again)


def test_confusion_noise_weights_negative_share():
    conf = np.array([[50, 5, 1], [10, 40, 8], [2, 9, 30]])
    w = confusion_noise_weights(conf, negative_index=0, negative_share=0.5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(np.diag(w) == 0) and w[1, 0] == 0.5 and w[2, 0] == 0.5
    assert w[0, 1] > w[0, 2]  # no_relation flips follow the confusions (5+1 vs 1+1)


def test_simulated_annotators_have_their_accuracy():
    truth = pd.Series(np.random.default_rng(0).choice(list("abcd"), 4000), index=range(4000))
    workers = pd.Series([0.9, 0.6], index=["good", "poor"])
    ans = simulate_annotations(truth, workers, n_per_task=2, seed=1)
    acc = (ans["label"].to_numpy() == truth.loc[ans["task"]].to_numpy())
    by_worker = pd.Series(acc).groupby(ans["worker"].to_numpy()).mean()
    assert by_worker["good"] == pytest.approx(0.9, abs=0.02) and by_worker["poor"] == pytest.approx(0.6, abs=0.03)


def _toy():
    ids = [f"i{k}" for k in range(8)]
    before = dict(zip(ids, ["r1", "r1", "r2", "no_relation", "no_relation", "r2", "r1", "no_relation"], strict=True))
    after = {**before, "i3": "r1", "i5": "no_relation"}
    del after["i7"]  # the new version removes an example
    preds = {
        "m1": dict(zip(ids, ["r1", "r1", "r2", "r1", "no_relation", "r2", "no_relation", "r2"], strict=True)),
        "m2": dict(zip(ids, ["r1", "r2", "r2", "no_relation", "no_relation", "no_relation", "r1", "no_relation"], strict=True)),
        "m3": dict(zip(ids, ["r2", "r1", "no_relation", "r1", "r1", "r2", "r1", "no_relation"], strict=True)),
    }
    return ids, before, after, preds


def test_reevaluate_matches_direct_scores():
    ids, before, after, preds = _toy()
    r = reevaluate(preds, before, after, n_bootstrap=50, seed=0)
    for m in r.models:
        kb = sorted(before)
        ka = sorted(after)
        assert m.f1_before == score([before[i] for i in kb], [preds[m.model][i] for i in kb]).f1
        assert m.f1_after == score([after[i] for i in ka], [preds[m.model][i] for i in ka]).f1
        assert m.ci_delta[0] <= m.ci_delta[1]
    fb = [m.f1_before for m in r.models]
    fa = [m.f1_after for m in r.models]
    assert r.kendall_tau == pytest.approx(kendalltau(fb, fa).statistic)
    flips = sum((fb[i] - fb[j]) * (fa[i] - fa[j]) < 0 for i in range(3) for j in range(i + 1, 3))
    assert r.n_flips == flips
    # per-relation F1 of r1 only: positives other than r1 are treated as no_relation
    kb = sorted(before)
    g = [before[i] if before[i] == "r1" else "no_relation" for i in kb]
    p = [preds["m1"][i] if preds["m1"][i] == "r1" else "no_relation" for i in kb]
    assert r.per_relation["r1"]["m1"][0] == score(g, p).f1


def test_reevaluate_names_missing_prediction():
    ids, before, after, preds = _toy()
    del preds["m2"]["i4"]
    with pytest.raises(ValueError, match=r"model 'm2' has no prediction for 1 id\(s\), e.g. \['i4'\]"):
        reevaluate(preds, before, after, n_bootstrap=0)


def test_cli_reevaluate(tmp_path):
    import json

    from tests.relations.conftest import make_example

    ids, before, after, preds = _toy()
    (tmp_path / "before.json").write_text(json.dumps([make_example(i, before[i]) for i in ids]))
    (tmp_path / "after.json").write_text(json.dumps([make_example(i, after[i]) for i in ids if i in after]))
    files = []
    for m, p in preds.items():
        f = tmp_path / f"{m}.txt"
        f.write_text("".join(f"{p[i]}\n" for i in ids))
        files.append(str(f))
    result = CliRunner().invoke(
        app, ["relations", "reevaluate", str(tmp_path / "before.json"), str(tmp_path / "after.json"), *files, "--n-bootstrap", "20",
              "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    direct = reevaluate(preds, before, after, n_bootstrap=20, seed=0)
    assert [m["f1_after"] for m in out["models"]] == [m.f1_after for m in direct.models]


def test_reevaluate_reports_progress_through_a_callback():
    ids, before, after, preds = _toy()
    done = []
    quiet = reevaluate(preds, before, after, n_bootstrap=7, seed=3)
    loud = reevaluate(preds, before, after, n_bootstrap=7, seed=3, progress=done.append)
    assert sum(done) == 7 and loud == quiet  # reporting progress changes nothing
