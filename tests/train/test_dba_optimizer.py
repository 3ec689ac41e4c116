"""DBA as a torch.optim.Optimizer: schedulers, a complete state_dict, stop-and-resume, GradScaler."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from knotwork.train import DBA

from .conftest import seeded


def _mlp(seed=0):
    return seeded(torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double(), seed)


def _data(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, dtype=torch.float64, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _closure(model, x, y):
    return lambda: F.cross_entropy(model(x), y, reduction="none")


SCHEDULERS = {
    "onecycle": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=6),
    "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6),
    "step": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "lambda": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k)),
}


def test_is_an_optimizer_sharing_the_wrapped_state(mlp):
    sgd = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)
    dba = DBA(mlp, sgd)
    assert isinstance(dba, torch.optim.Optimizer)
    assert dba.param_groups is sgd.param_groups and dba.state is sgd.state and dba.defaults is sgd.defaults
    dba.param_groups[0]["lr"] = 0.25
    assert sgd.param_groups[0]["lr"] == 0.25
    text = repr(dba)
    assert text.startswith("DBA(metric='snr'") and "SGD (" in text and "momentum: 0.9" in text


def test_add_param_group_and_zero_grad_delegate():
    model = _mlp()
    sgd = torch.optim.SGD(model[0].parameters(), lr=0.1)
    model[2].requires_grad_(False)
    dba = DBA(model, sgd)
    model[2].requires_grad_(True)
    dba.add_param_group({"params": list(model[2].parameters()), "lr": 0.01})
    assert len(sgd.param_groups) == 2 and sgd.param_groups[1]["lr"] == 0.01
    x, y = _data()
    F.cross_entropy(model(x), y).backward()
    dba.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedulers_drive_dba_like_a_plain_optimizer(name):
    model, plain = _mlp(), _mlp()
    x, y = _data()
    dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), search="all")
    opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    sched_dba, sched_opt = SCHEDULERS[name](dba), SCHEDULERS[name](opt)
    lrs_dba, lrs_opt = [], []
    for _ in range(6):
        lrs_dba.append(dba.optimizer.param_groups[0]["lr"])
        lrs_opt.append(opt.param_groups[0]["lr"])
        dba.step(_closure(model, x, y))
        opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt.step()
        sched_dba.step()
        sched_opt.step()
    assert lrs_dba == lrs_opt and len(set(lrs_dba)) > 1
    if name == "onecycle":  # OneCycleLR also cycles the momentum it finds in defaults
        assert dba.optimizer.param_groups[0]["momentum"] == opt.param_groups[0]["momentum"]
    # "select all" is the plain step, so the scheduled trajectories agree too.
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


RESUME_CASES = {
    "random_composition": {"metric": "snr", "random_composition": True, "seed": 7, "min_size": 4},
    "default_metric": {},
    "variance_adam": {"metric": "variance", "min_size": 4},
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_stop_and_resume_equals_uninterrupted(case):
    kwargs = RESUME_CASES[case]
    make_opt = (lambda p: torch.optim.Adam(p, lr=0.02)) if case == "variance_adam" else (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    x, y = _data(n=30, seed=2)
    total, stop = 6, 3

    ref = _mlp()
    ref_dba = DBA(ref, make_opt(ref.parameters()), **kwargs)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_dba, T_max=total)
    ref_params, ref_sizes = [], []
    for _ in range(total):
        ref_dba.step(_closure(ref, x, y))
        ref_sched.step()
        ref_params.append([p.detach().clone() for p in ref.parameters()])
        ref_sizes.append(ref_dba.history[-1].sizes)

    first = _mlp()
    dba = DBA(first, make_opt(first.parameters()), **kwargs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(dba, T_max=total)
    for _ in range(stop):
        dba.step(_closure(first, x, y))
        sched.step()
    saved = _roundtrip({"model": first.state_dict(), "dba": dba.state_dict(), "sched": sched.state_dict()})
    assert isinstance(saved["dba"]["dba"]["rng"], torch.Tensor)

    # A fresh process would build everything anew: another model object, optimizer, DBA (another seed even).
    second = _mlp(seed=99)
    second.load_state_dict(saved["model"])
    kwargs2 = dict(kwargs, seed=12345) if "seed" in kwargs else kwargs
    dba2 = DBA(second, make_opt(second.parameters()), **kwargs2)
    dba2.load_state_dict(saved["dba"])
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(dba2, T_max=total)
    sched2.load_state_dict(saved["sched"])
    assert len(dba2.history) == stop and dba2.history == dba.history
    for k in range(stop, total):
        dba2.step(_closure(second, x, y))
        sched2.step()
        assert dba2.history[-1].sizes == ref_sizes[k]
        for p, q in zip(second.parameters(), ref_params[k], strict=True):
            assert torch.equal(p, q), f"step {k}"
    if case == "random_composition":
        assert min(min(s.values()) for s in ref_sizes) < 30  # a real random draw happened


def test_generator_state_restores_the_draws():
    model = _mlp()
    dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=3)
    state = _roundtrip(dba.state_dict())
    assert state["dba"]["rng"].dtype == torch.uint8
    expected = dba._rng.integers(0, 2**32, size=5)
    other = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=4)
    other.load_state_dict(state)
    assert np.array_equal(other._rng.integers(0, 2**32, size=5), expected)


def test_mt19937_generator_state_round_trips():
    model = _mlp()
    dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=np.random.Generator(np.random.MT19937(5)))
    state = _roundtrip(dba.state_dict())
    expected = dba._rng.random(4)
    other = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1))
    other.load_state_dict(state)
    assert np.array_equal(other._rng.random(4), expected)


def test_plain_optimizer_state_dict_still_loads(mlp):
    sgd = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)
    dba = DBA(mlp, sgd)
    dba.load_state_dict(copy.deepcopy(sgd.state_dict()))
    assert dba.history == []


def test_load_refuses_other_options(mlp):
    dba = DBA(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), metric="snr")
    other = DBA(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), metric="variance")
    with pytest.raises(ValueError, match="saved with metric='snr' but this DBA has metric='variance'"):
        other.load_state_dict(dba.state_dict())


def test_step_without_closure_or_capture_is_refused(mlp):
    dba = DBA(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="needs a closure"):
        dba.step()


@pytest.mark.parametrize("search", ["backward", "all"])
def test_capture_then_step_equals_closure_step(search):
    a, b = _mlp(), _mlp()
    x, y = _data(n=20, seed=4)
    dba_a = DBA(a, torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), search=search, min_size=4)
    dba_b = DBA(b, torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), search=search, min_size=4)
    for _ in range(3):
        dba_a.step(_closure(a, x, y))
        dba_b.zero_grad()
        with dba_b.capture():
            F.cross_entropy(b(x), y, reduction="none").sum().backward()
        assert dba_b.step() is None
        assert dba_b.history[-1].sizes == dba_a.history[-1].sizes
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def _scaler(init_scale):
    if not hasattr(torch.amp, "GradScaler"):
        pytest.skip("torch.amp.GradScaler is not available in this torch")
    try:
        return torch.amp.GradScaler("cpu", init_scale=init_scale)
    except Exception as err:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch.amp.GradScaler('cpu') unavailable: {err}")


@pytest.mark.parametrize("init_scale", [1.0, 2.0**16])
def test_grad_scaler_step_matches_unscaled_training(init_scale):
    a, b = _mlp(), _mlp()
    x, y = _data(n=20, seed=6)
    ref = DBA(a, torch.optim.Adam(a.parameters(), lr=0.01), min_size=4)
    dba = DBA(b, torch.optim.Adam(b.parameters(), lr=0.01), min_size=4)
    scaler = _scaler(init_scale)
    for _ in range(3):
        ref.step(_closure(a, x, y))
        dba.zero_grad()
        with dba.capture():
            losses = F.cross_entropy(b(x), y, reduction="none")
            scaler.scale(losses.sum()).backward()
        scaler.step(dba)
        scaler.update()
        assert dba.history[-1].sizes == ref.history[-1].sizes
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        if init_scale == 1.0:
            assert torch.equal(p, q)
        else:  # a power-of-two scale is exact in float64 barring under/overflow
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_grad_scaler_skips_a_step_with_inf():
    model = _mlp()
    dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1), min_size=4)
    scaler = _scaler(2.0**16)
    x, y = _data(n=12, seed=8)
    before = [p.detach().clone() for p in model.parameters()]
    with dba.capture():
        losses = F.cross_entropy(model(x), y, reduction="none")
        scaler.scale(losses.sum() * float("inf")).backward()
    scaler.step(dba)
    scaler.update()
    assert scaler.get_scale() < 2.0**16 and dba.history == []
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_grad_scaler_refuses_explicit_unscale_and_closure():
    model = _mlp()
    dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = _scaler(4.0)
    x, y = _data(n=12)
    with dba.capture():
        scaler.scale(F.cross_entropy(model(x), y, reduction="none").sum()).backward()
    scaler.unscale_(dba)
    with pytest.raises(ValueError, match="without calling scaler.unscale_"):
        scaler.step(dba)
    scaler2 = _scaler(4.0)
    scaler2.scale(F.cross_entropy(model(x), y)).backward()
    with pytest.raises(ValueError, match=r"record the pass with 'with dba.capture\(\):'"):
        scaler2.step(dba, _closure(model, x, y))
