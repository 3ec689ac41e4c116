"""knotwork: tie together what separate trainings produced — models, data sets and tasks."""

__version__ = "0.1.0"
