"""The DBA study (benchmarks/dba_study.py, dba_protocol.py, dba_page.py): validation carving, the learning-rate
ladder and grid growth, the plan from records, lockstep training with patience, paired tests, and a tiny run of
the whole study (units, resume, page rows) on a synthetic MNIST-format file in a temporary folder."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dba_page as page  # noqa: E402
import dba_protocol as protocol  # noqa: E402
import dba_study  # noqa: E402

from knotwork._errors import RunError  # noqa: E402
from knotwork.train.mlp import balanced_subset  # noqa: E402


def test_validation_is_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 7)
    idx = balanced_subset(labels, 5, np.random.default_rng(0))
    train, val = protocol.carve_validation(idx, labels, 2, np.random.default_rng(1))
    assert np.bincount(labels[val]).tolist() == [2] * 10
    assert np.bincount(labels[train]).tolist() == [3] * 10
    assert not set(train) & set(val) and set(train) | set(val) == set(idx)


def test_prepare_draws_what_the_command_draws():
    """The scored runs of the study use the draw of `knotwork dba train --per-class P --seed S`."""
    rng = np.random.default_rng(0)
    data = {"x_train": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), "y_train": np.repeat(np.arange(10), 5),
            "x_test": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), "y_test": np.arange(7)}
    x, y, evals = protocol.prepare(data, 3, 4, 0.2, "final")
    idx = balanced_subset(data["y_train"], 3, np.random.default_rng([4, 3]))
    np.testing.assert_array_equal(x.numpy(), data["x_train"][idx].reshape(30, -1) / np.float32(255))
    assert y.tolist() == data["y_train"][idx].tolist() and evals["test"][1].tolist() == list(range(7))
    x, y, evals = protocol.prepare(data, 3, 4, 0.4, "tune")  # one of three held out per class
    assert len(y) == 20 and len(evals["val"][1]) == 10


# ------------------------------------------------------------------------------------------------ grids


def test_ladder_and_grid_growth_hand_cases():
    assert [protocol.lr_of(k) for k in (-7, -6, -5, -3, -2, -1, 0, 1)] == [3e-4, 1e-3, 3e-3, 0.03, 0.1, 0.3, 1, 3]
    assert [protocol.lr_of(k) for k in protocol.START["sgd"]] == [0.03, 0.1, 0.3]
    assert [protocol.lr_of(k) for k in protocol.START["adam"]] == [3e-4, 1e-3, 3e-3]
    bounds = (-8, 1)
    assert protocol.widen([-3, -2, -1], -1, bounds) == [-3, -2, -1, 0]  # top edge: add 1
    assert protocol.widen([-3, -2, -1], -3, bounds) == [-4, -3, -2, -1]  # bottom edge: add 0.01
    assert protocol.widen([-3, -2, -1], -2, bounds) is None  # interior
    assert protocol.widen([-1, 0, 1], 1, bounds) is None  # at the hard upper bound (3)
    assert protocol.widen([-8, -7, -6], -8, bounds) is None
    assert protocol.edge_status([-3, -2, -1], -2, bounds) == "interior"
    assert protocol.edge_status([-1, 0, 1], 1, bounds) == "at the upper hard bound"
    assert protocol.edge_status([-8, -7], -8, bounds) == "at the lower hard bound"


BUDGET = protocol.Budget(seeds=(0, 1), tune_seeds=(1000,), min_steps=50, max_steps=100, patience=2, data_sha="x")
SETTING = protocol.Setting(10)


def tune_record(unit: protocol.Unit, accs, *, losses=None, stopped="patience") -> dict:
    ckpts = [25 * (i + 1) for i in range(len(accs))]
    losses = losses or [1.0] * len(accs)
    return {"unit": unit.name, "data": {"args": unit.args, "checkpoints": ckpts, "mean_val_acc": list(accs),
                                        "mean_val_loss": list(losses), "stopped": stopped,
                                        "steps_run": ckpts[-1], "cpu_seconds": 1.0}}


def baseline_units(opt: str, ks) -> list[protocol.Unit]:
    return [protocol.tune_unit_for(SETTING, opt, protocol.spec_for(SETTING, opt, k, BUDGET), BUDGET) for k in ks]


def test_plan_grows_an_edge_choice_then_tunes_dba_on_the_better_baselines_grid():
    sgd, adam = baseline_units("sgd", (-3, -2, -1)), baseline_units("adam", (-7, -6, -5))
    plan = protocol.plan(SETTING, BUDGET, {})
    assert [u.name for u in plan.needed] == [u.name for u in sgd + adam]
    assert [u.name for u in sgd] == ["tune-pc10-sgd-lr0.03", "tune-pc10-sgd-lr0.1", "tune-pc10-sgd-lr0.3"]
    records = {u.name: tune_record(u, acc) for u, acc in zip(sgd, ([0.5], [0.6], [0.7]), strict=True)}
    records |= {u.name: tune_record(u, acc) for u, acc in zip(adam, ([0.5], [0.9, 0.6], [0.4]), strict=True)}
    plan = protocol.plan(SETTING, BUDGET, records)
    # SGD's best (0.3) sits at the top of its grid: one more point, 1; Adam's best (1e-3) is interior, so its
    # scored runs may start while SGD's grid grows.
    assert [u.name for u in plan.needed] == ["tune-pc10-sgd-lr1", "run-pc10-adam-seed0", "run-pc10-adam-seed1"]
    assert plan.families["adam"].done and plan.families["adam"].choice.step == 25
    assert plan.runs["adam"][1].args | {"spec": None} == {
        "setting": "pc10", "per_class": 10, "method": "adam", "spec": None, "seed": 1, "chosen_step": 25,
        "steps": 50, "eval_every": 25, "data_sha": "x"}
    (grown,) = baseline_units("sgd", (0,))
    records[grown.name] = tune_record(grown, [0.65])
    plan = protocol.plan(SETTING, BUDGET, records)
    sgd_fam = plan.families["sgd"]
    assert sgd_fam.ks == [-3, -2, -1, 0] and sgd_fam.choice.k == -1 and sgd_fam.edge == "interior"
    assert plan.best_baseline == "adam"  # 0.9 > 0.7 on validation
    tune = [u for u in plan.needed if u.kind == "tune"]
    assert len(tune) == 4 * 3 and "tune-pc10-dba_adam_snr_min0.5-lr0.001" in [u.name for u in tune]
    assert all(u.args["spec"]["optimizer"] == "adam" and u.args["spec"]["dba"] for u in tune)
    assert {u.name for u in plan.needed if u.kind == "run"} == {f"run-pc10-{m}-seed{s}" for m in ("sgd", "adam")
                                                                for s in (0, 1)}


def test_plan_redoes_stale_records_and_never_chooses_a_diverged_rate():
    sgd, adam = baseline_units("sgd", (-3, -2, -1)), baseline_units("adam", (-7, -6, -5))
    records = {u.name: tune_record(u, [0.6 if u is adam[1] else 0.5]) for u in sgd + adam}
    stale = dict(records[sgd[0].name]["data"]["args"], min_steps=10)  # made with another budget
    records[sgd[0].name]["data"]["args"] = stale
    assert [u.name for u in protocol.plan(SETTING, BUDGET, records).needed if u.kind == "tune"] == [sgd[0].name]
    records[sgd[0].name] = tune_record(sgd[0], [0.5])
    records[sgd[1].name] = tune_record(sgd[1], [0.99], stopped="diverged")  # would win, but diverged
    records[sgd[2].name] = tune_record(sgd[2], [0.5], losses=[0.5])  # ties 0.03 on accuracy, lower loss
    plan = protocol.plan(SETTING, BUDGET, records)
    assert plan.families["sgd"].choice.k == -1  # 0.3, at the edge: the grid grows
    assert "tune-pc10-sgd-lr1" in [u.name for u in plan.needed]
    assert plan.families["sgd"].ks == [-3, -2, -1, 0]


class Scripted:
    """A stand-in trainer whose accuracy at step s is script[s - 1] (and diverges at ``diverge``)."""

    def __init__(self, script, diverge=None):
        self.script, self.diverge, self.steps_done, self.diverged_at = script, diverge, 0, None
        self.x_train = self.y_train = None

    def step(self):
        self.steps_done += 1
        if self.steps_done == self.diverge:
            self.diverged_at = self.steps_done
        return 0.0

    def accuracy(self, x, y):
        return self.script[self.steps_done - 1]

    def loss(self, x, y):
        return 1.0


def test_lockstep_stops_on_patience_divergence_or_the_cap():
    kw = {"eval_every": 1, "min_steps": 3, "max_steps": 10}
    a, b = Scripted([0.1, 0.5, 0.5, 0.5, 0.5, 0.9] + [0.9] * 4), Scripted([0.3] * 10)
    out = protocol.train_lockstep([a, b], [(None, None)] * 2, patience=2, **kw)
    # Means 0.2, 0.4, 0.4, 0.4: no improvement at steps 3 and 4, and step 4 >= min_steps: stop there.
    assert out["stopped"] == "patience" and out["checkpoints"] == [1, 2, 3, 4]
    assert out["mean_acc"] == pytest.approx([0.2, 0.4, 0.4, 0.4])
    out = protocol.train_lockstep([Scripted([0.1] * 10)], [(None, None)], patience=1, **kw)
    assert out["checkpoints"] == [1, 2, 3]  # min_steps holds the stop back to step 3
    out = protocol.train_lockstep([Scripted([0.5] * 10), Scripted([0.5] * 10, diverge=3)], [(None, None)] * 2,
                                  patience=2, **kw)
    assert out["stopped"] == "diverged" and out["checkpoints"] == [1, 2] and out["steps_run"] == 3
    out = protocol.train_lockstep([Scripted([i / 10 for i in range(10)])], [(None, None)], patience=2,
                                  **{**kw, "eval_every": 4})
    assert out["stopped"] == "max_steps" and out["checkpoints"] == [4, 8, 10]


# ------------------------------------------------------------------------------------------------ statistics


def exact_wilcoxon(d) -> float:
    """Two-sided exact signed-rank p by enumerating every sign pattern (distinct non-zero |d|)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w = ranks[np.asarray(d) > 0].sum()
    n = len(d)
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in itertools.product((0, 1), repeat=n)]
    w_min = min(w, n * (n + 1) // 2 - w)
    return min(1.0, 2 * sum(s <= w_min for s in sums) / 2**n)


def test_paired_matches_the_hand_formulas():
    from scipy import stats

    a = np.array([73.1, 74.0, 72.5, 75.2, 73.9, 74.4, 72.8, 73.3])
    b = np.array([72.0, 74.3, 71.0, 73.0, 73.5, 72.4, 72.1, 71.6])
    d = a - b
    r = page.paired(a, b)
    sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 7)
    t = d.mean() / (sd / math.sqrt(8))
    assert r["mean"] == pytest.approx(d.mean()) and r["sd"] == pytest.approx(sd)
    assert r["p_t"] == pytest.approx(2 * stats.t.sf(abs(t), 7))
    half = stats.t.ppf(0.975, 7) * sd / math.sqrt(8)
    assert (r["lo"], r["hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r["p_w"] == pytest.approx(exact_wilcoxon(d))
    assert page.judge(r) == "better"  # 7 of 8 positive: t p ~ 0.005, Wilcoxon p = 0.016
    assert page.judge(page.paired(b, a)) == "worse"
    same = page.paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(same["p_t"]) and math.isnan(same["p_w"]) and page.judge(same) == "no difference detected"
    assert page.judge(page.paired([1.0], [0.0])) == "too few seeds"


# ------------------------------------------------------------------------------------------------ a tiny study


@pytest.fixture
def fake_mnist(tmp_path):
    """A synthetic MNIST-format file: a fixed pattern per class plus noise (learnable in a few steps)."""
    rng = np.random.default_rng(0)
    proto = rng.integers(0, 256, (10, 28, 28))

    def make(n):
        y = np.repeat(np.arange(10), n)
        return np.clip(proto[y] * 0.5 + rng.integers(0, 128, (len(y), 28, 28)), 0, 255).astype(np.uint8), y

    (xt, yt), (xs, ys) = make(6), make(5)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


@pytest.mark.slow
def test_tiny_study_writes_units_resumes_and_renders_rows(fake_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(protocol, "DBA_CONFIGS", {"snr": ("snr", 0.0)})  # one DBA family: fewer units
    records, out = tmp_path / "records", tmp_path / "pages" / "dba.md"
    argv = ["--data", str(fake_mnist), "--per-class", "4", "--seeds", "2", "--tune-seeds", "1", "--steps", "2",
            "--max-steps", "4", "--patience", "1", "--eval-every", "2", "--jobs", "1", "--records", str(records),
            "--out", str(out)]
    assert dba_study.main(argv) == 0
    folder = records / "dba"
    recs = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    for name in ("tune-pc4-sgd-lr0.1", "tune-pc4-adam-lr0.001", "run-pc4-sgd-seed1", "run-pc4-dba-seed0",
                 "run-pc4-dba_random-seed1"):
        assert name in recs, sorted(recs)
    assert any(n.startswith("tune-pc4-dba_adam_") or n.startswith("tune-pc4-dba_sgd_") for n in recs)
    run = recs["run-pc4-dba-seed0"]["data"]
    assert run["checkpoints"][-1] == run["args"]["steps"] and run["args"]["chosen_step"] in run["checkpoints"]
    assert len(run["test_acc"]) == len(run["train_acc"]) == len(run["checkpoints"]) and run["n_test"] == 50
    assert all(r["code_used"] == recs["run-pc4-sgd-seed0"]["code_used"] for r in recs.values())

    text = out.read_text()
    assert f"- Code fingerprint: all {len(recs)} records share" in text and "- Status: complete" in text
    # Per-seed rows, the results row of DBA and its paired test rows come from the records.
    dba = [100 * recs[f"run-pc4-dba-seed{s}"]["data"]["test_at_step"] for s in (0, 1)]
    sgd = [100 * recs[f"run-pc4-sgd-seed{s}"]["data"]["test_at_step"] for s in (0, 1)]
    assert re.search(rf"^\| 1 \| {sgd[1]:.2f} / [\d.]+ \| ", text, flags=re.M)
    assert re.search(rf"^\| DBA \+ \w+ \| .* \| 2/2 \| {np.mean(dba):.2f} ± {np.std(dba, ddof=1):.2f} \|", text,
                     flags=re.M)
    assert f"| DBA − SGD{' (validated better)' if 'dba_sgd' in str(sorted(recs)) else ''} | 2 | " \
           f"{np.mean(dba) - np.mean(sgd):+.2f} |" in text
    assert "| DBA − ablation: random subset of the same size | 2 |" in text
    assert "## Verdict at this budget" in text and (tmp_path / "pages" / "dba_curves_pc4.png").is_file()

    capsys.readouterr()
    mtimes = {p: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert dba_study.main([*argv, "--force"]) == 0  # everything recorded: nothing runs
    assert "done " not in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.json")} == mtimes
    (folder / "run-pc4-adam-seed1.json").unlink()
    assert dba_study.main([*argv, "--force"]) == 0
    assert re.findall(r"done (\S+)", capsys.readouterr().err) == ["run-pc4-adam-seed1"]


TINY = ["--per-class", "4", "--seeds", "2", "--tune-seeds", "1", "--steps", "2", "--max-steps", "4", "--patience", "1",
        "--eval-every", "2"]


def _numbers(folder: Path) -> dict[str, dict]:
    """Each record's data less its timings: what a unit computed."""
    recs = {p.stem: json.loads(p.read_text())["data"] for p in folder.glob("*.json")}
    return {u: {k: v for k, v in d.items() if k not in ("cpu_seconds", "wall_seconds", "seconds")} for u, d in recs.items()}


@pytest.mark.slow
def test_a_failing_page_marks_no_unit_failed_and_keeps_every_record(fake_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(protocol, "DBA_CONFIGS", {"snr": ("snr", 0.0)})
    monkeypatch.setattr(dba_study, "PAGE_EVERY_S", 0.0)  # render after every unit, as a long study does

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(dba_study.page, "render", boom)
    records = tmp_path / "records"
    argv = ["--data", str(fake_mnist), *TINY, "--jobs", "1", "--records", str(records), "--out", str(tmp_path / "dba.md")]
    with pytest.raises(RunError, match=r"^the page was not rendered \(RuntimeError: boom\); the records are kept"):
        dba_study.main(argv)
    err = capsys.readouterr().err
    assert "units failed" not in err and err.count("page not rendered: RuntimeError: boom") > 3
    # Every round ran to the end: the same units as a run whose page renders.
    monkeypatch.undo()
    monkeypatch.setattr(protocol, "DBA_CONFIGS", {"snr": ("snr", 0.0)})
    good = tmp_path / "good"
    assert dba_study.main([*argv[:-4], "--records", str(good), "--out", str(tmp_path / "good.md")]) == 0
    assert sorted(_numbers(records / "dba")) == sorted(_numbers(good / "dba"))
    assert not (tmp_path / "dba.md").exists()


@pytest.mark.slow
def test_two_worker_processes_compute_what_one_process_computes(fake_mnist, tmp_path, monkeypatch):
    """The multi-process path (spawn workers, one thread each) against the in-process one. Seconds of spawning."""
    monkeypatch.setattr(protocol, "DBA_CONFIGS", {"snr": ("snr", 0.0)})
    for jobs in ("1", "2"):
        argv = ["--data", str(fake_mnist), *TINY, "--jobs", jobs, "--records", str(tmp_path / f"r{jobs}"),
                "--out", str(tmp_path / f"dba{jobs}.md")]
        assert dba_study.main(argv) == 0
    one, two = _numbers(tmp_path / "r1" / "dba"), _numbers(tmp_path / "r2" / "dba")
    assert len(one) > 10 and one == two
    page_two = (tmp_path / "dba2.md").read_text()
    assert "- Status: complete" in page_two and "--jobs" not in page_two.split("- Command: ")[1].splitlines()[0]


def test_page_command_leaves_out_what_decides_no_number():
    argv = ["--per-class", "10", "--per-class", "60", "--jobs", "2", "--seeds", "8", "--force", "--out", "x.md",
            "--records=/tmp/r", "--page-only", "--rerun", "--jobs=3", "--val-frac", "0.2"]
    assert dba_study.page_command(argv) == ("python benchmarks/dba_study.py --per-class 10 --per-class 60 --seeds 8 "
                                            "--val-frac 0.2")
    # Abbreviations are refused, so no option can slip past by a shorter name.
    with pytest.raises(SystemExit):
        dba_study.parse_args(["--for"])


def test_time_only_prints_step_times_and_a_projection_and_writes_nothing(fake_mnist, tmp_path, capsys):
    out = tmp_path / "dba.md"
    assert dba_study.main(["--data", str(fake_mnist), "--per-class", "4", "--time-only", "--time-steps", "1",
                           "--out", str(out), "--records", str(tmp_path / "records")]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^pc4 +dba_snr_min0.5 +[\d.]+ +[\d.]+ +[\d.]+$", printed, flags=re.M)
    assert "projected CPU time with the starting grids:" in printed
    assert not out.exists() and not (tmp_path / "records").exists()


def test_study_refuses_an_existing_page_and_bad_budgets(fake_mnist, tmp_path, capsys):
    out = tmp_path / "dba.md"
    out.write_text("old")
    base = ["--data", str(fake_mnist), "--out", str(out)]
    for extra, match in ((["--seeds", "1"], "exists; pass --force"),
                         (["--force", "--steps", "10", "--max-steps", "5"], "--max-steps .5. must be >= --steps"),
                         (["--force", "--per-class", "1"], "--per-class must be >= 2")):
        with pytest.raises(SystemExit):
            dba_study.main(base + extra)
        assert re.search(match, capsys.readouterr().err)
    assert out.read_text() == "old"


def hand_records(test_acc, budget, *, dba_stopped="patience") -> dict:
    """Records for a whole pc10 study, made up by hand: interior choices everywhere (SGD and Adam validate best at
    the middle of their grids, Adam better; DBA best with snr at 1e-3), scored runs with ``test_acc[method][seed]``."""
    records: dict = {}
    while True:
        needed = protocol.plan(SETTING, budget, records).needed
        if not needed:
            return records
        for u in needed:
            if u.kind == "tune":
                k = protocol.START["adam"][1] if u.args["spec"]["optimizer"] == "adam" else protocol.START["sgd"][1]
                middle = math.isclose(u.args["spec"]["lr"], protocol.lr_of(k))
                acc = {"sgd": 0.80, "adam": 0.82}.get(u.args["method"], 0.84 if u.args["method"].endswith("_snr")
                                                      else 0.81)
                rec = tune_record(u, [acc if middle else 0.5, 0.6], stopped=dba_stopped if "_snr" in u.name
                                  else "patience")
            else:
                acc = test_acc[u.args["method"]][u.args["seed"]]
                rec = {"unit": u.name, "data": {
                    "args": u.args, "checkpoints": [25, 50], "test_acc": [acc, acc], "train_acc": [1.0, 1.0],
                    "test_at_step": acc, "train_at_step": 1.0, "diverged_at": None, "n_test": 10000,
                    "mean_sizes": {"0": 40.0, "2": 60.0} if u.args["spec"]["dba"] else {}, "cpu_seconds": 2.0}}
            records[u.name] = rec


def test_page_rows_and_verdict_come_from_the_records():
    budget = protocol.Budget(seeds=tuple(range(8)), tune_seeds=(1000,), min_steps=50, max_steps=100, patience=2,
                             data_sha="x")
    acc = {"sgd": [0.79 + 0.002 * s for s in range(8)], "adam": [0.80 + 0.002 * s for s in range(8)],
           "dba": [0.75 + 0.003 * s for s in range(8)], "dba_random": [0.76 + 0.001 * s for s in range(8)]}
    res = page.collect(SETTING, budget, hand_records(acc, budget))
    text = page.render([res], budget, figures={})
    assert res.plan.best_baseline == "adam" and res.plan.families["dba"].choice.method == "dba_adam_snr"
    assert "| 3 | 79.60 / 100.0 | 80.60 / 100.0 | 75.90 / 100.0 | 76.30 / 100.0 |" in text
    # DBA: mean 75 + 0.3 * 3.5 = 76.05, sd 0.3 * sqrt(6) = 0.73; differences to Adam -5 + 0.1 * s (mean -4.65),
    # all negative; to the random ablation -1 + 0.2 * s (mean -0.30), of both signs.
    assert "| DBA + Adam | Adam lr=0.001; metric=snr, agg=mean, min_size=1 | 25 | 8/8 | 76.05 ± 0.73 |" in text
    assert "| DBA − Adam (validated better) | 8 | -4.65 | [-4.85, -4.45] | < 0.001 | 0.008 | worse |" in text
    assert "DBA tests worse than Adam (validated better): -4.65 pp" in text and "Wilcoxon p = 0.008" in text
    assert "The abstract's 88.07% relative error reduction over SGD/Adam is not reproduced" in text
    assert "DBA against ablation: random subset of the same size: no difference detected, -0.30 pp" in text
    # Trials counted from the plan's grids: 3 learning rates each for SGD and Adam, 4 settings x Adam's 3 for DBA.
    assert ("Tuning trials, each over 1 tuning seed: SGD 3 (3 learning rates), Adam 3 (3 learning rates); DBA + Adam "
            "12 (4 settings of metric and minimum subset size × 3 learning rates). DBA gets more tuning trials than "
            "each baseline") in text
    assert "4 × 3 = 12 when no grid grows, against 3 for SGD and 3 for Adam" in text
    stalled = page.collect(SETTING, budget, hand_records(acc, budget, dba_stopped="max_steps"))
    sentences = page.verdict(stalled, page.paired_table(stalled)[1], budget)
    assert sentences[0].startswith("Not tested at this budget: the validation accuracy of DBA + Adam, DBA + Adam: "
                                   "random subset of the same size were still improving")
