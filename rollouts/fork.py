"""Forks: continue saved episodes from a step with another policy.

A fork of parent ``P`` at step ``k`` is a complete episode of ``P``'s env, seed and config: its
steps ``0..k-1`` are ``P``'s (replayed and checked against the record, then copied without
token ids) and from step ``k`` on the new policy acts. So a fork file replays like any
trajectory file (``memgym replay fork.parquet --verify``). The env state at step ``k`` is built
once per parent and captured with :meth:`memgym.envs.base.MemgymEnv.snapshot`; every sample
restores it (:meth:`~memgym.envs.base.MemgymEnv.restore`) instead of replaying again.

Forks record ``parent_id`` / ``parent_step``, and all samples of one (parent, step) share
``group = fork_group(parent_id, step)``, so a trainer can use them as a shared-state group. Their
segments cover only the new policy's steps; the copied prefix is stored as token-less rows.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

import gymnasium as gym
from tqdm.auto import tqdm

from memgym.errors import ConfigError
from memgym.replay import make_env, replay_prefix
from memgym.rollouts.policy import Policy
from memgym.rollouts.runner import step_from_info
from memgym.segments import build_segments
from memgym.trajectory import Trajectory


def fork_group(parent_id: str, step: int) -> int:
    """Stable group id of (parent trajectory id, fork step): the first 60 bits of a sha256,
    a non-negative int64."""
    return int(hashlib.sha256(f"{parent_id}:{step}".encode()).hexdigest()[:15], 16)


def _starts(parents: Sequence[Trajectory], step: int) -> list[tuple]:
    """(parent, snapshot, observation, info) at ``step`` of each parent (one replay each)."""
    starts, envs = [], {}
    for parent in parents:
        key = (parent.env_id, json.dumps(parent.config, sort_keys=True))
        if key not in envs:
            envs[key] = make_env(parent.env_id, parent.config)
            if not hasattr(envs[key].unwrapped, "snapshot"):
                raise ConfigError(f"{parent.env_id} has no snapshot()/restore(); forks need "
                                  f"a memgym.envs.base.MemgymEnv")
        obs, info = replay_prefix(envs[key], parent, step)
        starts.append((parent, envs[key].unwrapped.snapshot(), obs, info))
    for env in envs.values():
        env.close()
    return starts


def fork_episodes(parents: Sequence[Trajectory], step: int, policy: Policy, samples: int = 1,
                  num_envs: int = 8, progress: bool = True) -> list[Trajectory]:
    """Fork every parent at ``step`` and run ``policy`` to the end of each episode.

    Envs are stepped in lockstep and the policy gets one batch per tick, as in
    :func:`memgym.rollouts.run_episodes`.

    Args:
        parents: Trajectories to fork (e.g. from :func:`memgym.trajectory.
            trajectories_from_frame`); each must have more than ``step`` steps.
        step: First step the new policy takes (0: from the reset, keeping only the seed).
        policy: The policy that continues.
        samples: Forks per parent (they share a group id).
        num_envs: Envs stepped together (the generation batch size).
        progress: Show a progress bar of finished forks.

    Returns:
        ``samples`` forks per parent, parent by parent.

    Raises:
        ConfigError: ``step`` is out of range for a parent, ``samples`` < 1, or an env cannot
            snapshot.
        ReplayError: A parent's first ``step`` steps do not replay as recorded.
    """
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    jobs = deque(enumerate(start for start in _starts(parents, step) for _ in range(samples)))
    envs: dict[tuple[int, str, str], gym.Env] = {}
    slots: list[dict | None] = [None] * min(num_envs, len(jobs))
    done: dict[int, Trajectory] = {}
    bar = tqdm(total=len(jobs), desc=f"fork {policy.name}", disable=not progress, leave=False)

    def start(slot: int) -> None:
        if not jobs:
            slots[slot] = None
            return
        k, (parent, snap, obs, info) = jobs.popleft()
        key = (slot, parent.env_id, json.dumps(parent.config, sort_keys=True))
        if key not in envs:
            envs[key] = make_env(parent.env_id, parent.config)
        env = envs[key]
        env.reset(seed=parent.seed)  # wrappers need a reset; the episode state comes next
        env.unwrapped.restore(snap)
        prefix = [replace(s, prompt_ids=[], completion_ids=[], logprobs=[])
                  for s in parent.steps[:step]]
        traj = Trajectory(parent.env_id, parent.seed, dict(parent.config), policy.name, prefix,
                          group=fork_group(parent.id, step), parent_id=parent.id,
                          parent_step=step)
        slots[slot] = {"k": k, "obs": obs, "info": info, "traj": traj, "env": env}

    for slot in range(len(slots)):
        start(slot)
    while any(slots):
        active = [i for i, s in enumerate(slots) if s is not None]
        completions = policy.act([slots[i]["obs"] for i in active],
                                 [slots[i]["info"] for i in active])
        for i, completion in zip(active, completions, strict=True):
            state = slots[i]
            obs, reward, terminated, truncated, info = state["env"].step(completion.action)
            traj: Trajectory = state["traj"]
            traj.steps.append(step_from_info(len(traj.steps), state["obs"], completion.text,
                                             reward, terminated, truncated, info, completion))
            if terminated or truncated:
                traj.final_observation = obs
                if any(s.completion_ids for s in traj.steps[step:]):
                    traj.segments = build_segments(traj.steps[step:])
                done[state["k"]] = traj
                bar.update()
                start(i)
            else:
                state["obs"], state["info"] = obs, info
    bar.close()
    for env in envs.values():
        env.close()
    return [done[k] for k in range(len(done))]
