"""Mem-α's memory construction: core / semantic / episodic memory written with tool calls."""

from memgym.envs.mem_alpha.env import MemAlphaEnv, chunk_stream
from memgym.envs.mem_alpha.validity import RuleValidityJudge, ValidityJudge

__all__ = ["MemAlphaEnv", "RuleValidityJudge", "ValidityJudge", "chunk_stream"]
