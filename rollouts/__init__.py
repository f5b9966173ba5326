"""Policies, inference engines and rollout runners."""

from memgym.rollouts.policy import LLMPolicy, Policy
from memgym.rollouts.runner import run_episodes
from memgym.rollouts.scripted import SCRIPTED_POLICIES, Mem0LikePolicy, NoopPolicy, StoreAllPolicy

__all__ = ["SCRIPTED_POLICIES", "LLMPolicy", "Mem0LikePolicy", "NoopPolicy", "Policy",
           "StoreAllPolicy", "run_episodes"]
