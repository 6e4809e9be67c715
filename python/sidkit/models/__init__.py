"""Sequence models over semantic IDs and item ids (need torch; transformers for TIGER)."""

from .sasrec import SASRec, sasrec_examples, sasrec_train_examples
from .tiger import TIGER, make_examples

__all__ = ["SASRec", "TIGER", "make_examples", "sasrec_examples", "sasrec_train_examples"]
