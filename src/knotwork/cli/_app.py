"""The one Typer app that every command module registers on, and the `bench` sub-app."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="knotwork",
    help="Merge LoRA adapters (KnOTS) and models (ZipIt!), adapt batches (DBA), harmonize 3D volumes, "
    "and clean relation-extraction data (Re-TACRED, JRRELP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

bench_app = typer.Typer(help="Reproduce the papers' experiments; each writes docs/results/*.md.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
