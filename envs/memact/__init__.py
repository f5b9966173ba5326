"""MemAct / DCPO context curation: search, prune one's own context by tool-call id, answer."""

from memgym.envs.memact.env import MemActEnv

__all__ = ["MemActEnv"]
