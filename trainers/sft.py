"""SFT warm start: fine-tune a policy on saved trajectories (e.g. the oracle's) with TRL's
``SFTTrainer``, the loss only on the policy's completion tokens.

Each parsed step becomes one example. Steps recorded with token ids (an LLM's rollouts, or a
scripted teacher's under :class:`~memgym.rollouts.TokenizedPolicy`) are learned token for token:
``input_ids`` = the prompt ids the policy was sent + the completion ids, ``completion_mask`` 1
on the completion (TRL's pre-tokenized format). So the imitator is fitted on exactly the prompt
it will generate from, an append-mode env's chat context included (``info["chat"]``, which the
observation text does not hold). Steps without ids become TRL conversational prompt-completion
examples, ``{"prompt": [user: observation], "completion": [assistant: action]}`` (the records of
:func:`memgym.export.sft_records`); TRL templates the prompt with the assistant header exactly
as the rollout engines do. Either way ``completion_only_loss=True``: prompt tokens get label
-100, so only the action (and its end-of-turn token) is learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from datasets import Dataset
from pydantic import BaseModel, Field
from transformers import PreTrainedModel, PreTrainedTokenizer
from trl import SFTConfig, SFTTrainer

from memgym.errors import ConfigError
from memgym.export import select, sft_records, sft_steps
from memgym.trajectory import Trajectory


class SFTSettings(BaseModel):
    """Hyper-parameters of :func:`train_sft` (mapped onto TRL's ``SFTConfig``).

    Attributes:
        epochs: Passes over the examples.
        learning_rate: AdamW learning rate (the schedule's peak).
        lr_scheduler: Transformers' ``lr_scheduler_type`` (no warmup): ``"constant"``, or
            ``"linear"`` / ``"cosine"`` decay to 0 over the run, which averages out the last
            small batches' noise.
        batch_size: Examples per forward/backward pass.
        grad_accum: Passes accumulated per optimizer step.
        max_length: Longest tokenized example (prompt + completion); longer ones are truncated
            from the right.
        seed: Seed of the data order and of TRL's trainer.
        gradient_checkpointing: Recompute activations in backward (TRL's default is on): less
            memory, one more forward pass; off by default, as ``model.gradient_checkpointing``
            of ``memgym train`` (a small model on CPU has memory to spare and no time).
        bf16: Forward and backward under bfloat16 autocast (TRL's ``bf16``; float32 master
            weights and AdamW state): ~1.7x faster on a CPU with AMX / AVX512-BF16, ~100x
            slower on one without (an AVX2 CPU emulates bf16 matmuls); ``"auto"``: where
            :func:`cpu_has_native_bf16`.
        pad_to_multiple_of: Pad each pass's examples to a multiple of this many tokens (TRL's
            ``pad_to_multiple_of``; None: to the longest). Under bf16 autocast on a CPU, oneDNN
            caches primitives per matmul shape, kept after training: few shapes, little cache.
    """

    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(2048, ge=8)
    seed: int = 0
    gradient_checkpointing: bool = False
    bf16: bool | Literal["auto"] = False
    pad_to_multiple_of: int | None = Field(None, ge=1)


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (the ``amx_bf16`` or ``avx512_bf16``
    flag of Linux's ``/proc/cpuinfo``; False where the file is absent, e.g. macOS)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except FileNotFoundError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def sft_dataset(trajectories: Sequence[Trajectory], min_return: float | None = None,
                env_id: str | None = None, policy: str | None = None) -> Dataset:
    """Prompt-completion examples of the selected trajectories' parsed steps.

    Args:
        trajectories: Saved trajectories (e.g. ``trajectories_from_frame(load_trajectories(p))``).
        min_return: Keep trajectories with ``episode_return >= min_return`` (None: all).
        env_id: Keep this env's trajectories (None: all).
        policy: Keep this policy's trajectories (None: all).

    Returns:
        A ``datasets.Dataset``, one row per parsed step in order: columns ``input_ids`` and
        ``completion_mask`` (lists of int) when every step has token ids, else ``prompt`` and
        ``completion`` (lists of messages).

    Raises:
        ConfigError: No step is left to learn from, or some steps have token ids and others
            not.
    """
    chosen = select(trajectories, env_id, policy)
    steps = list(sft_steps(chosen, min_return))
    if not steps:
        raise ConfigError(f"no parsed step in {len(trajectories)} trajectories matches env_id="
                          f"{env_id!r}, policy={policy!r}, min_return={min_return!r}")
    tokenized = sum(bool(s.prompt_ids and s.completion_ids) for s in steps)
    if tokenized == len(steps):
        return Dataset.from_list([
            {"input_ids": [*s.prompt_ids, *s.completion_ids],
             "completion_mask": [0] * len(s.prompt_ids) + [1] * len(s.completion_ids)}
            for s in steps])
    if tokenized:
        raise ConfigError(f"{tokenized} of {len(steps)} steps have token ids: SFT takes "
                          "trajectories with token ids throughout or without them throughout")
    return Dataset.from_list([{"prompt": r["messages"][:1], "completion": r["messages"][1:]}
                              for r in sft_records(chosen, min_return)])


def make_sft_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizer, dataset: Dataset,
                     out_dir: str | Path, settings: SFTSettings | None = None) -> SFTTrainer:
    """A TRL ``SFTTrainer`` on CPU, offline, with the loss on completion tokens only.

    Args:
        model: The policy (plain or peft); trained in place.
        tokenizer: Its tokenizer (must have a chat template and a pad token).
        dataset: From :func:`sft_dataset`.
        out_dir: TRL's ``output_dir`` (the trainer saves no intermediate checkpoints).
        settings: Hyper-parameters; defaults of :class:`SFTSettings`.
    """
    settings = settings or SFTSettings()
    bf16 = cpu_has_native_bf16() if settings.bf16 == "auto" else settings.bf16
    args = SFTConfig(
        output_dir=str(out_dir), num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate, lr_scheduler_type=settings.lr_scheduler,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, max_length=settings.max_length,
        completion_only_loss=True, pad_to_multiple_of=settings.pad_to_multiple_of,
        seed=settings.seed, data_seed=settings.seed,
        gradient_checkpointing=settings.gradient_checkpointing,
        use_cpu=True, bf16=bf16, report_to="none", save_strategy="no", logging_steps=1,
        dataset_num_proc=None, disable_tqdm=True)
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def train_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizer, dataset: Dataset,
              out_dir: str | Path, settings: SFTSettings | None = None) -> list[dict]:
    """Fine-tune ``model`` on ``dataset`` and save it (``save_pretrained``: the full model, or the
    adapter of a peft model) and the tokenizer to ``out_dir``; ``memgym train`` accepts the
    directory as ``model:`` and ``memgym eval`` as a policy.

    The model leaves as it came: Accelerate's mixed precision wraps ``model.forward`` in
    autocast for training, and that wrapper is removed (else every later forward, rollouts and
    RL updates included, would run in bfloat16).

    Returns:
        TRL's log history (per step: ``loss``, ``learning_rate``, ...; last: train summary).
    """
    trainer = make_sft_trainer(model, tokenizer, dataset, out_dir, settings)
    trainer.train()
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return trainer.state.log_history
