"""`--device` on every trainer: listed by `--help`, and an absent device refused before any input is read.

The capability suites check `--device cuda` with real inputs (tests/train, tests/zipit, tests/relations/jrrelp,
tests/merge); this table checks the rule across all trainers at once, with inputs that do not even exist, so the
device is known to be refused first: one `error:` line, exit 2, nothing written.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from knotwork.cli import app
from tests.cli_commands import PENDING_COMMANDS, PENDING_OPTIONS, is_group, leaf_commands, options, resolve
from tests.cli_contract import refused

# Every command that trains or computes with torch, and the smallest arguments that reach the device check.
# {in} is a path that does not exist, {out} the output path.
TRAINERS = {
    "lora train": ["{in}", "--out", "{out}"],
    "jrrelp train": ["--data", "{in}", "--out", "{out}"],
    "jrrelp linkpred": ["--data", "{in}", "--out", "{out}"],
    "dba train": ["{in}.npz", "--out", "{out}.json"],
    "zipit train": ["{in}.npz", "--out", "{out}.safetensors", "--classes", "0,1"],
    "zipit merge": ["{in}-a.safetensors", "{in}-b.safetensors", "--data", "{in}.npz", "--out", "{out}.safetensors"],
    "merge": ["{in}-a", "{in}-b", "--out", "{out}"],
    "align": ["{in}-a", "{in}-b", "--inputs", "{in}.npy"],
}


def _command_or_skip(name: str):
    """The command ``name``; skipped while it is pending and absent, and while its --device is pending."""
    command, path, _ = resolve(name.split())
    if is_group(command) or " ".join(path) != name:
        if name in PENDING_COMMANDS:
            pytest.skip(f"`knotwork {name}` does not exist yet: {PENDING_COMMANDS[name]}")
        pytest.fail(f"`knotwork {name}` is not a command")
    assert name not in PENDING_COMMANDS, f"`knotwork {name}` exists now: remove it from PENDING_COMMANDS"
    pending = PENDING_OPTIONS.get((name, "--device"))
    if pending is not None:
        if "--device" in options(command):
            pytest.fail(f"`knotwork {name}` has --device now: remove it from PENDING_OPTIONS")
        pytest.skip(f"`knotwork {name}` has no --device yet: {pending}")
    return command


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_help_lists_device(name):
    _command_or_skip(name)
    res = CliRunner().invoke(app, [*name.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "--device <cpu|cuda|mps>" in res.output and "[default: cpu]" in res.output, res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so --device cuda is not refused")
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_absent_cuda_is_refused_before_reading_inputs(name, tmp_path):
    _command_or_skip(name)
    missing, out = tmp_path / "missing", tmp_path / "out"
    args = [a.replace("{in}", str(missing)).replace("{out}", str(out)) for a in TRAINERS[name]]
    refused([*name.split(), *args, "--device", "cuda"],
            match=r"^error: --device cuda: no CUDA device is available on this machine; use --device cpu$",
            out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, whatever the output's suffix


def test_every_command_with_device_is_in_the_table():
    """A new trainer with --device must join TRAINERS, so the two checks above cover it."""
    with_device = {" ".join(path) for path, command in leaf_commands() if "--device" in options(command)}
    assert with_device, "no command has --device: the command tree was not read"
    assert with_device <= set(TRAINERS), sorted(with_device - set(TRAINERS))
