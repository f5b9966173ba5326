"""Train on any memgym env with TRL's ``GRPOTrainer`` (TRL 1.16), unchanged.

Two ways, matching TRL's two hooks (``trl/trainer/grpo_trainer.py``):

* :func:`memgym_rollout_func` -- ``GRPOTrainer(rollout_func=...)``. memgym runs whole episodes
  with the trainer's own model (:class:`memgym.rollouts.hf.HFEngine`, batched, token ids and
  logprobs recorded) and hands TRL one training sample per episode: one of the episode's
  *segments* (DESIGN §1; a segment is a run of steps whose prompts share a growing prefix, so its
  prompt + completion is one causal sequence), with ``env_mask`` = the segment's loss mask (env
  tokens between the policy's turns are not trained). TRL needs exactly one completion per prompt,
  while a memgym episode may have several segments (every step of the memory managers starts a
  fresh prompt), so ``segment="sample"`` picks one uniformly at random (an unbiased estimate of
  the sum over segments, up to the factor 1/#segments; MemAct/DCPO also samples segments per
  rollout) and ``segment="last"`` the final one. The reward is the episode return, passed to
  :func:`memgym_reward` as the extra column ``memgym_return``. Prompts name their episode seed
  (:func:`memgym_dataset`); TRL repeats each prompt ``num_generations`` times, so a GRPO group is
  ``num_generations`` rollouts of the same episode.
* :func:`memgym_environment_factory` -- ``GRPOTrainer(environment_factory=...)``. A class TRL
  instantiates per rollout: ``reset(seed=...)`` returns the first observation, the tool
  ``act(action)`` steps the env and returns the next observation, ``get_reward()`` the episode
  return. It needs a chat template with tool calling (TRL checks it; SmolLM2's has none, but it
  speaks ChatML, so ``trl.chat_template_utils.qwen2_5_chat_template`` fits it). TRL's multi-turn
  loop keeps the whole conversation in context, which differs from memgym's per-step prompts.

Both take the env id and ``gymnasium.make`` keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from datasets import Dataset

from memgym.engine import SamplingParams
from memgym.errors import ConfigError
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.rollouts.hf import HFEngine
from memgym.trajectory import Segment, Trajectory

_SEED = re.compile(r"memgym episode seed=(\d+)")


def episode_prompt(seed: int) -> str:
    """The prompt text of the episode with ``seed`` (what :func:`memgym_rollout_func` parses)."""
    return f"memgym episode seed={seed}"


def memgym_dataset(num_episodes: int, first_seed: int = 0, prompt: bool = True) -> Dataset:
    """Prompt rows for TRL: one per episode seed ``first_seed .. first_seed + num_episodes - 1``.

    Args:
        num_episodes: Rows (distinct episodes).
        first_seed: Seed of the first row.
        prompt: Include the ``prompt`` column (standard text, :func:`episode_prompt`), which
            :func:`memgym_rollout_func` needs; for :func:`memgym_environment_factory` pass False:
            the env's first observation then is the whole user message.

    Returns:
        A ``datasets.Dataset`` with column ``seed`` (int) and, with ``prompt``, ``prompt`` (str).

    Raises:
        ConfigError: ``num_episodes`` < 1.
    """
    if num_episodes < 1:
        raise ConfigError(f"num_episodes must be >= 1, got {num_episodes}")
    seeds = list(range(first_seed, first_seed + num_episodes))
    columns: dict[str, list] = {"seed": seeds}
    if prompt:
        columns["prompt"] = [episode_prompt(s) for s in seeds]
    return Dataset.from_dict(columns)


def _check_env(env_id: str) -> None:
    if env_id not in gym.registry:
        raise ConfigError(f"env id must be a registered gymnasium id, got {env_id!r}")


def _seed_of(prompt: Any) -> int:
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    match = _SEED.search(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"expected a prompt from memgym_dataset containing "
                          f"{episode_prompt(0)!r} (any seed), got {prompt!r}")
    return int(match[1])


def memgym_reward(completions: Sequence, memgym_return: Sequence[float],
                  **_: Any) -> list[float]:
    """TRL reward function: the memgym episode return of each sample (from
    :func:`memgym_rollout_func`'s ``memgym_return`` column); other TRL kwargs are ignored."""
    return [float(r) for r in memgym_return]


def memgym_rollout_func(env_id: str, num_envs: int = 8,
                        segment: Literal["sample", "last"] = "sample", seed: int = 0,
                        **env_kwargs: Any) -> Callable[[list, Any], dict[str, list]]:
    """A TRL ``rollout_func`` running memgym episodes with the trainer's model.

    Args:
        env_id: Registered memgym env id.
        num_envs: Envs stepped in lockstep (the generation batch).
        segment: Which segment of an episode becomes its sample (see the module docstring).
        seed: Seed of the segment choice.
        **env_kwargs: ``gymnasium.make`` keyword arguments.

    Returns:
        ``rollout_func(prompts, trainer) -> dict`` with ``prompt_ids``, ``completion_ids``,
        ``logprobs`` and ``env_mask`` (lists of int / float lists, one per prompt) and
        ``memgym_return`` (float per prompt). Sampling follows the trainer's ``temperature``,
        ``top_p`` and ``max_completion_length`` (tokens per step).

    Raises:
        ConfigError: ``segment`` is unknown, or (when called) a prompt names no seed.
    """
    if segment not in ("sample", "last"):
        raise ConfigError(f"segment must be 'sample' or 'last', got {segment!r}")
    _check_env(env_id)
    rng = np.random.default_rng(seed)

    def pick(traj: Trajectory) -> Segment:
        if not traj.segments:
            raise ConfigError(f"episode {traj.id} of {env_id} has no token segments")
        if segment == "last":
            return traj.segments[-1]
        return traj.segments[int(rng.integers(len(traj.segments)))]

    def rollout_func(prompts: list, trainer: Any) -> dict[str, list]:
        seeds = [_seed_of(p) for p in prompts]
        model = trainer.accelerator.unwrap_model(trainer.model)
        engine = HFEngine(model, trainer.processing_class, batch_size=num_envs, name="trl")
        params = SamplingParams(max_new_tokens=trainer.max_completion_length,
                                temperature=trainer.temperature, top_p=trainer.top_p)
        trajs = run_episodes(env_id, dict(env_kwargs), LLMPolicy(engine, params, name="trl"),
                             seeds, num_envs=num_envs, progress=False)
        samples = [pick(t) for t in trajs]
        return {"prompt_ids": [list(s.prompt_ids) for s in samples],
                "completion_ids": [list(s.completion_ids) for s in samples],
                "logprobs": [list(s.logprobs) for s in samples],
                "env_mask": [list(s.loss_mask) for s in samples],
                "memgym_return": [t.episode_return for t in trajs]}

    return rollout_func


class MemgymToolEnvironment:
    """Base of the classes :func:`memgym_environment_factory` returns (TRL's environment
    protocol: ``reset``, public methods as tools, ``get_reward``)."""

    env_id: ClassVar[str] = ""
    env_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.env = gym.make(self.env_id, **self.env_kwargs)
        self.episode_return, self.done = 0.0, True

    def reset(self, seed: int | None = None, **_: Any) -> str:
        """Start the episode of ``seed`` (the dataset row's ``seed``; other columns ignored) and
        return its first observation."""
        observation, _info = self.env.reset(seed=None if seed is None else int(seed))
        self.episode_return, self.done = 0.0, False
        return observation

    def act(self, action: str) -> str:
        """Apply your action to the memory environment and see what comes next.

        Args:
            action: Your action, in exactly the format the environment's instructions ask for.

        Returns:
            The next observation, or a note that the episode ended with its return.
        """
        if self.done:
            return f"The episode has ended (return {self.episode_return:.4f})."
        observation, reward, terminated, truncated, _info = self.env.step(action)
        self.episode_return += float(reward)
        self.done = terminated or truncated
        if self.done:
            return f"The episode has ended (return {self.episode_return:.4f})."
        return observation

    def get_reward(self) -> float:
        """The return of the episode so far (sum of the env's rewards)."""
        return self.episode_return


def memgym_environment_factory(env_id: str, **env_kwargs: Any) -> type[MemgymToolEnvironment]:
    """A TRL ``environment_factory``: a class with no constructor arguments wrapping
    ``gymnasium.make(env_id, **env_kwargs)``. TRL logs its reward under the class name, e.g.
    ``SyntheticMemoryManager_v0``.

    Raises:
        ConfigError: ``env_id`` is not registered.
    """
    _check_env(env_id)
    name = re.sub(r"\W", "_", env_id.split("/")[-1])
    return type(name, (MemgymToolEnvironment,), {"env_id": env_id, "env_kwargs": dict(env_kwargs),
                                                 "__doc__": f"memgym {env_id} for TRL."})
