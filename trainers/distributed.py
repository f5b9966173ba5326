"""Data-parallel (DDP) and sharded (FSDP2) training through Accelerate.

Every process of the group sees the whole :class:`~memgym.batch.RolloutBatch`, so all of them
compute the same whole-batch loss coefficients (:func:`~memgym.trainers.losses.
update_coefficients`); each computes the loss of its shard of every update's segments
(:meth:`Distributed.even_shard`), scaled by the world size, so that the gradient the strategy
averages over the processes is the one-process gradient of the whole batch. The process group,
the gradient collectives and the sharding are Accelerate's and torch's; this module only
chooses them and reduces the step's statistics with :meth:`accelerate.Accelerator.reduce`.

Sharded checkpoints: :mod:`memgym.trainers.sharded_checkpoint`; Ray workers:
:func:`run_on_ray`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, gather_object
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from memgym.errors import ConfigError

STRATEGIES = ("ddp", "fsdp2")


class Distributed:
    """One process of a data-parallel or sharded training group, from Accelerate.

    Start the processes with ``accelerate launch`` / ``torchrun`` (or :func:`run_on_ray`);
    Accelerate reads the group from their environment. Hand the model and optimizer to a
    trainer with ``GRPOTrainer(..., distributed=dist)``; the trainer calls :meth:`prepare`.

    Args:
        strategy: ``ddp`` or ``fsdp2`` (``fully_shard``, parameters, gradients and optimizer
            state sharded; transformer blocks wrapped by the model's ``_no_split_modules``).
            DeepSpeed ZeRO-3 is not offered: Accelerate's plugin needs a dataloader to size its
            micro-batches and steps its optimizer inside ``backward``, which this trainer's
            whole-batch updates do not fit.
        backend: torch.distributed backend; None: NCCL on GPUs, gloo on CPU.
        use_gpu: Train on this process's GPU (False: on the CPU; None: when CUDA is there).
        mixed_precision: Accelerate's ``no`` | ``bf16`` | ``fp16``: float32 master weights and
            optimizer state, the forward and backward in the lower precision (FSDP2: its
            ``MixedPrecisionPolicy``). Load the model in float32 with it.

    Raises:
        ConfigError: Unknown strategy or backend.
    """

    def __init__(self, strategy: str = "ddp", backend: str | None = None,
                 use_gpu: bool | None = None, mixed_precision: str = "no") -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown distributed strategy {strategy!r}; expected one of "
                              f"{list(STRATEGIES)}")
        if backend not in (None, "gloo", "nccl"):
            raise ConfigError(f"unknown backend {backend!r}; expected 'gloo' or 'nccl'")
        use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
        backend = backend or ("nccl" if use_gpu else "gloo")
        plugins: dict[str, Any] = {}
        if strategy == "fsdp2":
            plugins["fsdp_plugin"] = FullyShardedDataParallelPlugin(
                fsdp_version=2, reshard_after_forward=True,
                auto_wrap_policy="transformer_based_wrap", state_dict_type="SHARDED_STATE_DICT")
        self.strategy = strategy
        self.accelerator = Accelerator(cpu=not use_gpu, mixed_precision=mixed_precision,
                                       **plugins,
                                       kwargs_handlers=[InitProcessGroupKwargs(backend=backend)])

    @classmethod
    def from_config(cls, config: Any) -> Distributed | None:
        """The group of a :class:`memgym.config.run.DistributedConfig`; None for ``none``."""
        if config.strategy == "none":
            return None
        return cls(config.strategy, config.backend, config.use_gpu, config.mixed_precision)

    @property
    def rank(self) -> int:
        """This process's index in the group, 0 … world_size − 1."""
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        """Processes in the group."""
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes files and logs)."""
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        """This process's device."""
        return self.accelerator.device

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
                ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Wrap (DDP) or shard (FSDP2) a model and its optimizer, on :attr:`device`.

        Call it once per model (a PPO critic is a second call). Take the trainable parameters
        from the returned model: FSDP2 replaces them with sharded ones. Accelerate runs FSDP
        only on accelerators (on CPU it falls back to DDP), so ``fsdp2`` on CPU applies
        torch's ``fully_shard`` itself: to every block of the model's ``ModuleList`` s (the
        transformer layers), then to the root, and points the (still empty) optimizer's parameter
        groups at the sharded parameters.

        Raises:
            ConfigError: ``fsdp2`` on CPU with an optimizer that already has state.
        """
        if self.strategy != "fsdp2" or self.accelerator.is_fsdp2 or self.world_size == 1:
            return self.accelerator.prepare(model, optimizer)
        if optimizer.state:
            raise ConfigError("prepare the model and optimizer before the first step")
        model = model.to(self.device)
        names = {id(p): name for name, p in model.named_parameters()}
        for blocks in [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]:
            for block in blocks:
                fully_shard(block)
        fully_shard(model)
        sharded = dict(model.named_parameters())
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[id(p)]] for p in group["params"]]
        return model, optimizer

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model without its DDP wrapper (FSDP2 shards in place: the same module)."""
        return self.accelerator.unwrap_model(model)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's weights on every rank (FSDP2 gathers its shards:
        ``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with
        ``full_state_dict``; a collective, so every rank must call it), with Hugging Face
        names, e.g. to sync a rollout engine that holds its own copy."""
        if isinstance(model, FSDPModule):
            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return self.unwrap(model).state_dict()

    def shard(self, items: list) -> list:
        """This rank's contiguous slice of ``items`` (``ceil(n / world_size)`` each; the last
        ranks may get fewer or none)."""
        size = math.ceil(len(items) / self.world_size)
        return list(items[self.rank * size:(self.rank + 1) * size])

    def even_shard(self, items: list) -> tuple[list, int]:
        """:meth:`shard`, padded to ``ceil(n / world_size)`` items on every rank by repeating
        ``items[0]``, so that all ranks run the same number of forward and backward passes (the
        collectives of DDP and FSDP2 need that).

        Returns:
            ``(slice, real)``: the padded slice and how many of its first items are real (the
            padding must weigh 0).
        """
        mine = self.shard(items)
        size = math.ceil(len(items) / self.world_size)
        return mine + [items[0]] * (size - len(mine)), len(mine)

    def gather(self, items: list) -> list:
        """All ranks' ``items`` (picklable objects), concatenated in rank order."""
        return gather_object(list(items))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (a picklable object) on every rank."""
        return broadcast_object_list([value])[0]

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the ranks (float64)."""
        names = sorted(values)
        local = torch.tensor([values[n] for n in names], dtype=torch.float64, device=self.device)
        return dict(zip(names, self.accelerator.reduce(local, "sum").tolist(), strict=True))

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        local = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.accelerator.gather(local).max())

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of this rank's share of the loss, times the world size: DDP, FSDP2 and
        ZeRO average the gradients over the ranks, and the average of ``world_size × share``
        is the gradient of the sum of the shares, the one-process gradient."""
        self.accelerator.backward(loss * self.world_size)

    def no_sync(self, model: torch.nn.Module, skip: bool):
        """Accelerate's ``no_sync(model)`` when ``skip`` (a micro-batch before the last of an
        update: gradients accumulate locally), else a no-op context."""
        if not skip:
            return contextlib.nullcontext()
        if isinstance(model, FSDPModule) and not self.accelerator.is_fsdp2:
            return _fsdp_no_sync(model)
        return self.accelerator.no_sync(model)

    def clip_grad_norm_(self, parameters: list[torch.Tensor], max_norm: float) -> float:
        """Clip the (averaged, possibly sharded) gradients; returns the total norm before
        clipping, the same on every rank. Sharded (DTensor) gradients go straight to torch's
        ``clip_grad_norm_``, which reduces their norm over the ranks: Accelerate's FSDP2 path
        compares ``parameters`` with its first prepared model's and fails for any other model
        (PPO's critic, a second trainer in one process)."""
        if any(isinstance(p, DTensor) for p in parameters):
            norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(parameters, max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        self.accelerator.wait_for_everyone()


@contextlib.contextmanager
def _fsdp_no_sync(model: FSDPModule):
    """Accelerate's ``no_sync`` for FSDP2, for a model sharded by :meth:`Distributed.prepare`
    on CPU."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def run_on_ray(train_fn: Any, num_workers: int, use_gpu: bool = False,
               config: dict | None = None) -> Any:
    """Run ``train_fn(config)`` on ``num_workers`` Ray Train workers that form one
    torch.distributed group (``ray.train.torch.TorchTrainer``: it starts the group and sets the
    ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables Accelerate reads, so ``train_fn`` builds
    its :class:`Distributed` as under ``torchrun``). Connects to a running Ray cluster, or
    starts a local one.

    Args:
        train_fn: A picklable function of one dict; it may call ``ray.train.report(metrics)``.
        num_workers: Processes (≥ 1).
        use_gpu: One GPU per worker (NCCL); else CPU workers (gloo).
        config: The dict handed to ``train_fn``.

    Returns:
        Ray Train's ``Result`` (``.error`` is None when every worker finished).

    Raises:
        ConfigError: ``num_workers`` < 1.
    """
    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(train_fn, train_loop_config=config or {},
                           torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
                           scaling_config=ScalingConfig(num_workers=num_workers,
                                                        use_gpu=use_gpu))
    return trainer.fit()
