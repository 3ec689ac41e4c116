"""The one Typer app every command registers on, and the CLI convention all commands share (docs/cli.md).

- Exit codes: 0 success, 1 a run that failed, 2 bad input or usage. An error prints one line, ``error: ...``,
  naming the file and the item; no traceback unless ``--debug``.
- Global flags ``-v/--verbose``, ``-q/--quiet``, ``--debug`` are accepted before or after the command.
- Shared options are declared once here (``--out``, ``--force``, ``--json``, ``--device``, ``--scheduler``) so
  every command spells them the same way.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from knotwork._errors import EXIT_FAILED, EXIT_USAGE, KnotworkError

_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet", "--debug")


def _hoist_global_flags(args: list[str]) -> list[str]:
    """Move the global flags to the front, so ``knotwork merge ... -v`` means ``knotwork -v merge ...``.

    Nothing after a literal ``--`` moves: there the user passes values, not options.
    """
    if "--" in args:
        cut = args.index("--")
        head, tail = args[:cut], args[cut:]
    else:
        head, tail = args, []
    flags = [a for a in head if a in _GLOBAL_FLAGS]
    return flags + [a for a in head if a not in _GLOBAL_FLAGS] + tail


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_line(err: BaseException) -> tuple[str, int]:
    """The one line a command prints for ``err``, and its exit code."""
    if isinstance(err, KnotworkError):
        return str(err), err.exit_code
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        where = err.filename or ""
        return f"{where}: {err.strerror or type(err).__name__}" if where else _one_line(str(err)), EXIT_USAGE
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or _one_line(str(err))}", EXIT_FAILED
    if isinstance(err, KeyError):  # a KeyError's str() is the repr of its key; the message is args[0]
        return _one_line(err.args[0] if err.args else "missing key"), EXIT_USAGE
    if isinstance(err, (ValueError, TypeError)) and str(err):
        return _one_line(str(err)), EXIT_USAGE
    if isinstance(err, MemoryError):
        return "out of memory; try fewer threads, a smaller batch, or a machine with more memory", EXIT_FAILED
    return f"internal error ({type(err).__name__}: {_one_line(str(err))}); rerun with --debug for the traceback", EXIT_FAILED


class KnotworkGroup(TyperGroup):
    """The root group: hoists global flags, and turns every error into one line and an exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_global_flags(list(args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit) as err:
            if isinstance(err, KeyboardInterrupt):
                typer.echo("error: interrupted", err=True)
                raise typer.Exit(130) from None
            raise
        except Exception as err:  # noqa: BLE001 - the CLI's one place that turns errors into exit codes
            if isinstance(err, TyperException):  # usage errors keep click's formatting and exit code 2
                raise
            if ctx.obj and ctx.obj.get("debug"):
                raise
            line, code = error_line(err)
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    name="knotwork",
    cls=KnotworkGroup,
    help="Merge LoRA adapters (KnOTS) and models (ZipIt!), adapt batches (DBA), harmonize 3D volumes, "
    "and clean relation-extraction data (Re-TACRED, JRRELP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def group(name: str, help: str) -> typer.Typer:
    """A command group of the root app (``knotwork <name> ...``)."""
    sub = typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(sub, name=name)
    return sub


def _version(value: bool) -> None:
    if value:
        from knotwork import __version__

        typer.echo(f"knotwork {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details (before or after the command)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors: no progress bars, no info logs."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from knotwork._progress import set_progress

    if verbose and quiet:
        raise typer.BadParameter("-v and -q contradict each other; give one")
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    set_progress(False if quiet else None)
    ctx.obj = {"debug": debug, "verbose": verbose, "quiet": quiet}


# ------------------------------------------------------------------------------------------ shared options


class Device(str, enum.Enum):
    """Where tensors are computed."""

    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


def resolve_device(device: Device | str) -> str:
    """The device string, refused with one line when that device is not available here."""
    import torch

    name = device.value if isinstance(device, Device) else str(device)
    if name == "cuda" and not torch.cuda.is_available():
        raise KnotworkError("--device cuda: no CUDA device is available on this machine; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise KnotworkError("--device mps: no Apple MPS device is available on this machine; use --device cpu")
    return name


def force_option() -> Any:
    return typer.Option(False, "--force", help="Replace a previous knotwork output (--out, --json PATH); never anything else.")


def out_option(help: str) -> Any:
    return typer.Option(..., "--out", "-o", help=help)


def json_option() -> Any:
    return typer.Option(
        None, "--json", metavar="PATH", help="Write the machine-readable result to PATH, or to stdout with '-'."
    )


def device_option() -> Any:
    return typer.Option(Device.cpu, "--device", help="Compute device.", case_sensitive=False)


def scheduler_option() -> Any:
    return typer.Option(
        None, "--scheduler", metavar="ADDRESS",
        help="Run on Dask: a scheduler address (tcp://host:8786) or local:N for a local cluster of N workers.",
    )


def emit_json(result: Any, path: str | None, *, inputs: Any = (), force: bool = False) -> None:
    """Write ``result`` for ``--json PATH`` (atomically, with provenance) or print it for ``--json -``."""
    if path is None:
        return
    from knotwork._io import json_document, write_json

    if path == "-":
        typer.echo(json.dumps(json_document(result), indent=2, default=str))
    else:
        write_json(Path(path), result, inputs=inputs, force=force)

