"""CLI commands for `knotwork relations ...` (data, scoring, patches, re-annotation, label errors)."""

from __future__ import annotations

import typer

from knotwork.cli._app import app, bench_app  # noqa: F401

relations_app = typer.Typer(help="Relation-extraction data quality (Re-TACRED) and JRRELP training.", no_args_is_help=True)
app.add_typer(relations_app, name="relations")
