"""Local rollout runner: N envs stepped in lockstep, their generations batched."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import gymnasium as gym
from tqdm.auto import tqdm

from memgym.engine import Completion
from memgym.rollouts.policy import Policy
from memgym.trajectory import Trajectory, build_segments, step_from_info


def record_step(traj: Trajectory, observation: str, completion: Completion, obs: str,
                reward: float, terminated: bool, truncated: bool, info: dict) -> bool:
    """Append one ``env.step`` to ``traj``; at the episode's end set its final observation and
    build its segments (when the policy returned token ids). Every runner records steps here.

    Args:
        traj: The episode being recorded.
        observation: The observation the policy acted on.
        completion: The policy's completion (its ``text`` was the action).
        obs / reward / terminated / truncated / info: What ``env.step`` returned.

    Returns:
        True when the episode ended with this step.
    """
    traj.steps.append(step_from_info(len(traj.steps), observation, completion.text, reward,
                                     terminated, truncated, info, completion))
    if not (terminated or truncated):
        return False
    traj.final_observation = obs
    if any(s.completion_ids for s in traj.steps):
        traj.segments = build_segments(traj.steps)
    return True


def run_episodes(env_id: str, env_kwargs: dict, policy: Policy, seeds: Sequence[int],
                 groups: Sequence[int] | None = None, num_envs: int = 8,
                 progress: bool = True) -> list[Trajectory]:
    """Run one episode per seed with up to ``num_envs`` envs in lockstep.

    At every tick the observations of all running envs go to ``policy.act`` as one batch; an env
    whose episode ends takes the next seed at once.

    Args:
        env_id: Registered env id.
        env_kwargs: ``gymnasium.make`` keyword arguments, recorded as the trajectory config
            (must be JSON-serializable for the file and for replay).
        policy: Acts on batches of observations.
        seeds: Episode seeds; the same seed twice gives two rollouts of the same episode.
        groups: Group id per seed (default: the seed), for group-relative advantages.
        num_envs: Envs stepped together (the generation batch size).
        progress: Show a progress bar of finished episodes.

    Returns:
        Trajectories in the order of ``seeds``, with segments built when the policy returned
        token ids.
    """
    groups = list(seeds) if groups is None else list(groups)
    pending = deque(enumerate(seeds))
    envs = [gym.make(env_id, **env_kwargs) for _ in range(min(num_envs, len(seeds)))]
    slots: list[dict | None] = [None] * len(envs)
    done: dict[int, Trajectory] = {}
    bar = tqdm(total=len(seeds), desc=f"rollout {policy.name}", disable=not progress, leave=False)

    def start(slot: int) -> None:
        if not pending:
            slots[slot] = None
            return
        k, seed = pending.popleft()
        obs, info = envs[slot].reset(seed=int(seed))
        traj = Trajectory(env_id, int(seed), dict(env_kwargs), policy.name, [], group=groups[k])
        slots[slot] = {"k": k, "obs": obs, "info": info, "traj": traj}

    for slot in range(len(envs)):
        start(slot)
    while any(slots):
        active = [i for i, s in enumerate(slots) if s is not None]
        completions = policy.act([slots[i]["obs"] for i in active],
                                 [slots[i]["info"] for i in active])
        for i, completion in zip(active, completions, strict=True):
            state = slots[i]
            obs, reward, terminated, truncated, info = envs[i].step(completion.text)
            if record_step(state["traj"], state["obs"], completion, obs, reward, terminated,
                           truncated, info):
                done[state["k"]] = state["traj"]
                bar.update()
                start(i)
            else:
                state["obs"], state["info"] = obs, info
    bar.close()
    for env in envs:
        env.close()
    return [done[k] for k in range(len(seeds))]
