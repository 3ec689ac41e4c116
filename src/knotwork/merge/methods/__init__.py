"""Merge methods, one per file; `knotwork.merge.registry` lists them by their command-line names."""
