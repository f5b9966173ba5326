"""Rollout settings (the ``rollout:`` section of a run config): which engine generates, where
(in-process or Ray actors), how often it receives new weights and how stale it may be.

Kept apart from :mod:`memgym.rollouts` so that reading a config never imports torch or Ray.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from memgym.config.base import Section


class RolloutConfig(Section):
    """Where and how rollouts run.

    Attributes:
        engine: ``hf`` (transformers, the trained model object itself in-process), ``vllm``
            (``vllm.LLM``; weights synced after updates) or ``openai`` (an OpenAI-compatible
            server at ``base_url``: rollouts and evaluation only, its weights cannot be synced).
        engine_kwargs: Extra constructor arguments of the engine, e.g. for vLLM
            ``{gpu_memory_utilization: 0.4, max_model_len: 8192}``
            (:class:`memgym.rollouts.vllm.VLLMEngine`).
        base_url: The server of the ``openai`` engine, e.g. ``http://localhost:8000/v1``.
        sync_every: Send the trainer's weights to a ``vllm`` engine (or Ray engine actors)
            after every this many updates; rollouts in between run on weights up to
            ``sync_every - 1`` versions old (each trajectory records its version).
        weight_sync: How ``load_state_dict`` reaches Ray engine actors: ``object_store`` (one
            Ray object), or a broadcast from the trainer over a torch.distributed group of its
            own with the engines, ``gloo`` (CPU) or ``nccl`` (engines on their own GPUs).
        max_staleness: 0: synchronous (rollout, then update, as before). k > 0: the rollouts of
            iteration i+1 run while the trainer updates on iteration i, on weights at most k
            versions behind the trainer's (AReaL, prime-rl, TRL's AsyncGRPOTrainer); the
            trainer corrects the lag with its importance weights.
        ray_address: None runs the local runner in-process; ``"local"`` starts a private Ray
            instance on this machine (loopback only); ``"auto"`` joins the running cluster;
            ``"ray://host:port"`` connects through Ray Client.
        env_workers: Env-worker actors (each steps ``envs_per_worker`` envs, one remote call
            per batch of steps).
        envs_per_worker: Envs each worker holds.
        env_worker_cpus: CPUs reserved per env worker; fractional so that many workers, the
            engine and the driver share few cores (two ``num_cpus=1`` actors on 2 cores
            deadlock task scheduling, DESIGN §4).
        engines: Policy/engine actors; each takes whatever observations are ready, up to
            ``max_batch``, per call (continuous batching at step granularity).
        engine_cpus / engine_gpus: Resources of one engine actor.
        placement_group: Reserve engine resources with a placement group; None: only when
            ``engine_gpus > 0``.
        max_batch: Most observations per engine call.
        max_restarts: Restarts allowed per actor (and failed calls per env worker) before the
            rollout fails with :class:`memgym.errors.RolloutError`.
        object_store_memory: Bytes of the object store of a ``"local"`` instance (Ray's
            default reserves 30% of RAM as shared memory).
        temp_dir: Session directory of a ``"local"`` instance; None: Ray's default.
    """

    engine: Literal["hf", "vllm", "openai"] = "hf"
    engine_kwargs: dict = Field(default_factory=dict)
    base_url: str | None = None
    sync_every: int = Field(1, ge=1)
    weight_sync: Literal["object_store", "gloo", "nccl"] = "object_store"
    max_staleness: int = Field(0, ge=0)
    ray_address: str | None = None
    env_workers: int = Field(2, ge=1)
    envs_per_worker: int = Field(4, ge=1)
    env_worker_cpus: float = Field(0.25, gt=0)
    engines: int = Field(1, ge=1)
    engine_cpus: float = Field(0.5, ge=0)
    engine_gpus: float = Field(0.0, ge=0)
    placement_group: bool | None = None
    max_batch: int = Field(16, ge=1)
    max_restarts: int = Field(4, ge=0)
    object_store_memory: int = Field(200_000_000, ge=78_643_200)
    temp_dir: str | None = None

    @model_validator(mode="after")
    def _engine_consistent(self):
        if self.sync_every > max(1, self.max_staleness):
            raise ValueError(f"rollout.sync_every {self.sync_every} lets rollouts fall "
                             f"{self.sync_every} updates behind: set rollout.max_staleness >= "
                             f"it (asynchronous), or sync_every 1")
        if self.weight_sync == "nccl" and self.engine_gpus == 0:
            raise ValueError("rollout.weight_sync nccl needs engines on GPUs (engine_gpus > 0); "
                             "use gloo on CPU")
        if (self.engine == "openai") != (self.base_url is not None):
            raise ValueError("rollout.base_url is the openai engine's server: set both or "
                             f"neither (engine {self.engine!r}, base_url {self.base_url!r})")
        return self
