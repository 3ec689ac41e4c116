"""`python -m knotwork.cli` runs the CLI."""

from knotwork.cli import main

main()
