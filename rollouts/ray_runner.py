"""Distributed rollouts on Ray: env workers and policy engines as actors, continuous batching.

Layout. ``env_workers`` :class:`~memgym.rollouts.ray_actors.EnvWorker` actors (fractional CPUs,
spread over the nodes) each hold ``envs_per_worker`` envs and step a *batch* of them per remote
call; ``engines`` :class:`~memgym.rollouts.ray_actors.PolicyActor` actors each run the policy
(an LLM engine or a scripted baseline), in a placement group when they need GPUs.

Continuous batching (at step granularity, as in vLLM's scheduler but over env steps). The driver
keeps the envs that wait for an action in a ready queue; an idle engine takes whatever is ready
(up to ``max_batch``) at once, so an env whose step came back goes straight into the next engine
call instead of waiting for the slowest env of its batch. The actions of one engine call go to
their workers as one call per worker; while a worker is busy, its actions accumulate and leave
together. The driver only calls ``ray.wait`` on the outstanding ObjectRefs: Ray does all
scheduling, transport and restarts (no scheduler or RPC of our own).

Fault tolerance. Actors have ``max_restarts``. Engine calls are retried by Ray on the restarted
actor (``max_task_retries``: an action is a function of the observation, so a retry is
harmless); the envs keep their state and wait. An env worker's calls are not retried (a step
mutates its env): when one fails with :class:`ray.exceptions.RayActorError` (killed process,
removed node), the driver discards the partial steps of that worker's in-flight episodes and
re-runs them from their seeds on the restarted actor. Every requested episode comes back exactly
once, in the order of ``seeds``; completions that arrive for a discarded attempt are dropped.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ray
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from tqdm.auto import tqdm

from memgym.config import RolloutConfig
from memgym.engine import Completion
from memgym.errors import ConfigError, RolloutError
from memgym.rollouts.policy import Policy
from memgym.rollouts.ray_actors import EnvWorker, PolicyActor
from memgym.rollouts.runner import record_step
from memgym.trajectory import Trajectory

if TYPE_CHECKING:
    from memgym.rollouts.weight_sync import WeightBroadcaster


def init_ray(config: RolloutConfig) -> None:
    """Connect to or start Ray as ``config.ray_address`` says (no-op if already connected).

    ``"local"`` starts a private instance bound to 127.0.0.1 without dashboard, with a small
    object store (``config.object_store_memory``) and ``config.temp_dir`` (DESIGN §4).

    Raises:
        ConfigError: ``config.ray_address`` is None.
    """
    if ray.is_initialized():
        return
    if config.ray_address is None:
        raise ConfigError("Ray rollouts need rollout.ray_address: local, auto or ray://host:port")
    if config.ray_address == "local":
        ray.init(address="local", object_store_memory=config.object_store_memory,
                 include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=config.temp_dir)
    else:
        ray.init(address=config.ray_address)


@dataclass
class RolloutStats:
    """What one :meth:`RayRolloutRunner.run` did.

    Attributes:
        episodes: Episodes returned.
        env_steps: Env steps whose results were kept or discarded (all the work done).
        env_calls / engine_calls: Remote calls to env workers / engines.
        wall_seconds: Wall time of the run.
        env_seconds: Time inside ``env.step`` / ``env.reset``, summed over workers.
        policy_seconds: Time inside ``policy.act``, summed over engines.
        worker_failures: Env-worker calls that failed (actor died or was restarting) and
            were recovered by re-running that worker's episodes.
        reruns: Episodes re-run from their seeds after a worker failure.
        episodes_per_node: Ray node id (hex) → episodes finished by a worker there.
    """

    episodes: int = 0
    env_steps: int = 0
    env_calls: int = 0
    engine_calls: int = 0
    wall_seconds: float = 0.0
    env_seconds: float = 0.0
    policy_seconds: float = 0.0
    worker_failures: int = 0
    reruns: int = 0
    episodes_per_node: Counter = field(default_factory=Counter)


@dataclass
class _Slot:
    """One env of one worker and the episode it runs (``k``: position in ``seeds``)."""

    worker: int
    index: int
    k: int | None = None
    attempt: int = -1
    obs: str = ""
    info: dict = field(default_factory=dict)
    traj: Trajectory | None = None
    completion: Completion | None = None


class RayRolloutRunner:
    """Runs episodes on Ray actors; same :class:`~memgym.trajectory.Trajectory` output as
    :func:`memgym.rollouts.run_episodes` (see the module docstring for the design).

    Args:
        env_id: Registered env id.
        env_kwargs: ``gymnasium.make`` keyword arguments (recorded as the trajectory config).
        policy_factory: No-argument callable building the policy inside each engine actor
            (e.g. a baseline class, or a ``functools.partial`` that loads a model).
        config: Actor counts, resources, batching and restarts; Ray is started or joined
            from ``config.ray_address`` unless already initialized.

    Raises:
        ConfigError: Ray is not initialized and ``config.ray_address`` is None, or a
            placement group was asked for with an empty bundle.
    """

    def __init__(self, env_id: str, env_kwargs: dict, policy_factory: Callable[[], Policy],
                 config: RolloutConfig | None = None) -> None:
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs)
        self.config = config = config or RolloutConfig()
        bundle = {key: value for key, value in (("CPU", config.engine_cpus),
                                                ("GPU", config.engine_gpus)) if value > 0}
        use_group = config.engine_gpus > 0 if config.placement_group is None else (
            config.placement_group)
        if use_group and not bundle:
            raise ConfigError("a placement group needs engine_cpus or engine_gpus > 0, got "
                              "an empty bundle")
        init_ray(config)
        self.workers = [ray.remote(EnvWorker).options(
            num_cpus=config.env_worker_cpus, max_restarts=config.max_restarts,
            scheduling_strategy="SPREAD").remote(env_id, self.env_kwargs, config.envs_per_worker)
            for _ in range(config.env_workers)]
        self.placement_group = None
        strategies: list = ["DEFAULT"] * config.engines
        if use_group:
            self.placement_group = placement_group([bundle] * config.engines, strategy="PACK")
            ray.get(self.placement_group.ready())
            strategies = [PlacementGroupSchedulingStrategy(self.placement_group, i)
                          for i in range(config.engines)]
        self.engines = [ray.remote(PolicyActor).options(
            num_cpus=config.engine_cpus, num_gpus=config.engine_gpus,
            max_restarts=config.max_restarts, max_task_retries=config.max_restarts,
            scheduling_strategy=strategy).remote(policy_factory) for strategy in strategies]
        self.policy_name: str = ray.get(self.engines[0].name.remote())
        self.stats = RolloutStats()
        self.weight_sync: WeightBroadcaster | None = None  # made by the first gloo/nccl sync

    def run(self, seeds: Sequence[int], groups: Sequence[int] | None = None,
            progress: bool = True, on_progress: Callable[[RolloutStats], None] | None = None
            ) -> list[Trajectory]:
        """Run one episode per seed.

        Args:
            seeds: Episode seeds; the same seed twice gives two rollouts of the same episode.
            groups: Group id per seed (default: the seed), for group-relative advantages.
            progress: Show a progress bar of finished episodes.
            on_progress: Called with :attr:`stats` after every env-worker result (monitoring,
                fault-injection tests).

        Returns:
            Trajectories in the order of ``seeds``, each requested episode exactly once.

        Raises:
            ConfigError: ``groups`` and ``seeds`` differ in length.
            RolloutError: An actor failed more than ``config.max_restarts`` times.
        """
        groups = list(seeds) if groups is None else list(groups)
        if len(groups) != len(seeds):
            raise ConfigError(f"expected one group per seed ({len(seeds)}), got {len(groups)}")
        self.stats = RolloutStats()
        tick = time.perf_counter()
        bar = tqdm(total=len(seeds), desc=f"ray rollout {self.policy_name}",
                   disable=not progress, leave=False)
        try:
            trajectories = _Rollout(self, [int(s) for s in seeds], groups, bar,
                                    on_progress).run()
        finally:
            bar.close()
        self.stats.wall_seconds = time.perf_counter() - tick
        return trajectories

    def load_state_dict(self, state_dict: dict) -> None:
        """Send trainer weights to every engine: with ``config.weight_sync`` ``object_store``
        one object-store copy (see :meth:`~memgym.rollouts.ray_actors.PolicyActor.
        load_state_dict`); with ``gloo`` / ``nccl`` a broadcast from this process, rank 0 of a
        group with the engines (:mod:`memgym.rollouts.weight_sync`, joined on the first sync).

        Raises:
            PolicyError: An engine has no weights (e.g. a scripted baseline).
            ConfigError: A value of ``state_dict`` is not a tensor (``gloo`` / ``nccl``).
        """
        if self.config.weight_sync == "object_store":
            ref = ray.put({name: tensor.detach().cpu() for name, tensor in state_dict.items()})
            ray.get([engine.load_state_dict.remote(ref) for engine in self.engines])
            return
        from memgym.rollouts.weight_sync import check_state_dict

        check_state_dict(state_dict)  # before the engines start waiting for tensors
        if self.weight_sync is None:
            self.weight_sync = self._join_weight_sync()
        receives = [engine.receive_weights.remote() for engine in self.engines]
        synced = False
        try:
            self.weight_sync.broadcast(state_dict)
            ray.get(receives)
            synced = True
        finally:
            if not synced:  # the group may be out of step: the next sync forms a new one
                self.weight_sync.close()
                self.weight_sync = None

    def _join_weight_sync(self) -> WeightBroadcaster:
        """Form the weight-sync group: this process is rank 0, engine ``i`` rank ``i + 1``."""
        from memgym.rollouts.weight_sync import WeightBroadcaster

        ray.get([engine.check_weights.remote() for engine in self.engines])  # fail before waits
        sync = WeightBroadcaster(len(self.engines), self.config.weight_sync,
                                 ray.util.get_node_ip_address())
        joins = [engine.join_weight_sync.remote(*sync.address, rank, sync.size,
                                                self.config.weight_sync)
                 for rank, engine in enumerate(self.engines, 1)]
        sync.connect()
        ray.get(joins)
        return sync

    def shutdown(self) -> None:
        """Leave the weight-sync group, kill the actors and free the placement group (Ray
        itself stays up)."""
        if self.weight_sync is not None:
            self.weight_sync.close()
            self.weight_sync = None
        for actor in [*self.workers, *self.engines]:
            ray.kill(actor)
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None

    def __enter__(self) -> RayRolloutRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


class _Rollout:
    """The driver state of one :meth:`RayRolloutRunner.run` (see the module docstring)."""

    def __init__(self, runner: RayRolloutRunner, seeds: list[int], groups: list[int],
                 bar: tqdm, on_progress: Callable[[RolloutStats], None] | None) -> None:
        self.runner, self.seeds, self.groups = runner, seeds, groups
        self.bar, self.on_progress, self.stats = bar, on_progress, runner.stats
        per_worker = runner.config.envs_per_worker
        self.slots = [[_Slot(w, i) for i in range(per_worker)]
                      for w in range(len(runner.workers))]
        self.pending = deque(range(len(seeds)))
        self.ready: deque[tuple[_Slot, int]] = deque()  # envs waiting for an action
        self.outbox: list[tuple[list, list]] = [([], []) for _ in runner.workers]
        self.inflight: dict[ray.ObjectRef, tuple[str, int, object]] = {}
        self.busy_workers: set[int] = set()
        self.busy_engines: set[int] = set()
        self.failures = [0] * len(runner.workers)  # deaths seen, against max_restarts
        self.instances: list[str | None] = [None] * len(runner.workers)
        self.attempts = 0
        self.done: dict[int, Trajectory] = {}

    def run(self) -> list[Trajectory]:
        for worker_slots in self.slots:
            for slot in worker_slots:
                self.assign(slot)
        for w in range(len(self.slots)):
            self.flush(w)
        while len(self.done) < len(self.seeds):
            self.dispatch()
            [ref], _ = ray.wait(list(self.inflight), num_returns=1)
            kind, index, payload = self.inflight.pop(ref)
            if kind == "engine":
                self.on_actions(ref, index, payload)
            else:
                self.on_env_result(ref, index, payload)
                if self.on_progress is not None:
                    self.on_progress(self.stats)
        self.stats.episodes = len(self.done)
        return [self.done[k] for k in range(len(self.seeds))]

    def assign(self, slot: _Slot) -> None:
        """Give ``slot`` the next pending episode (its reset goes in the worker's outbox)."""
        if not self.pending:
            slot.k, slot.attempt = None, -1
            return
        k = slot.k = self.pending.popleft()
        self.attempts += 1
        slot.attempt = self.attempts
        slot.traj = Trajectory(self.runner.env_id, self.seeds[k], dict(self.runner.env_kwargs),
                               self.runner.policy_name, [], group=self.groups[k])
        self.outbox[slot.worker][1].append((slot, self.seeds[k]))

    def flush(self, w: int) -> None:
        """Send worker ``w`` its accumulated steps and resets, unless a call is in flight."""
        steps, resets = self.outbox[w]
        if w in self.busy_workers or not (steps or resets):
            return
        self.outbox[w] = ([], [])
        ref = self.runner.workers[w].run.remote(
            [(slot.index, slot.completion.action) for slot in steps],
            [(slot.index, seed) for slot, seed in resets], self.instances[w])
        self.inflight[ref] = ("env", w, (steps, [slot for slot, _ in resets]))
        self.busy_workers.add(w)
        self.stats.env_calls += 1

    def dispatch(self) -> None:
        """Give each idle engine whatever envs are ready (up to ``max_batch``)."""
        for e, engine in enumerate(self.runner.engines):
            if e in self.busy_engines:
                continue
            batch: list[tuple[_Slot, int]] = []
            while self.ready and len(batch) < self.runner.config.max_batch:
                slot, attempt = self.ready.popleft()
                if slot.attempt == attempt:
                    batch.append((slot, attempt))
            if not batch:
                return
            ref = engine.act.remote([s.obs for s, _ in batch], [s.info for s, _ in batch])
            self.inflight[ref] = ("engine", e, batch)
            self.busy_engines.add(e)
            self.stats.engine_calls += 1

    def on_actions(self, ref: ray.ObjectRef, e: int, batch: list[tuple[_Slot, int]]) -> None:
        self.busy_engines.discard(e)
        try:
            completions, seconds = ray.get(ref)
        except RayActorError as exc:  # Ray retried max_task_retries times already
            raise RolloutError(f"engine actor {e} failed more than "
                               f"{self.runner.config.max_restarts} times: {exc}") from exc
        self.stats.policy_seconds += seconds
        workers = set()
        for (slot, attempt), completion in zip(batch, completions, strict=True):
            if slot.attempt == attempt:  # else its episode was discarded meanwhile
                slot.completion = completion
                self.outbox[slot.worker][0].append(slot)
                workers.add(slot.worker)
        for w in workers:
            self.flush(w)

    def on_env_result(self, ref: ray.ObjectRef, w: int,
                      payload: tuple[list[_Slot], list[_Slot]]) -> None:
        self.busy_workers.discard(w)
        stepped_slots, reset_slots = payload
        try:
            result = ray.get(ref)
        except ActorUnavailableError:  # restarting, or restarted: Ray counts the restarts
            self.recover(w)
            return
        except RayActorError as exc:  # died (for good once Ray's max_restarts are spent)
            self.failures[w] += 1
            if self.failures[w] > self.runner.config.max_restarts:
                raise RolloutError(f"env worker {w} failed more than "
                                   f"{self.runner.config.max_restarts} times: {exc}") from exc
            self.recover(w)
            return
        if result is None:  # a restarted instance got steps for envs it never had
            self.recover(w)
            return
        stepped, reset, seconds, node, self.instances[w] = result
        self.stats.env_seconds += seconds
        self.stats.env_steps += len(stepped)
        for slot, (obs, reward, terminated, truncated, info) in zip(stepped_slots, stepped,
                                                                    strict=True):
            if record_step(slot.traj, slot.obs, slot.completion, obs, reward, terminated,
                           truncated, info):
                self.done[slot.k] = slot.traj
                self.stats.episodes_per_node[node] += 1
                self.bar.update()
                self.assign(slot)
            else:
                self.enqueue(slot, obs, info)
        for slot, (obs, info) in zip(reset_slots, reset, strict=True):
            self.enqueue(slot, obs, info)
        self.flush(w)

    def enqueue(self, slot: _Slot, obs: str, info: dict) -> None:
        slot.obs, slot.info = obs, info
        self.ready.append((slot, slot.attempt))

    def recover(self, w: int) -> None:
        """Worker ``w``'s call failed: re-run its in-flight episodes from their seeds on
        whatever instance answers next (Ray restarts the actor; resets need no old state)."""
        self.stats.worker_failures += 1
        self.instances[w] = None
        self.outbox[w] = ([], [])
        lost = [slot for slot in self.slots[w] if slot.k is not None]
        for slot in reversed(lost):
            self.pending.appendleft(slot.k)
            slot.k, slot.attempt = None, -1
        self.stats.reruns += len(lost)
        for slot in self.slots[w]:
            self.assign(slot)
        self.flush(w)
