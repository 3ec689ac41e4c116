"""`python -m knotwork` runs the CLI (also under `torchrun -m knotwork ...`)."""

from knotwork.cli import main

main()
