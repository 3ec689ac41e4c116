"""`knotwork relations ...`: relation-extraction data quality (Re-TACRED).

The commands are split by what they work on: :mod:`.data` (validate, convert, patch), :mod:`.scoring` (score,
reevaluate, find-issues) and :mod:`.crowd` (annotate, aggregate); :mod:`._options` holds the options they share.
Each command parses its options, refuses bad input before any work, calls :mod:`knotwork.relations`, writes its
output through :mod:`knotwork._io` and prints a short summary. Errors are raised as
:class:`~knotwork._errors.RelationsError`; the root group prints them as one line.
"""

from __future__ import annotations

from knotwork.cli._app import group

relations_app = group("relations", "Relation-extraction data quality (Re-TACRED) and JRRELP training.")

# Importing the modules registers their commands on `relations_app`.
from knotwork.cli.relations import crowd, data, scoring  # noqa: E402

__all__ = ["crowd", "data", "relations_app", "scoring"]
