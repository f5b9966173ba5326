"""Policies, inference engines and rollout runners."""

from memgym.rollouts.policy import LLMPolicy, Policy, TokenizedPolicy
from memgym.rollouts.runner import run_episodes

__all__ = ["LLMPolicy", "Policy", "TokenizedPolicy", "run_episodes"]
