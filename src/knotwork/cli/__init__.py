"""The `knotwork` command line: one Typer app; each command group lives in its own module.

Every command module imports heavy libraries inside its commands, so `knotwork --help` stays instant. The
convention all commands follow (exit codes, shared options, output safety) is in docs/cli.md and
`knotwork.cli._app`.
"""

from __future__ import annotations

from knotwork.cli import harmonize, jrrelp, lora, lora_search, merge, relations, train, zipit
from knotwork.cli._app import app

# Each module registers its commands on `app` (or its own group) when imported.
_MODULES = (merge, lora, lora_search, zipit, train, harmonize, relations, jrrelp)


def main() -> None:  # pragma: no cover - thin entry point
    app()


__all__ = ["app", "main"]
