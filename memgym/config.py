"""Run configuration for ``memgym train`` (YAML → pydantic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from memgym.errors import ConfigError
from memgym.rollouts.ray_config import RolloutConfig
from memgym.trainers.grpo import GRPOConfig
from memgym.trainers.ppo import PPOConfig


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
        model: ``"smollm2"`` or a local model directory, e.g. the output of ``memgym sft``
            (a warm start); the KL reference, if any, is this model.
        lora: LoRA settings, or None for full fine-tuning.
        algorithm: ``grpo`` (the ``grpo:`` section applies) or ``ppo`` (``ppo:``: a critic
            initialized from the policy, GAE across segments; full fine-tuning only).
        iterations: Optimizer steps (one batch of rollouts each).
        episodes_per_iteration: Distinct episode seeds per batch.
        group_size: Rollouts per seed (the GRPO group).
        num_envs: Envs stepped together (generation batch).
        eval_episodes: Episodes per policy in each evaluation.
        seed: Master seed.
        eval_every: Evaluate the policy (greedy, on ``eval_env``) every this many iterations;
            0: only before and after training.
        checkpoint_every: Save ``run_dir/checkpoint`` every this many iterations (it is always
            saved at the end); 0: only at the end.
        resume: Continue from ``run_dir/checkpoint`` when it exists: model (or adapter),
            optimizer, trainer step, RNG states, metrics and trajectories so far, so the run
            continues exactly as if it had not stopped.
        overwrite: Delete what an earlier run left in ``run_dir`` and start afresh; without
            it (or ``resume``) a ``run_dir`` that holds a run is refused.
        tensorboard: Also log every metric to ``run_dir/tensorboard`` (TensorBoard).
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
    algorithm: Literal["grpo", "ppo"] = "grpo"
    iterations: int = Field(10, ge=0)
    episodes_per_iteration: int = Field(4, ge=1)
    group_size: int = Field(4, ge=2)
    num_envs: int = Field(16, ge=1)
    eval_episodes: int = Field(16, ge=1)
    seed: int = 0
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    resume: bool = False
    overwrite: bool = False
    tensorboard: bool = True
    sampling: SamplingConfig = SamplingConfig()
    grpo: GRPOConfig = GRPOConfig()
    ppo: PPOConfig = PPOConfig()
    rollout: RolloutConfig = RolloutConfig()

    @model_validator(mode="after")
    def _ppo_consistent(self):
        if self.algorithm == "ppo" and self.lora is not None:
            raise ValueError("algorithm 'ppo' builds its critic from a plain policy: remove lora")
        if self.rollout.ray_address is not None and self.lora is not None:
            raise ValueError("Ray rollouts send full weights to the engine actors: remove lora "
                             "or rollout.ray_address")
        return self

    def needs_reference(self) -> bool:
        """Whether the algorithm's KL terms need a frozen reference model."""
        if self.algorithm == "ppo":
            return self.ppo.kl_coef > 0 or self.ppo.kl_loss_coef > 0
        return self.grpo.beta > 0


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
