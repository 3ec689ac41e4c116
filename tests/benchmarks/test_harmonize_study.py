"""The harmonization study's statistics and page (benchmarks/harmonize_study_report.py), on hand-worked cases,
scipy, and synthetic records (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import harmonize_study_lib as lib  # noqa: E402
import harmonize_study_report as report  # noqa: E402


def test_paired_test_matches_scipy_and_a_hand_interval():
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.7, 0.05, 9), rng.normal(0.68, 0.05, 9)
    r = report.paired_test(a, b)
    assert r["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)
    assert r["mean"] == pytest.approx(np.mean(a - b))
    assert r["wins"] + r["losses"] + r["ties"] == 9
    # d = 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    hand = report.paired_test([1, 2, 3], [0, 0, 0])
    assert (hand["lo"], hand["hi"]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    # nine positive distinct differences: the exact two-sided signed-rank p is 2 / 2**9
    assert report.paired_test(np.arange(1, 10) / 100, np.zeros(9))["p_w"] == pytest.approx(2 / 2**9)
    flat = report.paired_test([0.5, 0.5], [0.4, 0.4])  # every difference equal: no t test, Wilcoxon defined
    assert np.isnan(flat["p_t"]) and flat["wins"] == 2


def test_bootstrap_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(0)
    d = rng.normal(0.01, 0.05, (4, 7))
    out = report.bootstrap_diff(d, draws=300, seed=5)
    draw = np.random.default_rng(5)
    seeds, vols = draw.integers(0, 4, (300, 4)), draw.integers(0, 7, (300, 7))
    means = np.array([d[np.ix_(s, v)].mean() for s, v in zip(seeds, vols, strict=True)])
    assert (out["lo"], out["hi"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert out["p"] == pytest.approx(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    const = report.bootstrap_diff(np.full((3, 5), 0.02), draws=50)
    assert (const["lo"], const["hi"], const["p"]) == pytest.approx((0.02, 0.02, 0.0))


BUDGET = lib.Budget(cases=(5, 2, 2))


def _records(effect=0.03, lost=(), drop=(), seeds=range(9)):
    """Synthetic records: every condition scores base + noise, `hm` `effect` more (one value or one per seed);
    ``lost`` = (condition, seed)
    runs whose anterior class collapsed; ``drop`` = units never finished."""
    rng = np.random.default_rng(1)
    names = [f"case{i}" for i in range(BUDGET.cases[0])]
    base = rng.uniform(0.6, 0.8, (9, BUDGET.cases[0], 2))
    out = {}
    for c in lib.DEFAULT_CONDITIONS:
        for s in seeds:
            if (c, s) in drop:
                continue
            dice = base[s] + rng.normal(0, 0.002, base[s].shape) + (np.broadcast_to(effect, 9)[s] if c == "hm" else 0.0)
            if (c, s) in lost:
                dice[:, 0] = 0.01
            curve = [{"iteration": i * 60, "loss": 1.0 / i, "train_soft_dice": [0.7, 0.7]} for i in range(1, 11)]
            data = {"condition": c, "seed": s, "budget": BUDGET.as_dict(), "test_volumes": names,
                    "dice": dice.tolist(), "class_dice": dice.mean(0).tolist(), "mean_dice": float(dice.mean()),
                    "w1": None if c == "no-D1" else 0.01, "parameters": 85195, "curve": curve,
                    "cpu_seconds": {"prepare": 1.0, "train": 100.0, "evaluate": 1.0, "total": 102.0}}
            out[lib.unit_name(c, s)] = {"fingerprint": "f", "code_used": "c", "data": data}
    return out


def _study(records, seeds=range(9)):
    return report.collect(records, BUDGET, list(lib.DEFAULT_CONDITIONS), list(seeds))


def test_primary_tests_are_holm_corrected_over_the_primaries_only():
    st = _study(_records())
    primary, explore = report.comparisons(st)
    assert [(r["a"], r["b"]) for r in primary] == list(lib.PRIMARY)
    assert [r["p_holm"] for r in primary] == pytest.approx(report.holm([r["p_t"] for r in primary]))
    n = len(lib.DEFAULT_CONDITIONS)
    assert len(explore) == n * (n - 1) // 2 - len(lib.PRIMARY) and all("p_holm" not in r for r in explore)
    text = " ".join(report.verdict(st, primary))
    assert "`hm` beat `zscore`" in text and "**Yes** here" in text and "no class collapsed in any of the 9" in text


def test_verdict_says_not_tested_when_the_baseline_loses_a_class_and_no_difference_without_effect():
    st = _study(_records(lost={("no-D1", 3)}))
    text = " ".join(report.verdict(st, report.comparisons(st)[0]))
    assert "**Not tested at this budget**" in text and "in 1 of 9 seeds" in text and "claim)? **Not tested at this budget**" in text
    st = _study(_records(effect=[0.01, -0.01] * 4 + [0.0]))  # mean +0.0 with a spread of 0.01
    text = " ".join(report.verdict(st, report.comparisons(st)[0]))
    assert "No difference between `hm` and `zscore` was detected" in text and "claim)? **Not shown**" in text


def test_page_marks_unfinished_units_and_collapsed_runs(tmp_path):
    recs = _records(lost={("zscore", 2)}, drop={("nyul", 8), ("hm", 7)})
    st = _study(recs)
    assert st.missing == ["hm-seed7", "nyul-seed8"]
    page = report.render(st, command="python benchmarks/harmonize_study.py", page=tmp_path / "h.md",
                         script=Path(lib.__file__).with_name("harmonize_study.py"), records=recs)
    text = page.read_text()
    assert "**Unfinished units (2):** hm-seed7, nyul-seed8" in text and "**Partial**" in text
    per_seed = text.split("**Per seed**")[1].split("## Primary")[0]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in per_seed.splitlines() if line.startswith("| ")}
    assert rows["nyul"][8] == "… |" and rows["zscore"][2].endswith("*") and rows["hm"][7] == "…"
    assert "| zscore | " in text and "| 1 of 9 |" in text  # one zscore run with a collapsed class
    assert "| `hm` − `zscore` | 8 |" in text  # hm seed 7 is missing: 8 paired seeds
    assert (tmp_path / "harmonize_study.png").read_bytes()[:4] == b"\x89PNG"


def test_records_of_another_budget_are_not_reported():
    recs = _records()
    recs["no-D1-seed0"]["data"]["budget"] = {**BUDGET.as_dict(), "iterations": 5}
    st = _study(recs)
    assert st.ignored == ["no-D1-seed0"] and st.missing == ["no-D1-seed0"]


def test_a_page_that_fails_to_render_does_not_stop_the_units(tmp_path, monkeypatch):
    import _common
    import harmonize_study as study

    def unit(cond, seed, budget):  # stands for a trained unit
        return {"condition": cond, "seed": seed, "class_dice": [0.5, 0.4], "cpu_seconds": {"total": 1.0},
                "code_used": "x"}

    renders = []

    def broken_page():
        renders.append(1)
        raise ValueError("no page today")

    monkeypatch.setattr(lib, "run_unit", unit)
    study.run([("no-D1", 0), ("no-D1", 1)], BUDGET, jobs=1, records=tmp_path, on_record=broken_page)
    assert len(renders) == 2  # tried after each unit; the second unit ran although the first page failed
    assert sorted(_common.load_records(BUDGET.study, root=tmp_path)) == ["no-D1-seed0", "no-D1-seed1"]
