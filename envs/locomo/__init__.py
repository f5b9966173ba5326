"""LoCoMo (Maharana et al., ACL 2024): long two-person conversations with QA."""

from memgym.envs.locomo.data import QA, SPLITS, Conversation, Turn, load_locomo

__all__ = ["QA", "SPLITS", "Conversation", "Turn", "load_locomo"]
