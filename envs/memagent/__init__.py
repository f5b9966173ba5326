"""MemAgent's overwrite reader: rewrite a bounded memory chunk by chunk, answer in ``\\boxed{}``."""

from memgym.envs.memagent.env import MemAgentEnv
from memgym.envs.memagent.source import HotpotHaystackSource

__all__ = ["HotpotHaystackSource", "MemAgentEnv"]
