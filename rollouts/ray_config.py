"""Rollout settings (the ``rollout:`` section of a run config): local runner or Ray cluster.

Kept apart from :mod:`memgym.rollouts.ray_runner` so that reading a config never imports Ray.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class RolloutConfig(BaseModel):
    """Where and how rollouts run.

    Attributes:
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
