"""Sharded checkpoints of a :class:`~memgym.trainers.distributed.Distributed` trainer.

:func:`save_sharded_checkpoint` writes the model and optimizer states with
``torch.distributed.checkpoint`` (DCP, each rank its own shards) into the staging directory of
:mod:`memgym.trainers.checkpoint`, which adds the manifest and commits it by rename;
:func:`load_sharded_checkpoint` reads it back. What DCP reads, and how it is kept from running
code: tensors are read with
``torch.load(weights_only=True)``; non-tensor entries would be read with
a full (unrestricted) ``torch.load``, so only tensors are saved through DCP (the optimizer's
``param_groups`` go to ``optimizer.pt``, read with ``weights_only=True``) and a checkpoint whose
metadata claims a non-tensor entry is refused (:class:`_TensorsOnlyPlanner`). DCP's
``.metadata`` **is a pickle**: before DCP reads it, the whole checkpoint is checked against the
manifest's sizes and sha256 (that catches corruption and mixed saves, not an attacker who also
rewrites the manifest), and the pickle is first loaded by a restricted unpickler
(:class:`_MetadataUnpickler`) that resolves only DCP's metadata classes, torch dtypes and
sizes, and refuses any other global, so a crafted ``.metadata`` raises a ConfigError instead of
running code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from memgym.errors import ConfigError
from memgym.trainers.checkpoint import commit_checkpoint, load_checkpoint_state, stage_checkpoint
from memgym.trainers.distributed import Distributed

SHARDED_DIR = "sharded"  # DCP's files inside a checkpoint directory


def _trainer_parts(trainer: Any) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
    """The (model, optimizer) pairs of a GRPO or PPO trainer, by checkpoint name."""
    parts = {"policy": (trainer.model, trainer.optimizer)}
    if hasattr(trainer, "value_model"):
        parts["critic"] = (trainer.value_model, trainer.value_optimizer)
    return parts


def save_sharded_checkpoint(directory: str | Path, dist: Distributed, trainer: Any,
                            tokenizer: Any = None, summary: dict | None = None,
                            state: dict[str, Any] | None = None) -> Path:
    """Save a distributed trainer's models and optimizers (sharded: each rank writes its
    shards) and commit the checkpoint crash-safely; call it on every rank.

    Layout: ``sharded/`` (DCP: ``.metadata`` and one ``__<rank>_0.distcp`` per rank, tensors
    only), ``optimizer.pt`` (``global_step`` and each optimizer's ``param_groups``),
    ``loop_state.json`` (``state`` and rank 0's RNG states), the tokenizer if given, and the
    manifest; see :mod:`memgym.trainers.checkpoint` for the staging and commit.

    Args:
        directory: The checkpoint path (on a file system every rank sees).
        dist: The group.
        trainer: A :class:`~memgym.trainers.grpo.GRPOTrainer` or
            :class:`~memgym.trainers.ppo.PPOTrainer` built with ``distributed=dist``.
        tokenizer / summary / state: As :func:`~memgym.trainers.checkpoint.save_checkpoint`.

    Returns:
        ``directory``.
    """
    partial = stage_checkpoint(directory) if dist.is_main else None
    partial = Path(dist.broadcast(None if partial is None else str(partial)))
    tensors, groups = {}, {}
    for name, (model, optimizer) in _trainer_parts(trainer).items():
        model_state, optim_state = get_state_dict(model, optimizer)
        tensors[f"{name}.model"], tensors[f"{name}.optim"] = model_state, optim_state["state"]
        groups[name] = optim_state["param_groups"]
    dcp.save(tensors, checkpoint_id=partial / SHARDED_DIR)
    dist.barrier()  # every rank's shards are written
    if dist.is_main:
        if tokenizer is not None:
            tokenizer.save_pretrained(partial)
        commit_checkpoint(directory, {"global_step": trainer.global_step,
                                      "param_groups": groups, "world_size": dist.world_size},
                          summary, state)
    dist.barrier()
    return Path(directory)


def load_sharded_checkpoint(directory: str | Path, dist: Distributed | None, trainer: Any
                            ) -> dict[str, Any]:
    """Verify a checkpoint of :func:`save_sharded_checkpoint` against its manifest and load it
    into ``trainer`` (the same model; call it on every rank). DCP reshards on load: the group
    may be of another size or strategy, or None (a one-process trainer). Nothing runs code:
    see the module docstring.

    Returns:
        The loop state (:func:`~memgym.trainers.checkpoint.load_checkpoint_state`: ``rng``
        is returned, not applied).

    Raises:
        ConfigError: The checkpoint fails verification, is not a sharded checkpoint of this
            trainer, or its DCP metadata holds anything but tensor metadata.
    """
    loaded = load_checkpoint_state(directory)
    saved = loaded["trainer"]
    parts = _trainer_parts(trainer)
    if not isinstance(saved.get("param_groups"), dict) or set(saved["param_groups"]) != set(parts):
        raise ConfigError(f"{directory} is not a sharded checkpoint of this trainer (expected "
                          f"the parts {sorted(parts)})")
    templates, groups = {}, saved["param_groups"]
    for name, (model, optimizer) in parts.items():
        model_state, optim_state = get_state_dict(model, optimizer)
        templates[f"{name}.model"], templates[f"{name}.optim"] = (model_state,
                                                                  optim_state["state"])
    try:
        dcp.load(templates, storage_reader=_SafeReader(Path(directory) / SHARDED_DIR),
                 planner=_TensorsOnlyPlanner())
    except dcp.CheckpointException as error:  # DCP wraps the errors of the ranks
        raise ConfigError(f"{directory} does not load as this trainer's sharded state: "
                          f"{error}") from error
    for name, (model, optimizer) in parts.items():
        set_state_dict(model, optimizer, model_state_dict=templates[f"{name}.model"],
                       optim_state_dict={"state": templates[f"{name}.optim"],
                                         "param_groups": groups[name]})
    trainer.global_step = int(saved["global_step"])
    if dist is not None:
        dist.barrier()
    return {k: v for k, v in loaded.items() if k != "trainer"}

# Globals a DCP ``.metadata`` pickle may name (torch 2.13); anything else is refused.
_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
        "BytesStorageMetadata", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
     ("pathlib", "WindowsPath"), ("pathlib._local", "PosixPath"),  # Python >= 3.13
     ("pathlib._local", "WindowsPath"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_METADATA_GLOBALS` and torch dtypes (the Python
    docs' "Restricting Globals"): each of them is a data class, an enum, a dtype, a size or a
    path, harmless whatever arguments a crafted pickle passes."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_GLOBALS or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise ConfigError(f"the sharded checkpoint's DCP metadata names {module}.{name}, which "
                          "a DCP metadata file never holds; refusing to load it")


class _SafeReader(dcp.FileSystemReader):
    """DCP's file reader that loads ``.metadata`` with :class:`_MetadataUnpickler` first."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        path = Path(self.path) / ".metadata"
        try:
            with path.open("rb") as f:
                _MetadataUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError,
                TypeError) as error:
            raise ConfigError(f"{path} is not DCP metadata: {type(error).__name__}: "
                              f"{error}") from error
        return super().read_metadata(*args, **kwargs)


class _TensorsOnlyPlanner(dcp.DefaultLoadPlanner):
    """DCP's load planner, refusing non-tensor entries (DCP unpickles them without limits)."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise ConfigError(f"the sharded checkpoint holds a non-tensor entry "
                          f"{read_item.dest_index.fqn!r}; memgym saves only tensors there and "
                          "does not unpickle one")
