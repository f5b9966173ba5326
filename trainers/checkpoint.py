"""Checkpoints for exact resume: model (or LoRA adapter) + tokenizer via ``save_pretrained``,
optimizer state, trainer step, the python / numpy / torch RNG states and any loop state (e.g. the
rollout seed generator, metrics so far) via ``torch.save``, and a human-readable JSON summary."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizer

from memgym.errors import ConfigError

STATE_FILE = "loop_state.pt"


def rng_state() -> dict[str, Any]:
    """The global python, numpy and torch (CPU) RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(directory: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizer,
                    trainer_state: dict[str, Any], summary: dict | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write ``directory/{model files, optimizer.pt, trainer_state.json, loop_state.pt}``.

    A peft model saves only its adapter (load it with ``peft.PeftModel.from_pretrained`` on the
    base model). Weights are saved as they are (fp32 safetensors), so a reload is bit-exact.

    Args:
        directory: Created if missing; files in it are overwritten.
        model: The policy.
        tokenizer: Its tokenizer.
        trainer_state: The trainer's ``state_dict()`` (optimizer states, global step), written
            to ``optimizer.pt``.
        summary: JSON-serializable summary for ``trainer_state.json`` (e.g. the run config).
        state: Anything ``torch.save`` can pickle that the loop needs to resume (the global RNG
            states of :func:`rng_state` are added under ``"rng"``).

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.save(trainer_state, directory / "optimizer.pt")
    torch.save({**(state or {}), "rng": rng_state()}, directory / STATE_FILE)
    (directory / "trainer_state.json").write_text(json.dumps(summary or {}, indent=2))
    return directory


def load_checkpoint_state(directory: str | Path) -> dict[str, Any]:
    """Read what :func:`save_checkpoint` wrote besides the model.

    The RNG states are returned, not applied: restore them with :func:`set_rng_state` once the
    model is built (building it may draw random numbers).

    Returns:
        The loop state, with the trainer state under ``"trainer"`` and the RNG states under
        ``"rng"``.

    Raises:
        ConfigError: ``directory`` holds no memgym checkpoint.
    """
    directory = Path(directory)
    if not has_checkpoint(directory) or not (directory / "optimizer.pt").is_file():
        raise ConfigError(f"expected a checkpoint with {STATE_FILE} and optimizer.pt in "
                          f"{directory}, found none")
    # weights_only=False: both files hold python objects we wrote (numpy RNG tuples, dicts)
    return {**torch.load(directory / STATE_FILE, weights_only=False),
            "trainer": torch.load(directory / "optimizer.pt", weights_only=False)}


def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a loop state :func:`load_checkpoint_state` can read."""
    return (Path(directory) / STATE_FILE).is_file()
