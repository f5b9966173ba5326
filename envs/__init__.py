"""memgym environments; importing this package registers them with gymnasium."""

from gymnasium.envs.registration import register

from memgym.envs.memory_manager import LoCoMoMemoryManagerEnv

# One line per env: id → (entry point, description shown by `memgym envs`).
ENVS: dict[str, tuple[str, str]] = {
    "memgym/LoCoMoMemoryManager-v0": (
        "memgym.envs.memory_manager:LoCoMoMemoryManagerEnv",
        "Memory-R1 memory manager on LoCoMo: ADD/UPDATE/DELETE/NONE per dialogue turn, "
        "rewarded by a frozen answer agent"),
}

for _env_id, (_entry, _) in ENVS.items():
    register(id=_env_id, entry_point=_entry, disable_env_checker=False)

__all__ = ["ENVS", "LoCoMoMemoryManagerEnv"]
