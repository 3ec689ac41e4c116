"""CLI commands for JRRELP (`knotwork relations train`), registered on the `relations` sub-app."""

from __future__ import annotations

from knotwork.cli._app import bench_app  # noqa: F401
from knotwork.cli.relations import relations_app  # noqa: F401
