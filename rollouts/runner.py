"""Recording steps (every runner), and the local rollout runner: N envs stepped in lockstep,
their generations batched."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
from tqdm.auto import tqdm

from memgym.engine import Completion
from memgym.errors import ConfigError
from memgym.rollouts.policy import Policy
from memgym.segments import build_segments
from memgym.trajectory import Step, Trajectory, info_extras


def memory_token_mask(offsets: Sequence[int], spans: Sequence[Sequence[int]]) -> list[int]:
    """Which completion tokens carry memory-op payload (HiMPO-style memory-token credit).

    Token ``i`` covers the characters ``[offsets[i - 1], offsets[i])`` of the action (``0`` for
    the first); it is a memory token when that range overlaps one of ``spans``.

    Args:
        offsets: End character offset of each completion token
            (:attr:`memgym.engine.Completion.offsets`).
        spans: ``[start, end)`` character spans of the memory-op payloads (``op_spans``).

    Returns:
        ``len(offsets)`` ints in {0, 1}.
    """
    starts = [0, *offsets[:-1]]
    return [int(any(a < hi and lo < b for a, b in spans)) for lo, hi in zip(starts, offsets,
                                                                              strict=True)]


def step_from_info(index: int, observation: str, action: str, reward: float, terminated: bool,
                   truncated: bool, info: dict, completion=None) -> Step:
    """The :class:`Step` a runner records from one ``env.step`` (every runner uses this).

    Args:
        index: Step number in the episode.
        observation: The observation the policy acted on.
        action: The action text sent to ``env.step``.
        reward / terminated / truncated / info: What ``env.step`` returned (``info`` carries
            the standard keys of :func:`memgym.envs.base.step_info`).
        completion: The policy's :class:`memgym.engine.Completion` (token ids, logprobs,
            token offsets), or None for a step copied without tokens.
    """
    spans = [list(span) for span in info.get("op_spans", [])]
    offsets = completion.offsets if completion else ()
    known = bool(offsets) and len(offsets) == len(completion.completion_ids)
    return Step(
        index=index, observation=observation, action=action, ops=info["ops"],
        op_results=info["op_results"], parse_error=info["parse_error"], reward=float(reward),
        reward_terms=info["reward_terms"], terminated=bool(terminated), truncated=bool(truncated),
        segment_end=info.get("segment_end"),
        prompt_ids=list(completion.prompt_ids) if completion else [],
        completion_ids=list(completion.completion_ids) if completion else [],
        logprobs=list(completion.logprobs) if completion else [], info=info_extras(info),
        op_spans=spans, memory_mask=memory_token_mask(offsets, spans) if known else [])


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


def run_episodes(env_id: str, env_kwargs: dict | Sequence[dict], policy: Policy,
                 seeds: Sequence[int],
                 groups: Sequence[int] | None = None, num_envs: int = 8,
                 progress: bool = True, step_threads: int = 1) -> list[Trajectory]:
    """Run one episode per seed with up to ``num_envs`` envs in lockstep.

    At every tick the observations of all running envs go to ``policy.act`` as one batch; an env
    whose episode ends takes the next seed at once. With ``step_threads > 1`` the envs of a tick
    are stepped concurrently, so the envs that end together send their questions to a served
    reader (``answerer="served:<name>"``, :mod:`memgym.envs.answer_server`) as one batch; the
    steps are recorded and the ended envs reset in slot order, as sequential stepping does, so
    the trajectories are the same.

    Args:
        env_id: Registered env id.
        env_kwargs: ``gymnasium.make`` keyword arguments, recorded as the trajectory config
            (must be JSON-serializable for the file and for replay); or one dict per seed, each
            episode then run on an env of its own (e.g. one LoCoMo conversation each).
        policy: Acts on batches of observations.
        seeds: Episode seeds; the same seed twice gives two rollouts of the same episode.
        groups: Group id per seed (default: the seed), for group-relative advantages.
        num_envs: Envs stepped together (the generation batch size).
        progress: Show a progress bar of finished episodes.
        step_threads: Threads stepping the envs of a tick (1: one after another in this
            thread). Each env is stepped by one thread at a time; envs must not share mutable
            state other than a served reader.

    Returns:
        Trajectories in the order of ``seeds``, with segments built when the policy returned
        token ids.

    Raises:
        ConfigError: ``step_threads < 1``, or not one ``env_kwargs`` dict per seed.
    """
    if step_threads < 1:
        raise ConfigError(f"step_threads must be >= 1, got {step_threads}")
    per_episode = not isinstance(env_kwargs, dict)
    if per_episode and len(env_kwargs) != len(seeds):
        raise ConfigError(f"env_kwargs must be a dict or one dict per seed: got "
                          f"{len(env_kwargs)} dicts for {len(seeds)} seeds")
    groups = list(seeds) if groups is None else list(groups)
    pending = deque(enumerate(seeds))
    envs = [gym.make(env_id, **(env_kwargs[i] if per_episode else env_kwargs))
            for i in range(min(num_envs, len(seeds)))]
    slots: list[dict | None] = [None] * len(envs)
    done: dict[int, Trajectory] = {}
    bar = tqdm(total=len(seeds), desc=f"rollout {policy.name}", disable=not progress, leave=False)

    def start(slot: int) -> None:
        if not pending:
            slots[slot] = None
            return
        k, seed = pending.popleft()
        kwargs = env_kwargs[k] if per_episode else env_kwargs
        if per_episode and k >= len(envs):  # the first episodes got their envs above
            envs[slot].close()
            envs[slot] = gym.make(env_id, **kwargs)
        obs, info = envs[slot].reset(seed=int(seed))
        traj = Trajectory(env_id, int(seed), dict(kwargs), policy.name, [], group=groups[k])
        slots[slot] = {"k": k, "obs": obs, "info": info, "traj": traj}

    def apply(i: int, completion: Completion, stepped: tuple) -> None:
        state = slots[i]
        obs, reward, terminated, truncated, info = stepped
        if record_step(state["traj"], state["obs"], completion, obs, reward, terminated,
                       truncated, info):
            done[state["k"]] = state["traj"]
            bar.update()
            start(i)
        else:
            state["obs"], state["info"] = obs, info

    with (ThreadPoolExecutor(step_threads, "memgym-step") if step_threads > 1
          else contextlib.nullcontext()) as pool:
        for slot in range(len(envs)):
            start(slot)
        while any(slots):
            active = [i for i, s in enumerate(slots) if s is not None]
            completions = policy.act([slots[i]["obs"] for i in active],
                                     [slots[i]["info"] for i in active])
            if pool is None:
                for i, completion in zip(active, completions, strict=True):
                    apply(i, completion, envs[i].step(completion.action))
                continue
            stepped = _step_together(pool, step_threads, [envs[i] for i in active],
                                     [c.action for c in completions])
            for i, completion, result in zip(active, completions, stepped, strict=True):
                apply(i, completion, result)
    bar.close()
    for env in envs:
        env.close()
    return [done[k] for k in range(len(seeds))]


def _step_together(pool: ThreadPoolExecutor, threads: int, envs: Sequence[gym.Env],
                   actions: Sequence[str]) -> list[tuple]:
    """``env.step(action)`` of each env on ``pool``, announced to the served readers as
    :func:`~memgym.envs.answer_server.expected_callers`; results in order (the first error,
    in that order, is raised after every step has returned)."""
    from memgym.envs.answer_server import expected_callers

    with expected_callers(len(envs), threads) as callers:
        def step(env: gym.Env, action: str) -> tuple:
            try:
                return env.step(action)
            finally:
                callers.done()

        futures = [pool.submit(step, env, action) for env, action in zip(envs, actions,
                                                                          strict=True)]
        for future in futures:
            future.exception()  # wait for every step before raising any error
        return [future.result() for future in futures]
