"""Weight sync from the trainer to remote engines over a torch.distributed group of their own.

As in OpenRLHF, verl and TRL, the trainer process is rank 0 of a separate group whose ranks
1..N are the engine actors, and it broadcasts each tensor. The group is built from torch's public
constructors on a :class:`torch.distributed.TCPStore` hosted by the trainer
(:class:`torch.distributed.ProcessGroupGloo` on CPU, ``ProcessGroupNCCL`` on GPUs), so it is
independent of any default process group the trainer is in (torchrun, DDP, FSDP2).

Per sync, rank 0 writes the names, shapes and dtypes (JSON) under ``weights/<version>`` in the
store; each receiver reads them, allocates empty tensors and receives them one by one, which it
streams into its engine (:meth:`memgym.rollouts.vllm.VLLMEngine.load_weights` or an HF model's
``load_state_dict``). NCCL needs every rank on its own GPU: engines colocated with the trainer on
one GPU cannot join an NCCL group (NCCL refuses duplicate devices).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from memgym.errors import ConfigError, EngineError

BACKENDS = ("gloo", "nccl")
TIMEOUT = timedelta(minutes=10)


def _process_group(backend: str, store: dist.Store, rank: int, size: int,
                   timeout: timedelta) -> Any:
    """A standalone backend group on ``store`` (joining it blocks until all ranks joined): a
    ``ProcessGroupGloo`` or ``ProcessGroupNCCL``, used through its own collectives.

    Raises:
        ConfigError: Unknown backend, or NCCL without a CUDA build of torch and a GPU.
    """
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, size, timeout)
    if backend == "nccl":
        nccl = getattr(dist, "ProcessGroupNCCL", None)
        if nccl is None or not torch.cuda.is_available():
            raise ConfigError("weight sync over nccl needs a CUDA build of torch and a GPU; "
                              "use gloo on CPU")
        group = nccl(store, rank, size)
        group.set_timeout(timeout)
        return group
    raise ConfigError(f"weight sync backend must be one of {BACKENDS}, got {backend!r}")


def _device(backend: str) -> torch.device:
    """Where a backend's tensors live: CPU for gloo, this process's current GPU for NCCL."""
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _dtype(name: str) -> torch.dtype:
    """``"torch.bfloat16"`` → ``torch.bfloat16``.

    Raises:
        EngineError: Not a torch dtype.
    """
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise EngineError(f"weight sync metadata names an unknown dtype {name!r}")
    return dtype


def check_state_dict(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise unless every value is a tensor (callers check before engines start receiving).

    Raises:
        ConfigError: A value is not a tensor.
    """
    bad = [name for name, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ConfigError(f"state_dict values must be tensors, not at {bad[:3]}")


class WeightBroadcaster:
    """The trainer's end (rank 0): hosts the store, then broadcasts state dicts.

    Args:
        engines: Engine processes that will join (ranks 1..engines).
        backend: ``gloo`` (CPU tensors) or ``nccl`` (CUDA tensors).
        host: Address of this process that the engines can reach (the store listens there
            on a free port, :attr:`address`).
        timeout: How long joining and each collective may wait for the other ranks.

    Raises:
        ConfigError: Unknown backend or fewer than one engine.
    """

    def __init__(self, engines: int, backend: str = "gloo", host: str = "127.0.0.1",
                 timeout: timedelta = TIMEOUT) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"weight sync backend must be one of {BACKENDS}, got {backend!r}")
        if engines < 1:
            raise ConfigError(f"weight sync needs at least one engine, got {engines}")
        self.backend, self.size, self.timeout = backend, engines + 1, timeout
        self.store = dist.TCPStore(host, 0, None, True, timeout, wait_for_workers=False)
        self.address = (host, self.store.port)
        self.group: Any = None
        self.version = 0

    def connect(self) -> None:
        """Join the group as rank 0; blocks until every engine called
        :class:`WeightReceiver` with :attr:`address` (start those calls first)."""
        self.group = _process_group(self.backend, self.store, 0, self.size, self.timeout)

    def broadcast(self, state_dict: Mapping[str, torch.Tensor]) -> int:
        """Send every tensor to every engine (each must be in :meth:`WeightReceiver.receive`
        meanwhile).

        Returns:
            The sync's version (1, 2, ...).

        Raises:
            EngineError: Not connected (or closed).
            ConfigError: A value of ``state_dict`` is not a tensor.
        """
        if self.group is None:
            raise EngineError("WeightBroadcaster.broadcast before connect() (or after close())")
        check_state_dict(state_dict)
        meta = [(name, list(t.shape), str(t.dtype)) for name, t in state_dict.items()]
        self.version += 1
        self.store.set(f"weights/{self.version}", json.dumps(meta))
        if self.version > 1:  # every receiver of the last sync has finished (the caller waited)
            self.store.delete_key(f"weights/{self.version - 1}")
        device = _device(self.backend)
        for tensor in state_dict.values():
            if tensor.numel():
                self.group.broadcast(tensor.detach().to(device).contiguous(), 0).wait()
        return self.version

    def close(self) -> None:
        """Leave the group (idempotent)."""
        if self.group is not None:
            self.group.shutdown()
            self.group = None


class WeightReceiver:
    """An engine's end (rank 1..N): joins the trainer's group, then receives state dicts.

    Constructing it blocks until every rank joined (the trainer in
    :meth:`WeightBroadcaster.connect`).

    Args:
        host / port: The trainer's :attr:`WeightBroadcaster.address`.
        rank: This engine's rank, 1..size-1.
        size: Engines + 1.
        backend: The trainer's backend.
        timeout: How long joining and each collective may wait for the other ranks.

    Raises:
        ConfigError: ``rank`` outside 1..size-1, or an unknown backend.
    """

    def __init__(self, host: str, port: int, rank: int, size: int, backend: str = "gloo",
                 timeout: timedelta = TIMEOUT) -> None:
        if not 0 < rank < size:
            raise ConfigError(f"an engine's weight sync rank is 1..{size - 1}, got {rank}")
        self.backend, self.version = backend, 0
        self.store = dist.TCPStore(host, port, None, False, timeout)
        self.group: Any = _process_group(backend, self.store, rank, size, timeout)

    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The next sync's ``(name, tensor)`` pairs, each received as it is yielded (consume
        them all: every rank takes part in every tensor's broadcast).

        Raises:
            EngineError: Closed.
        """
        if self.group is None:
            raise EngineError("WeightReceiver.receive after close()")
        self.version += 1
        meta = json.loads(self.store.get(f"weights/{self.version}"))
        device = _device(self.backend)
        for name, shape, dtype in meta:
            tensor = torch.empty(shape, dtype=_dtype(dtype), device=device)
            if tensor.numel():
                self.group.broadcast(tensor, 0).wait()
            yield name, tensor

    def close(self) -> None:
        """Leave the group (idempotent)."""
        if self.group is not None:
            self.group.shutdown()
            self.group = None
