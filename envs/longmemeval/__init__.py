"""LongMemEval (Wu et al., ICLR 2025): long timestamped chat histories with questions."""

from memgym.envs.longmemeval.data import (
    CATEGORY_ORDER,
    Haystack,
    Question,
    Session,
    Turn,
    load_longmemeval,
)
from memgym.envs.longmemeval.source import LongMemEvalSource

__all__ = ["CATEGORY_ORDER", "Haystack", "LongMemEvalSource", "Question", "Session", "Turn",
           "load_longmemeval"]
