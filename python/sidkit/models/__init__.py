"""Sequence models over semantic IDs (need torch; transformers for TIGER)."""

from .tiger import TIGER, make_examples

__all__ = ["TIGER", "make_examples"]
