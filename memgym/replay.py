"""Replay: rebuild each env from (id, seed, config), feed the recorded actions, and check that
observations, parsed ops, op results, parse errors, rewards, reward terms, episode-end flags,
segment boundaries and the recorded env-specific ``info`` match exactly.

Works on any file :func:`memgym.load_trajectories` reads, whichever runner wrote it: it only
uses the standard step ``info`` keys (:func:`memgym.envs.base.step_info`). Replay compares the
JSON text the file stores with the JSON text of what the env returns (one serialization per
field, no parsing), and parses both only when the texts differ, so a difference in key order
alone is not a divergence.
"""

from __future__ import annotations

import difflib
import gc
import inspect
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import gymnasium as gym
import pandas as pd
from gymnasium.envs.registration import load_env_creator

from memgym.errors import ConfigError, ReplayError, SchemaError
from memgym.trajectory import (
    STANDARD_INFO_KEYS,
    TOKEN_COLUMNS,
    UNRECORDED_INFO_KEYS,
    StoredTrajectory,
    Trajectory,
    env_action,
    step_record,
    stored_trajectories,
    to_json,
)

TEXT_FIELDS = ("observation", "action")
JSON_FIELDS = ("ops", "op_results", "parse_error", "reward_terms", "info")


@dataclass(frozen=True)
class Divergence:
    """The first mismatch in one trajectory.

    Attributes:
        trajectory_id: Trajectory that diverged.
        step: Step index (-1: the reset observation).
        field: What differed: a step field (``"observation"`` is the observation that step
            returned), ``"steps"`` (the file's rows miss steps) or ``"episode_end"``.
        recorded / replayed: The two values, as text.
        diff: Unified diff (difflib) of the two, for text and JSON fields; "" otherwise.
    """

    trajectory_id: str
    step: int
    field: str
    recorded: str
    replayed: str
    diff: str = ""

    def describe(self) -> str:
        """Multi-line human-readable report."""
        head = f"trajectory {self.trajectory_id} step {self.step} field {self.field}"
        if self.diff:
            return f"{head}\n{self.diff}"
        return f"{head}\n  recorded: {self.recorded}\n  replayed: {self.replayed}"


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

    @property
    def steps_per_second(self) -> float:
        """Env steps replayed per second of wall time."""
        return self.steps / self.seconds if self.seconds else float("inf")


UNTRUSTED_ENV_KEYS = ("data_path",)  # a file must not pick which data file replay opens


def make_env(env_id: str, config: dict | str) -> gym.Env:
    """``gymnasium.make(env_id, **config)`` for a recorded trajectory (``config`` as a dict or
    as the file's JSON text); files are untrusted, so the config is checked first, and a
    recorded ``data_path`` is dropped: data comes from the data directories
    (``$MEMGYM_DATA_DIR`` first), checked against its pinned sha256.

    Raises:
        ConfigError: ``env_id`` is not registered (e.g. its package was not imported), the
            config is not a JSON object, or it names arguments the env does not take.
    """
    import memgym.envs  # noqa: F401  (registers the envs)

    if env_id not in gym.envs.registry:
        raise ConfigError(f"env id {env_id!r} of the trajectory is not registered")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"env config of {env_id} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"env config of {env_id} must be a JSON object, got "
                          f"{type(config).__name__}")
    config = {k: v for k, v in config.items() if k not in UNTRUSTED_ENV_KEYS}
    spec = gym.envs.registry[env_id]
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else (
        spec.entry_point)
    try:
        inspect.signature(creator).bind(**{**spec.kwargs, **config})
    except TypeError as exc:
        raise ConfigError(f"env config of {env_id} does not fit the env: {exc}") from exc
    return gym.make(env_id, **config)


def _lines(name: str, text: str) -> list[str]:
    if name in JSON_FIELDS:
        return json.dumps(json.loads(text), indent=1, sort_keys=True).splitlines()
    return text.splitlines() or [text]


def diff_texts(name: str, recorded: str, replayed: str) -> str:
    """Unified diff of two values of field ``name`` (JSON fields pretty-printed first)."""
    return "\n".join(difflib.unified_diff(_lines(name, recorded), _lines(name, replayed),
                                          "recorded", "replayed", lineterm="", n=2))


def _mismatch(rec: dict, next_obs: str | None, result: tuple) -> tuple[str, str, str] | None:
    """First field where a recorded step differs from what the env returned:
    ``(field, recorded, replayed)`` as text, or None."""
    obs, reward, terminated, truncated, info = result
    names = JSON_FIELDS if rec.get("info") is not None else JSON_FIELDS[:-1]  # None: unrecorded
    replayed = [info[name] for name in names[:4]]
    if len(names) == 5:
        replayed.append({k: v for k, v in info.items()
                         if k not in STANDARD_INFO_KEYS and k not in UNRECORDED_INFO_KEYS})
    # One encoding of all fields: a JSON list is "[" + ", ".join(item texts) + "]".
    if to_json(replayed) != f"[{', '.join(rec[name] for name in names)}]":
        for name, value in zip(names, replayed, strict=True):
            text = to_json(value)
            if text != rec[name] and json.loads(text) != json.loads(rec[name]):
                return name, rec[name], text
    scalars = (("reward", float(rec["reward"]), float(reward)),
               ("terminated", bool(rec["terminated"]), bool(terminated)),
               ("truncated", bool(rec["truncated"]), bool(truncated)),
               ("segment_end", rec["segment_end"] or None, info.get("segment_end")))
    for name, recorded, replayed in scalars:
        if recorded != replayed:
            return name, repr(recorded), repr(replayed)
    if next_obs is not None and next_obs != obs:
        return "observation", next_obs, obs
    return None


def _divergence(traj_id: str, step: int, name: str, recorded: str, replayed: str) -> Divergence:
    diff = diff_texts(name, recorded, replayed) if name in TEXT_FIELDS + JSON_FIELDS else ""
    return Divergence(traj_id, step, name, recorded, replayed, diff)


def replay_records(env: gym.Env, traj_id: str, seed: int, steps: list[dict],
                   final_observation: str | None) -> tuple[Divergence | None, int]:
    """Reset ``env`` with ``seed``, feed the recorded actions and compare every field.

    Args:
        env: The env, built from the trajectory's id and config.
        traj_id: For the report.
        seed: Reset seed.
        steps: Step records as stored (:func:`memgym.trajectory.step_record`).
        final_observation: Observation after the last record, or None when unknown (only
            a prefix of the episode is given).

    Returns:
        The first divergence (or None) and the number of steps replayed.
    """
    obs, _ = env.reset(seed=seed)
    first = steps[0]["observation"] if steps else final_observation
    if first is not None and first != obs:
        return _divergence(traj_id, -1, "observation", first, obs), 0
    for k, rec in enumerate(steps):
        result = env.step(env_action(rec["action"], rec.get("info")))
        next_obs = steps[k + 1]["observation"] if k + 1 < len(steps) else final_observation
        if found := _mismatch(rec, next_obs, result):
            return _divergence(traj_id, k, *found), k + 1
        if (result[2] or result[3]) and k + 1 < len(steps):  # the env takes no step past it
            return Divergence(traj_id, k, "episode_end",
                              f"the file holds {len(steps) - k - 1} more steps after this one",
                              "the episode ended at this step"), k + 1
    if final_observation is not None and steps and not (
            steps[-1]["terminated"] or steps[-1]["truncated"]):
        return Divergence(traj_id, len(steps) - 1, "episode_end", "episode ends after this step",
                          "the recorded flags say it continues"), len(steps)
    return None, len(steps)


def _replay_stored(stored: StoredTrajectory, env: gym.Env) -> tuple[Divergence | None, int]:
    meta = stored.meta
    if not stored.problem:
        return replay_records(env, stored.id, int(meta["seed"]), stored.steps,
                              meta["final_observation"])
    divergence, steps = replay_records(env, stored.id, int(meta["seed"]),
                                       stored.steps[:stored.first_bad_step], None)
    return divergence or Divergence(stored.id, stored.first_bad_step, "steps", stored.problem,
                                    "(the file holds no such step)"), steps


def _replay_rows(frame: pd.DataFrame) -> list[tuple[Divergence | None, int]]:
    """Replay the trajectories of ``frame`` in file order, building each distinct
    (env id, config) env once."""
    envs: dict[tuple[str, str], gym.Env] = {}
    out = []
    for stored in stored_trajectories(frame, segments=False):
        key = (stored.meta["env_id"], stored.meta["config"])
        if key not in envs:
            envs[key] = make_env(*key)
        try:
            out.append(_replay_stored(stored, envs[key]))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"trajectory {stored.id}: a JSON field is not valid JSON ({exc})"
                              ) from exc
    for env in envs.values():
        env.close()
    return out


def replay(frame: pd.DataFrame, workers: int = 1) -> ReplayReport:
    """Replay every trajectory of a :func:`memgym.load_trajectories` frame.

    Envs are built once per distinct (env id, config) and process, and reused across
    trajectories. A trajectory whose rows miss steps is replayed up to the first missing step and
    reported with field ``"steps"`` there (unless it diverged earlier).

    Args:
        frame: Trajectory rows.
        workers: Processes that replay in parallel (trajectories dealt round-robin; each
            process pays its env imports once, so this pays off from a few thousand steps).
            Results do not depend on it.

    Returns:
        A :class:`ReplayReport` with at most one divergence per trajectory, in file order.

    Raises:
        ConfigError: ``workers`` < 1, or a trajectory's env id is not registered.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    # trajectory number (file order) of each row
    number = pd.factorize(frame["trajectory_id"], sort=False)[0]
    count = int(number.max()) + 1 if len(number) else 0
    if workers == 1 or count < 2:
        # the loaded rows live until the end: keep the cyclic collector, which the replay's
        # many small allocations trigger, from re-scanning them (~15% of a replay's time)
        gc.freeze()
        try:
            results = _replay_rows(frame)
        finally:
            gc.unfreeze()
    else:
        # each worker groups and replays every workers-th trajectory; token ids stay here
        steps_only = frame.drop(columns=list(TOKEN_COLUMNS))
        parts = [steps_only[number % workers == w] for w in range(workers)]
        # forkserver: a fresh server process forks the workers (plain fork would copy a
        # parent's threads' locks, e.g. torch's, in whatever state they are)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["memgym.replay", "memgym.envs"])
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            done = list(pool.map(_replay_rows, parts))
        results = [done[i % workers][i // workers] for i in range(count)]
    report = ReplayReport(trajectories=count, steps=sum(steps for _, steps in results),
                          divergences=[d for d, _ in results if d is not None])
    report.seconds = time.perf_counter() - start
    return report


def replay_prefix(env: gym.Env, traj: Trajectory, k: int) -> tuple[str, dict]:
    """Reset ``env`` with the trajectory's seed and replay its first ``k`` actions, checking
    each step against the record (the state a fork at step ``k`` starts from).

    Returns:
        The observation and ``info`` the policy saw at step ``k`` (the reset ones if k = 0).

    Raises:
        ConfigError: ``k`` is not in ``[0, len(traj.steps))``.
        ReplayError: A replayed step differs from the record.
    """
    if not 0 <= k < len(traj.steps):
        raise ConfigError(f"fork step must be in [0, {len(traj.steps)}) for trajectory "
                          f"{traj.id}, got {k}")
    obs, info = env.reset(seed=traj.seed)
    if obs != traj.steps[0].observation:
        raise ReplayError(_divergence(traj.id, -1, "observation", traj.steps[0].observation,
                                      obs).describe())
    for j in range(k):
        result = env.step(env_action(traj.steps[j].action, traj.steps[j].info))
        if found := _mismatch(step_record(traj.steps[j]), traj.steps[j + 1].observation, result):
            raise ReplayError(_divergence(traj.id, j, *found).describe())
        if result[2] or result[3]:
            raise ReplayError(Divergence(traj.id, j, "episode_end", "the trajectory holds more "
                                         "steps after this one",
                                         "the episode ended at this step").describe())
        obs, info = result[0], result[4]
    return obs, info
