"""The rollout→training contract: one typed batch that every runner's trajectories become and
that GRPO and PPO both consume through ``step(batch)``.

A :class:`RolloutBatch` holds one iteration's trajectories with what the trainers need and
nothing they must recompute from text:

* per segment (S samples): the engine's prompt and completion token ids (never re-tokenized),
  the loss mask (policy tokens), the sampler's logprobs, the memory-op mask
  (:class:`memgym.trajectory.Segment`), and the index of its trajectory;
* per trajectory (T): the return, the reward terms, the group id and the policy version that
  acted;
* for the batch: the sampling temperature and top-p, which the trainers score at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from memgym.engine import SamplingParams
from memgym.errors import ConfigError
from memgym.trajectory import Segment, Trajectory

GROUP_BY = ("seed", "fork")


def training_temperature(sampling_temperature: float) -> float:
    """The temperature the trainer divides logits by for rollouts sampled at
    ``sampling_temperature``.

    Args:
        sampling_temperature: The rollouts' sampling temperature; 0 means greedy decoding,
            whose logprobs the engines report from the raw logits, so it trains at 1.

    Returns:
        ``sampling_temperature``, or 1.0 for greedy (0).

    Raises:
        ConfigError: Negative or not finite.
    """
    if sampling_temperature == 0:
        return 1.0
    check_temperature(sampling_temperature)
    return float(sampling_temperature)


def check_temperature(temperature: float) -> None:
    """Raise :class:`ConfigError` unless ``temperature`` is a finite float > 0."""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)
            and temperature > 0):
        raise ConfigError(f"expected a finite temperature > 0 (greedy rollouts train at 1.0), "
                          f"got {temperature!r}")


def group_ids(trajectories: Sequence[Trajectory], by: str = "seed") -> torch.Tensor:
    """Group id of each trajectory for group-relative advantages.

    Args:
        trajectories: T trajectories.
        by: ``seed``: same env id, env config and episode seed (GRPO's "same prompt");
            ``fork``: same ``Trajectory.group`` (forks of one parent at one step share it, see
            :func:`memgym.rollouts.fork.fork_group`).

    Returns:
        ``(T,)`` int64 group ids (dense, in order of first appearance).

    Raises:
        ConfigError: Unknown ``by``.
    """
    if by == "seed":
        keys = [(t.env_id, repr(sorted(t.config.items())), t.seed) for t in trajectories]
    elif by == "fork":
        keys = [t.group for t in trajectories]
    else:
        raise ConfigError(f"unknown group_by {by!r}; expected one of {list(GROUP_BY)}")
    ids: dict = {}
    return torch.tensor([ids.setdefault(k, len(ids)) for k in keys], dtype=torch.long)


@dataclass
class RolloutBatch:
    """One iteration's rollouts as training samples.

    Attributes:
        trajectories: T trajectories. All count in group statistics; those without token
            segments (scripted policies) add no samples.
        temperature: The sampling temperature (0: greedy; the trainers then score at 1).
        top_p: The sampling nucleus mass in (0, 1].
        segments: The S token segments of all trajectories, in order (derived).
        segment_trajectory: ``(S,)`` int64 index of each segment's trajectory (derived).

    Raises:
        ConfigError: No trajectory, a NaN or infinite return or reward term, a negative or
            non-finite temperature, ``top_p`` outside (0, 1], or a segment whose token
            columns disagree in length (logprobs and memory mask may be empty: not recorded).
    """

    trajectories: list[Trajectory]
    temperature: float = 1.0
    top_p: float = 1.0
    segments: list[Segment] = field(init=False)
    segment_trajectory: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if not self.trajectories:
            raise ConfigError("a rollout batch needs at least one trajectory, got none")
        training_temperature(self.temperature)  # validates it
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        for t in self.trajectories:
            values = [t.episode_return, *t.reward_terms.values()]
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"trajectory {t.id} (seed {t.seed}) has a NaN or infinite "
                                  f"reward: return {t.episode_return}, terms {t.reward_terms}")
        self.segments = [s for t in self.trajectories for s in t.segments]
        for s in self.segments:
            n = len(s.completion_ids)
            if len(s.loss_mask) != n or {len(s.logprobs), len(s.memory_mask)} - {0, n}:
                raise ConfigError(
                    f"segment {s.index} (steps {s.step_start}-{s.step_end}): expected a loss "
                    f"mask (and logprobs, memory mask: else empty) of its {n} completion "
                    f"tokens, got {len(s.loss_mask)} ({len(s.logprobs)}, {len(s.memory_mask)})")
        self.segment_trajectory = torch.tensor(
            [i for i, t in enumerate(self.trajectories) for _ in t.segments], dtype=torch.long)

    @classmethod
    def from_rollouts(cls, trajectories: Sequence[Trajectory],
                      params: SamplingParams) -> RolloutBatch:
        """The batch of ``trajectories`` sampled with ``params`` (temperature, top-p)."""
        return cls(list(trajectories), params.temperature, params.top_p)

    @property
    def training_temperature(self) -> float:
        """The temperature the trainers divide logits by (:func:`training_temperature`)."""
        return training_temperature(self.temperature)

    def returns(self) -> torch.Tensor:
        """``(T,)`` float64 undiscounted episode returns."""
        return torch.tensor([t.episode_return for t in self.trajectories], dtype=torch.float64)

    def term_returns(self, names: Sequence[str]) -> torch.Tensor:
        """``(T,)`` float64 episode sums of the reward terms ``names``.

        Raises:
            ConfigError: A name is not a reward term of any trajectory.
        """
        known = {name for t in self.trajectories for name in t.reward_terms}
        if missing := set(names) - known:
            raise ConfigError(f"reward terms {sorted(missing)} not among {sorted(known)}")
        return torch.tensor([sum(t.reward_terms.get(n, 0.0) for n in names)
                             for t in self.trajectories], dtype=torch.float64)

    def groups(self, by: str = "seed") -> torch.Tensor:
        """``(T,)`` int64 group ids (:func:`group_ids`)."""
        return group_ids(self.trajectories, by)

    def policy_versions(self) -> torch.Tensor:
        """``(T,)`` int64 trainer updates behind the policy that acted (-1: not recorded)."""
        return torch.tensor([t.policy_version for t in self.trajectories], dtype=torch.long)
