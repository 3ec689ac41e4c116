"""CLI commands for `bench` (registered on the shared app when imported)."""

from __future__ import annotations

from knotwork.cli._app import app, bench_app  # noqa: F401
