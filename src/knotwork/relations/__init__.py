"""knotwork.relations: relation-extraction data quality (Re-TACRED) and joint RE + link prediction (JRRELP)."""

from knotwork.relations.data import RelationExample, TacredFormatError, load_tacred
from knotwork.relations.scorer import Scores, score

__all__ = ["RelationExample", "Scores", "TacredFormatError", "load_tacred", "score"]
