"""Checkpoints: model (or LoRA adapter) + tokenizer via ``save_pretrained``, optimizer state and
trainer step via ``torch.save``/JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizer


def save_checkpoint(directory: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizer,
                    optimizer: torch.optim.Optimizer, step: int, extra: dict | None = None) -> Path:
    """Write ``directory/{model files, optimizer.pt, trainer_state.json}``.

    A peft model saves only its adapter (load it with ``peft.PeftModel.from_pretrained`` on the
    base model).

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    (directory / "trainer_state.json").write_text(
        json.dumps({"global_step": step, **(extra or {})}, indent=2))
    return directory
