"""Re-evaluation on several label versions: every number against the official scorer run directly on the same
(mapped, restricted, resampled) labels, Kendall's tau against scipy, and the TACRED -> Re-TACRED map against the
paper's table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau, rankdata

from knotwork.relations import RETACRED_LABELS, TACRED_LABELS, reevaluate, score
from knotwork.relations.labelmaps import (
    RETACRED_MAP,
    builtin_label_map,
    check_label_map,
    map_labels,
    patched_labels,
)
from knotwork.relations.patch import Patch, UnknownPatchIdError
from knotwork.relations.reevaluate import LabelVersion, reevaluate_versions, tau_b

NEG = "no_relation"
POS = ["per:title", "per:alternate_names", "org:parents", "org:member_of", "per:age"]


def world(seed: int = 0, n: int = 160, n_models: int = 5):
    """Random gold labels, a relabel-only patch, a filtering patch in Re-TACRED names, and noisy model predictions."""
    rng = np.random.default_rng(seed)
    ids = [f"{k:020x}" for k in range(n)]
    pick = lambda: NEG if rng.random() < 0.5 else POS[rng.integers(len(POS))]  # noqa: E731
    gold = {i: pick() for i in ids}
    relabel = {i: pick() for i in ids if rng.random() < 0.15}
    kept = {i: RETACRED_MAP[pick()] if rng.random() < 0.3 else RETACRED_MAP[gold[i]] for i in ids if rng.random() < 0.8}
    kept.update({i: "per:identity" for i in list(kept)[:10]})
    preds = {f"m{j}": {i: gold[i] if rng.random() < 0.4 + 0.1 * j else pick() for i in ids} for j in range(n_models)}
    return ids, gold, relabel, kept, preds


def versions_of(gold, relabel, kept):
    return {
        "tacred": LabelVersion(gold, labels=TACRED_LABELS),
        "tacrev": LabelVersion({**gold, **relabel}, labels=TACRED_LABELS),
        "retacred": LabelVersion(kept, RETACRED_MAP, labels=RETACRED_LABELS),
        "retacred-id": LabelVersion(kept, RETACRED_MAP, frozenset({"per:identity"}), RETACRED_LABELS),
    }


def direct(version: LabelVersion, pred: dict[str, str], ids: list[str]) -> float:
    """The official scorer on one version, built by hand: its ids, mapped predictions, ignored labels negative."""
    keep = [i for i in ids if i in version.gold]
    g = [version.gold[i] for i in keep]
    p = [(version.label_map or {}).get(pred[i], pred[i]) for i in keep]
    g = [NEG if x in version.ignore else x for x in g]
    p = [NEG if x in version.ignore else x for x in p]
    return score(g, p).f1


def test_point_scores_are_the_official_scorer_on_each_version():
    ids, gold, relabel, kept, preds = world()
    versions = versions_of(gold, relabel, kept)
    r = reevaluate_versions(preds, versions, n_bootstrap=0)
    assert r.versions == tuple(versions) and r.models == tuple(preds)
    for k, m in enumerate(r.models):
        for j, v in enumerate(r.versions):
            assert r.f1[k, j] == direct(versions[v], preds[m], ids)  # bit for bit
    assert r.n_examples == (len(ids), len(ids), len(kept), len(kept))
    assert r.n_positive[3] == sum(lab not in (NEG, "per:identity") for lab in kept.values())
    assert np.isnan(r.f1_interval("m0", "tacred").low)


def test_every_resample_is_the_scorer_on_the_resampled_examples():
    """The engine's counts come from a matrix product; the oracle redraws the same indices and scores the lists."""
    ids, gold, relabel, kept, preds = world(seed=1, n=90)
    versions = versions_of(gold, relabel, kept)
    r = reevaluate_versions(preds, versions, n_bootstrap=70, seed=11)  # > one chunk of 64 resamples
    union = sorted(ids)
    rng = np.random.default_rng(11)
    for b in range(70):
        sample = [union[k] for k in rng.integers(len(union), size=len(union))]
        for j, v in enumerate(r.versions):
            spec = versions[v]
            drawn = [i for i in sample if i in spec.gold]
            for k, m in enumerate(r.models):
                g = [NEG if spec.gold[i] in spec.ignore else spec.gold[i] for i in drawn]
                p = [(spec.label_map or {}).get(preds[m][i], preds[m][i]) for i in drawn]
                p = [NEG if x in spec.ignore else x for x in p]
                assert r.boot_f1[b, k, j] == score(g, p).f1


def test_summaries_against_direct_computation():
    ids, gold, relabel, kept, preds = world(seed=2, n_models=7)
    r = reevaluate_versions(preds, versions_of(gold, relabel, kept), n_bootstrap=200, seed=0)
    fa, fb = r.f1[:, 0], r.f1[:, 2]
    assert r.kendall_tau("tacred", "retacred").value == pytest.approx(kendalltau(fa, fb).statistic)
    shift = r.mean_shift("tacred", "retacred")
    assert shift.value == pytest.approx(np.mean(fb - fa))
    diffs = (r.boot_f1[:, :, 2] - r.boot_f1[:, :, 0]).mean(1)
    assert (shift.low, shift.high) == pytest.approx((np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)))
    flips = sum((fa[i] - fa[j]) * (fb[i] - fb[j]) < 0 for i in range(7) for j in range(i + 1, 7))
    assert r.n_flips("tacred", "retacred") == flips
    sub = ["m1", "m4", "m6"]
    assert r.mean_f1("tacrev", sub).value == pytest.approx(np.mean(r.f1[[1, 4, 6], 1]))
    np.testing.assert_array_equal(r.ranks("tacred"), rankdata(-fa, method="min"))
    moves = r.rank_moves("tacred", "retacred")
    assert sorted(abs(x.move) for x in moves) == sorted(abs(rankdata(-fa, method="min") - rankdata(-fb, method="min")))
    assert abs(moves[0].move) == max(abs(x.move) for x in moves)
    lo, hi = r.rank_interval("tacred").T
    assert np.all(lo <= hi) and np.all((lo >= 1) & (hi <= 7))
    low, high = r.f1_interval("m3", "retacred").low, r.f1_interval("m3", "retacred").high
    assert (low, high) == (np.percentile(r.boot_f1[:, 3, 2], 2.5), np.percentile(r.boot_f1[:, 3, 2], 97.5))
    d = r.to_dict()
    assert len(d["pairs"]) == 6 and d["models"][3]["retacred"]["f1"] == r.f1[3, 2]


def test_tau_b_is_scipys_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(30, 9)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(30, 9)).astype(float)
    ours = tau_b(x, y)
    for row in range(30):
        assert ours[row] == pytest.approx(kendalltau(x[row], y[row]).statistic)
    assert np.isnan(tau_b(np.ones(4), np.arange(4.0)))


def test_two_version_reevaluate_intervals_are_a_direct_bootstrap():
    """`reevaluate` now runs on the vectorised engine; its intervals are those of the plain loop over resamples."""
    ids, gold, relabel, kept, preds = world(seed=3, n=60, n_models=3)
    after = {i: RETACRED_MAP[gold[i]] for i in kept}
    res = reevaluate(preds, gold, after, n_bootstrap=40, seed=5)
    union = sorted(set(gold) | set(after))
    rng = np.random.default_rng(5)
    boot = {m: [] for m in preds}
    for _ in range(40):
        sample = [union[k] for k in rng.integers(len(union), size=len(union))]
        for m, p in preds.items():
            sb = [i for i in sample if i in gold]
            sa = [i for i in sample if i in after]
            boot[m].append((score([gold[i] for i in sb], [p[i] for i in sb]).f1,
                            score([after[i] for i in sa], [p[i] for i in sa]).f1))
    for delta in res.models:
        b = np.array(boot[delta.model])
        assert delta.ci_before == (np.percentile(b[:, 0], 2.5), np.percentile(b[:, 0], 97.5))
        assert delta.ci_delta == (np.percentile(b[:, 1] - b[:, 0], 2.5), np.percentile(b[:, 1] - b[:, 0], 97.5))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda v, p: v["retacred"].__class__(v["retacred"].gold, None, labels=RETACRED_LABELS),
         r"model 'm\d': example \w+: predicted label '(per:alternate_names|org:parents)' is not in the label set of "
         r"version 'retacred' \(40 labels\)"),
        (lambda v, p: LabelVersion({**v["tacred"].gold, "x": "per:pet"}, labels=TACRED_LABELS),
         r"version 'retacred': example x: gold label 'per:pet'"),
        (lambda v, p: LabelVersion(v["retacred"].gold, RETACRED_MAP, frozenset({"per:identiy"}), RETACRED_LABELS),
         r"version 'retacred': ignored label 'per:identiy' is not in its label set"),
    ],
)
def test_labels_are_checked_after_the_map(change, match):
    ids, gold, relabel, kept, preds = world()
    versions = versions_of(gold, relabel, kept)
    versions["retacred"] = change(versions, preds)
    for p in preds.values():
        p["x"] = NEG
    with pytest.raises(ValueError, match=match):
        reevaluate_versions(preds, {"retacred": versions["retacred"]}, n_bootstrap=0)


def test_mapped_label_error_names_the_source_and_both_labels():
    preds = {"m": {"a": "org:parents", "b": "per:title"}}
    version = LabelVersion({"a": "org:members", "b": "per:title"}, {"org:parents": "org:boss"}, labels=RETACRED_LABELS)
    with pytest.raises(ValueError, match=r"^m\.jsonl: example a: predicted label 'org:parents' \(mapped to "
                                         r"'org:boss'\) is not in the label set of version 'v'"):
        reevaluate_versions(preds, {"v": version}, n_bootstrap=0, sources={"m": "m.jsonl"})
    with pytest.raises(ValueError, match=r"m\.jsonl has no prediction for 1 id\(s\), e.g. \['c'\]"):
        reevaluate_versions(preds, {"v": {"a": NEG, "c": NEG}}, n_bootstrap=0, sources={"m": "m.jsonl"})


def test_retacred_map_is_the_papers_table():
    renamed = {lab: RETACRED_MAP[lab] for lab in TACRED_LABELS if RETACRED_MAP[lab] != lab}
    assert renamed == {  # paper §3.3, typed from the method note's table
        "per:alternate_names": "per:identity",
        "org:parents": "org:member_of",
        "org:subsidiaries": "org:members",
        "org:city_of_headquarters": "org:city_of_branch",
        "org:country_of_headquarters": "org:country_of_branch",
        "org:stateorprovince_of_headquarters": "org:stateorprovince_of_branch",
    }
    assert set(RETACRED_MAP) == set(TACRED_LABELS) and set(RETACRED_MAP.values()) == set(RETACRED_LABELS)
    assert [k for k, v in RETACRED_MAP.items() if v == "per:identity"] == ["per:alternate_names"]
    assert builtin_label_map("retacred") == dict(RETACRED_MAP)
    assert map_labels(["org:subsidiaries", "x"], RETACRED_MAP) == ["org:members", "x"]
    with pytest.raises(ValueError, match="unknown built-in label map 'tacrev'"):
        builtin_label_map("tacrev")
    with pytest.raises(ValueError, match=r"m\.json: entry 'a': 3"):
        check_label_map({"a": 3}, source="m.json")


def test_patched_labels_filter_or_relabel_and_map_only_inherited_labels():
    base = {"a": "org:parents", "b": NEG, "c": "per:title"}
    tacrev = Patch({"b": "org:parents"}, drop_missing=False)
    assert patched_labels(base, tacrev) == {"a": "org:parents", "b": "org:parents", "c": "per:title"}
    assert patched_labels(base, tacrev, label_map=RETACRED_MAP) == {"a": "org:member_of", "b": "org:parents",
                                                                    "c": "per:title"}
    assert patched_labels(base, Patch({"c": "per:identity", "a": NEG})) == {"a": NEG, "c": "per:identity"}
    with pytest.raises(UnknownPatchIdError, match=r"p\.json: 1 patch id\(s\) not among the 3 ids .*\['z'\]"):
        patched_labels(base, Patch({"z": NEG}), source="p.json")
