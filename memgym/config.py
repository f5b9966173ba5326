"""Run configuration for ``memgym train`` (YAML → pydantic)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from memgym.errors import ConfigError
from memgym.rollouts.ray_config import RolloutConfig
from memgym.trainers.grpo import GRPOConfig


class LoraConfig(BaseModel):
    """peft LoRA settings."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class SamplingConfig(BaseModel):
    """Sampling during training rollouts (evaluation decodes greedily)."""

    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)


class TrainConfig(BaseModel):
    """Everything ``memgym train`` needs; see ``experiments/quickstart.yaml``.

    Attributes:
        run_dir: Output directory.
        env_id: Registered env id.
        env: ``gymnasium.make`` kwargs for training episodes.
        eval_env: kwargs overriding ``env`` for evaluation (e.g. ``split: val``).
        model: ``"smollm2"`` or a local model directory.
        lora: LoRA settings, or None for full fine-tuning.
        iterations: Optimizer steps (one batch of rollouts each).
        episodes_per_iteration: Distinct episode seeds per batch.
        group_size: Rollouts per seed (the GRPO group).
        num_envs: Envs stepped together (generation batch).
        eval_episodes: Episodes per policy in each evaluation.
        seed: Master seed.
        rollout: Where rollouts run: ``rollout.ray_address`` None (default) keeps the local
            runner; ``local`` / ``auto`` / ``ray://…`` uses the Ray runner (see
            :class:`memgym.rollouts.ray_config.RolloutConfig`).
    """

    run_dir: str = "runs/quickstart"
    env_id: str = "memgym/LoCoMoMemoryManager-v0"
    env: dict = {}
    eval_env: dict = {"split": "val"}
    model: str = "smollm2"
    lora: LoraConfig | None = None
    iterations: int = Field(10, ge=0)
    episodes_per_iteration: int = Field(4, ge=1)
    group_size: int = Field(4, ge=2)
    num_envs: int = Field(16, ge=1)
    eval_episodes: int = Field(16, ge=1)
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig()
    grpo: GRPOConfig = GRPOConfig()
    rollout: RolloutConfig = RolloutConfig()


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML config and apply top-level ``overrides``.

    Raises:
        ConfigError: The file is missing, not YAML, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    data.update(overrides or {})
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
