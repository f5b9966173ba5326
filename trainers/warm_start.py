"""The SFT warm start of ``memgym train`` (``warm_start:``): the policy imitates a scripted
teacher on training episodes before RL.

The teacher's rollouts are ordinary trajectories of the training env (seeds from
:data:`WARM_START_SEED_BASE` on: disjoint from the RL seeds, which the run's RNG draws below
``2**31``, and from the validation seeds from :data:`memgym.train.EVAL_SEED_BASE`). ``memgym
train`` records them under :class:`~memgym.rollouts.TokenizedPolicy`, so each step holds the
prompt ids the policy itself would be sent (an append-mode env's chat context included) and
the action's ids; :func:`memgym.trainers.sft.sft_dataset` turns them into token examples and
TRL's ``SFTTrainer`` fits them, the loss on the action tokens only.
"""

from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizer

from memgym.config import WarmStartConfig
from memgym.errors import ConfigError
from memgym.trainers.grpo import mark_updated
from memgym.trainers.sft import SFTSettings, sft_dataset, train_sft
from memgym.trajectory import Trajectory

WARM_START_SEED_BASE = 3_000_000_000  # above RL seeds (< 2**31) and validation seeds (1e6 + i)


def balanced(dataset: Dataset, kinds: list[tuple[str, ...]], seed: int) -> Dataset:
    """As many examples of each kind of action as of the rarest kind, the surplus dropped at
    random (``seed``); order shuffled. A kind is the kinds of the action's ops, e.g. ``()`` (no
    op), ``("add",)``, ``("update",)``: an imitator of a teacher that mostly writes nothing, or
    rarely swaps a memory, otherwise learns never to.

    Args:
        dataset: From :func:`~memgym.trainers.sft.sft_dataset`.
        kinds: Per example, the kinds of its step's ops, in order.
        seed: Seed of the drop and the shuffle.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(i)
    rng = random.Random(seed)
    rarest = min(len(group) for group in groups.values())
    kept = [i for group in groups.values() for i in rng.sample(group, rarest)]
    rng.shuffle(kept)
    return dataset.select(kept)


def warm_start(model: PreTrainedModel, tokenizer: PreTrainedTokenizer,
               trajectories: list[Trajectory], settings: WarmStartConfig, out_dir: Path,
               seed: int) -> dict:
    """Fine-tune ``model`` in place on the teacher's ``trajectories``.

    Args:
        model: The policy (plain or peft, one process; a peft model trains its adapters and
            saves the adapter); its parameters stay the same tensors, so an
            optimizer and engine built on them see the update.
        tokenizer: Its tokenizer.
        trajectories: The teacher's rollouts of the training env.
        settings: The ``warm_start:`` section.
        out_dir: Where TRL writes and the fine-tuned model is saved.
        seed: Seed of the data order.

    Returns:
        ``{"examples", "loss_first", "loss_last"}`` of the fit.

    Raises:
        ConfigError: The teacher's steps hold nothing to learn (no parsed step, or with
            ``balance`` only one kind of action).
    """
    dataset = sft_dataset(trajectories)
    if settings.balance:  # sft_dataset keeps every parsed step, in order
        kinds = [tuple(op["kind"] for op in s.ops) for t in trajectories for s in t.steps
                 if s.parse_error is None]
        if len(set(kinds)) < 2:
            raise ConfigError(f"warm_start.balance: the teacher {settings.policy!r} took one "
                              f"kind of action in its episodes ({set(kinds)}): nothing to "
                              "balance")
        dataset = balanced(dataset, kinds, seed)
    micro = settings.micro_batch or settings.batch_size
    history = train_sft(model, tokenizer, dataset, out_dir, SFTSettings(
        epochs=settings.epochs, learning_rate=settings.learning_rate,
        lr_scheduler=settings.lr_scheduler, batch_size=micro,
        grad_accum=settings.batch_size // micro, seed=seed, bf16=settings.bf16,
        pad_to_multiple_of=settings.pad_to_multiple_of))
    mark_updated([p for p in model.parameters() if p.requires_grad])  # TRL's fused AdamW
    losses = [h["loss"] for h in history if "loss" in h]
    return {"examples": len(dataset), "loss_first": float(losses[0]) if losses else float("nan"),
            "loss_last": float(losses[-1]) if losses else float("nan")}
