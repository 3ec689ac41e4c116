"""A `knotwork merge` killed (SIGKILL) just before its output is renamed into place leaves no output and only its
temp entry; the next run removes that leftover and writes the same output as a clean run. A kill during a
`--force` replace leaves the previous output intact.

The kill comes from the test hook in knotwork._io (KNOTWORK_TEST_FAULT=atomic_dir:before-rename), in a real
subprocess (`python -m knotwork.cli`), so nothing in this process can tidy up after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import knotwork
from knotwork.merge import load_adapter
from tests.cli_contract import invoke, snapshot
from tests.merge.helpers import random_factors, write_peft_dir

SHAPES = {"enc.0.q": (6, 4), "enc.0.v": (6, 4)}
SRC = str(Path(knotwork.__file__).resolve().parents[1])


def _adapters(root: Path) -> list[Path]:
    return [
        write_peft_dir(root / "runs" / name, random_factors(SHAPES, r, seed=s), r=r, alpha=2 * r)
        for name, r, s in (("a", 2, 1), ("b", 3, 2))
    ]


def _merge_args(adapters: list[Path], out: Path, *extra: str) -> list[str]:
    return ["merge", *map(str, adapters), "--method", "knots-ties", "--topk", "50", "--out", str(out), *extra]


def _killed_run(args: list[str]) -> int:
    """Run ``knotwork ARGS`` in a subprocess that the fault hook kills; return its pid."""
    env = {**os.environ, "KNOTWORK_TEST_FAULT": "atomic_dir:before-rename", "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "knotwork.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr)
    return proc.pid


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_killed_merge_leaves_only_its_temp_entry_and_a_rerun_recovers(tmp_path):
    adapters = _adapters(tmp_path)
    before = snapshot(adapters)
    out = tmp_path / "merged"
    pid = _killed_run(_merge_args(adapters, out))

    assert not out.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "runs")
    assert len(leftovers) == 1 and leftovers[0].startswith(f".merged.knotwork-tmp-{pid}-"), leftovers
    assert snapshot(adapters) == before

    res = invoke(_merge_args(adapters, out))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "runs") == ["merged"]  # the leftover is gone

    clean = tmp_path / "clean"
    assert invoke(_merge_args(adapters, clean)).exit_code == 0
    got, want = _tensors(out), _tensors(clean)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    assert (out / "adapter_config.json").read_text() == (clean / "adapter_config.json").read_text()
    assert snapshot(adapters) == before


def test_kill_during_a_force_replace_keeps_the_previous_output(tmp_path):
    adapters = _adapters(tmp_path)
    out = tmp_path / "merged"
    assert invoke(_merge_args(adapters, out)).exit_code == 0
    previous = snapshot([out])
    previous_deltas = load_adapter(out).deltas()

    pid = _killed_run(_merge_args(adapters, out, "--force", "--scale", "0.5"))
    assert snapshot([out]) == previous  # untouched, byte for byte
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("runs", "merged"))
    assert len(leftovers) == 1 and leftovers[0].startswith(f".merged.knotwork-tmp-{pid}-"), leftovers

    res = invoke(_merge_args(adapters, out, "--force", "--scale", "0.5"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "runs") == ["merged"]
    for name, delta in load_adapter(out).deltas().items():  # the replacement happened: KnOTS-TIES is linear in λ
        torch.testing.assert_close(delta, 0.5 * previous_deltas[name], rtol=1e-5, atol=1e-7)
