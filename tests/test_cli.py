"""The CLI's skeleton: every command group is registered and `--help` works without heavy imports."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from knotwork.cli import app


def test_help_lists_groups():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"merge", "align", "demo", "lora", "zipit", "dba", "harmonize", "relations", "jrrelp"}


def test_help_does_not_import_torch():
    # A fresh interpreter: importing the CLI for --help must not pull in torch (it takes seconds).
    code = "import sys; from knotwork.cli import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
