"""The training rollouts of a run: the configured engine, fed the trainer's weights, and
optionally generating one batch ahead of the trainer (asynchronous RL with bounded staleness).

Every trajectory records ``policy_version``: the trainer step whose weights generated it. With
``rollout.max_staleness: 0`` a batch is generated after the previous update, on weights that
are never behind (the trainer's own model for ``hf``). With ``max_staleness: k > 0`` the batch
of iteration i+1 is generated in a background thread while the trainer updates on iteration
i's (AReaL, prime-rl and TRL's AsyncGRPOTrainer overlap them the same way), on an engine that
holds its own copy of the weights, pushed every ``rollout.sync_every`` updates; a batch is
then at most ``sync_every <= k`` updates old when it is trained on, and the trainer's
importance weights (``behaviour_logprobs: sampler`` or ``tis_cap``) correct for the lag.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

from memgym.config import TrainConfig
from memgym.engine import Engine, SamplingParams
from memgym.errors import RolloutError
from memgym.rollouts.engines import engine_policy, make_engine
from memgym.rollouts.policy import LLMPolicy
from memgym.rollouts.runner import run_episodes
from memgym.trajectory import Trajectory


class TrainingRollouts:
    """Rollouts for ``memgym train`` as ``config.rollout`` says.

    Args:
        config: The run config (``rollout``, ``model``, ``env_id``, ``env``, ``num_envs``,
            ``lora``; with ``reader`` the envs are stepped on its ``step_threads`` threads, so
            those ending together batch their reads of the served reader).
        model: The trainer's model (its weights are what the engine serves).
        tokenizer: Its tokenizer.
        sampling: Sampling parameters of training rollouts (a per-batch seed is added).
        adapter_dir: Where a LoRA run saves the adapter a ``vllm`` engine loads.
        engine: An engine of kind ``config.rollout.engine`` to use instead of building one
            (e.g. a ``VLLMEngine`` that is already up); it receives the trainer's weights.
        weights: Returns the trainer's whole weights (Hugging Face names) when ``model`` does
            not hold them whole (FSDP2 shards); the engine then loads its own copy of
            ``config.model`` and is sent these at every sync. None: ``model.state_dict()``.

    Attributes:
        version: The trainer step whose weights the engine holds (None before the first sync).
        ahead: Whether batches are generated one iteration ahead (``max_staleness > 0``).
    """

    def __init__(self, config: TrainConfig, model, tokenizer, sampling: SamplingParams,
                 adapter_dir: Path, engine: Engine | None = None,
                 weights: Callable[[], dict] | None = None) -> None:
        rollout = config.rollout
        self.config, self.sampling, self.adapter_dir = config, sampling, adapter_dir
        self.ahead, self.version = rollout.max_staleness > 0, None
        self.engine: Engine | None = None  # None: the engines are Ray actors
        self.trainer_engine: Engine | None = None  # an hf engine over the trainer's model
        self._tokenizer = tokenizer
        self._pool = ThreadPoolExecutor(1, "rollouts") if self.ahead else None
        self._pending: Future | None = None
        self._runner = None
        if rollout.ray_address is not None:
            from memgym.rollouts.ray_runner import RayRolloutRunner

            self._runner = RayRolloutRunner(config.env_id, config.env, partial(
                engine_policy, rollout, config.model, sampling, "policy", config.num_envs),
                rollout)
            self._push: Callable | None = lambda m: self._runner.load_state_dict(m.state_dict())
            return
        shared = (rollout.engine == "hf" and not self.ahead and engine is None
                  and weights is None)
        copied = None if weights is not None or rollout.engine != "hf" else (
            model if shared else copy.deepcopy(model))
        self.engine = engine or make_engine(  # its own tokenizer when it runs in the background
            rollout, config.model, config.num_envs, enable_lora=config.lora is not None,
            hf_model=copied, tokenizer=copy.deepcopy(tokenizer) if self.ahead else tokenizer)
        if shared:
            self.trainer_engine, self._push = self.engine, None
        elif rollout.engine == "hf":  # an engine over its own copy of the weights
            self._push = lambda m: self.engine.model.load_state_dict(
                m.state_dict() if weights is None else weights())
        elif weights is not None:
            self._push = lambda m: self.engine.load_weights(weights().items())
        else:
            self._push = lambda m: self.engine.sync(m, self.adapter_dir)

    def _run(self, seeds: Sequence[int], seed: int) -> list[Trajectory]:
        if self._runner is not None:
            return self._runner.run(seeds)
        policy = LLMPolicy(self.engine, replace(self.sampling, seed=seed), name="policy")
        return run_episodes(self.config.env_id, self.config.env, policy, list(seeds),
                            num_envs=self.config.num_envs,
                            step_threads=self.config.env_step_threads())

    def sync(self, model, step: int, force: bool = False) -> None:
        """Give the engine the trainer's weights at ``step`` when ``sync_every`` updates have
        passed since the last sync (or ``force``); an engine that is the trainer's model only
        records the version."""
        if self._push is None:
            self.version = step
        elif force or self.version is None or step - self.version >= self.config.rollout.sync_every:
            self._push(model)
            self.version = step

    def submit(self, model, step: int, seeds: Sequence[int], seed: int) -> None:
        """Start the rollout of ``seeds`` (sampling seed ``seed``; on Ray, continuous batching
        makes sampling depend on timing) after syncing as :meth:`sync` says. With ``ahead`` it
        runs in the background; :meth:`result` returns it.

        Raises:
            RolloutError: A rollout is already pending.
        """
        if self._pending is not None:
            raise RolloutError("a rollout is already pending: call result() first")
        self.sync(model, step)
        version = self.version

        def job() -> tuple[list[Trajectory], float]:
            tick = time.perf_counter()
            trajs = self._run(seeds, seed)
            for traj in trajs:
                traj.policy_version = version
            return trajs, time.perf_counter() - tick

        if self._pool is not None:
            self._pending = self._pool.submit(job)
        else:
            self._pending = Future()
            self._pending.set_result(job())

    def result(self) -> tuple[list[Trajectory], float]:
        """The pending rollout's trajectories and the seconds it took (waits for it).

        Raises:
            RolloutError: Nothing is pending.
        """
        if self._pending is None:
            raise RolloutError("no rollout is pending: submit() one first")
        pending, self._pending = self._pending, None
        return pending.result()

    def eval_engine(self, model, step: int) -> Engine:
        """An engine that serves the trainer's weights at ``step`` for evaluation: the ``vllm``
        engine after a forced sync when it is idle between iterations (not ``ahead``), else an
        ``hf`` engine over the trainer's model."""
        if self.engine is not None and not self.ahead and self.trainer_engine is None:
            self.sync(model, step, force=True)
            return self.engine
        if self.trainer_engine is None:
            from memgym.rollouts.hf import HFEngine

            self.trainer_engine = HFEngine(model, self._tokenizer, self.config.num_envs,
                                           fast_path=self.config.model.fast_path)
        return self.trainer_engine

    def close(self) -> None:
        """Stop the background thread and the Ray actors (Ray itself stays up)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._runner is not None:
            self._runner.shutdown()

    def __enter__(self) -> TrainingRollouts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
