"""Memory-R1's memory manager: ADD / UPDATE / DELETE / NONE on a memory bank per stream item."""

from memgym.envs.memory_manager.env import MemoryManagerEnv

__all__ = ["MemoryManagerEnv"]
