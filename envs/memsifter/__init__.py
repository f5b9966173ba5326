"""MemSifter's retrieval as ranking: order candidate sessions, rewarded by an answerer's gain."""

from memgym.envs.memsifter.env import MemSifterEnv, fibonacci_tiers, tier_weights

__all__ = ["MemSifterEnv", "fibonacci_tiers", "tier_weights"]
