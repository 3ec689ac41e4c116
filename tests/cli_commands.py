"""The command tree of the `knotwork` app, for tests that check commands and options by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from knotwork.cli import app

# Commands and options that work in flight adds (issue 13). Tests skip an entry while it is absent and fail once it
# exists, until the entry is removed here, so this list cannot outlive its reason.
PENDING_COMMANDS: dict[str, str] = {}
PENDING_OPTIONS: dict[tuple[str, str], str] = {}


def is_group(command: Any) -> bool:
    """A command group (typer vendors its own click, so this checks the shape, not a click class)."""
    return hasattr(command, "commands")


def root() -> Any:
    return typer.main.get_command(app)


def resolve(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """The command ``knotwork WORDS...`` names: (command or the group where the path stopped, path, rest)."""
    command, path, rest = root(), [], list(words)
    while rest and is_group(command) and rest[0] in command.commands:
        command = command.commands[rest[0]]
        path.append(rest.pop(0))
    return command, path, rest


def options(command: Any) -> set[str]:
    """Every option spelling of ``command`` (``--out``, ``-o``, ``--no-dba``, ...)."""
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def leaf_commands(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, command) of every command (not group) of the app."""
    command = root() if command is None else command
    if is_group(command):
        for name, sub in command.commands.items():
            yield from leaf_commands(sub, (*path, name))
    else:
        yield path, command
