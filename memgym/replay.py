"""Replay: rebuild each env from (id, seed, config), feed the recorded actions, and check that
observations, parsed ops, op results, rewards, episode-end flags and segment boundaries match
exactly."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import gymnasium as gym
import pandas as pd

from memgym.trajectory import Trajectory, trajectories_from_frame


@dataclass(frozen=True)
class Divergence:
    """The first mismatch in one trajectory.

    Attributes:
        trajectory_id: Trajectory that diverged.
        step: Step index (-1: the reset observation).
        field: What differed, e.g. ``"reward"`` or ``"observation"``.
        recorded / replayed: The two values, as text.
    """

    trajectory_id: str
    step: int
    field: str
    recorded: str
    replayed: str


@dataclass
class ReplayReport:
    """Outcome of a replay: counts, divergences and wall time (seconds)."""

    trajectories: int = 0
    steps: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing diverged."""
        return not self.divergences


def _first_mismatch(traj: Trajectory, env: gym.Env) -> tuple[Divergence | None, int]:
    """Replay one trajectory; returns its first divergence (or None) and steps replayed."""
    def diff(step: int, name: str, recorded, replayed) -> Divergence | None:
        if recorded == replayed:
            return None
        return Divergence(traj.id, step, name, repr(recorded), repr(replayed))

    obs, _ = env.reset(seed=traj.seed)
    if d := diff(-1, "observation", traj.steps[0].observation if traj.steps else "", obs):
        return d, 0
    for k, step in enumerate(traj.steps):
        obs, reward, terminated, truncated, info = env.step(step.action)
        nxt = traj.steps[k + 1].observation if k + 1 < len(traj.steps) else traj.final_observation
        checks = (
            ("ops", step.ops, info["ops"]),
            ("op_results", step.op_results, info["op_results"]),
            ("parse_error", step.parse_error, info["parse_error"]),
            ("reward", step.reward, float(reward)),
            ("reward_terms", step.reward_terms, info["reward_terms"]),
            ("terminated", step.terminated, terminated),
            ("truncated", step.truncated, truncated),
            ("segment_end", step.segment_end, info.get("segment_end")),
            ("observation", nxt, obs),
        )
        for name, recorded, replayed in checks:
            if d := diff(k, name, recorded, replayed):
                return d, k + 1
    return None, len(traj.steps)


def replay(frame: pd.DataFrame) -> ReplayReport:
    """Replay every trajectory of a :func:`memgym.load_trajectories` frame.

    Envs are built once per distinct (env id, config) and reused across trajectories.

    Returns:
        A :class:`ReplayReport` with at most one divergence per trajectory.
    """
    start = time.perf_counter()
    report = ReplayReport()
    envs: dict[tuple[str, str], gym.Env] = {}
    for traj in trajectories_from_frame(frame):
        key = (traj.env_id, json.dumps(traj.config, sort_keys=True))
        if key not in envs:
            envs[key] = gym.make(traj.env_id, **traj.config)
        divergence, steps = _first_mismatch(traj, envs[key])
        report.trajectories += 1
        report.steps += steps
        if divergence is not None:
            report.divergences.append(divergence)
    for env in envs.values():
        env.close()
    report.seconds = time.perf_counter() - start
    return report
