"""Settings GRPO and PPO share, validated against the loss registry.

:class:`TrainerConfig` holds what both trainers mean the same way: the optimizer, the clipped
surrogate, the KL estimator, how per-token losses are reduced (``loss_agg_mode`` from
:data:`memgym.trainers.losses.LOSS_AGG_MODES`, ``weighting``), where the behaviour logprobs
come from, and micro-batching. :class:`memgym.trainers.GRPOConfig` and
:class:`memgym.trainers.ppo.PPOConfig` add their own fields and defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from memgym.trainers.losses import LOSS_AGG_MODES


def check_choice(value: str, registry: dict, what: str) -> str:
    """``value`` if it names an entry of ``registry``.

    Raises:
        ValueError: (pydantic turns it into a ``ValidationError``) it does not.
    """
    if value not in registry:
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(registry)}")
    return value


class TrainerConfig(BaseModel):
    """The shared part of the ``grpo:`` and ``ppo:`` sections of a train config.

    Attributes:
        learning_rate: AdamW learning rate of the policy.
        clip_low / clip_high: Ratio clip range ``[1 − clip_low, 1 + clip_high]``;
            ``clip_high > clip_low`` is DAPO's clip-higher (0.2 / 0.28).
        kl_estimator: ``k1`` | ``k3`` | ``low_var_kl``
            (:func:`memgym.trainers.losses.kl_divergence`).
        weighting: Segment weighting ``trajectory`` | ``segment`` | ``token``
            (:func:`memgym.trainers.losses.token_coefficients`).
        loss_agg_mode: A key of :data:`memgym.trainers.losses.LOSS_AGG_MODES`:
            ``token-mean`` | ``seq-mean-token-sum`` | ``seq-mean-token-mean`` |
            ``seq-mean-token-sum-norm`` (verl's names).
        norm_length: ``L`` of ``seq-mean-token-sum-norm`` (Dr. GRPO's constant).
        behaviour_logprobs: Where the ratio's ``logp_old`` comes from: ``trainer`` (the
            trained model's logprobs before the update, at the batch's temperature; with one
            update per batch the detached current ones, so ρ = 1 as in TRL) or ``sampler``
            (``Segment.logprobs``, as the engine recorded them: no recompute, and the
            engine-vs-trainer mismatch is inside ρ and its clip).
        tis_cap: With ``trainer`` behaviour logprobs, multiply each token's surrogate by the
            truncated importance weight ``min(exp(logp_old - logp_sampler), tis_cap)``
            (:func:`memgym.trainers.logprobs.truncated_is_weights`; verl, prime-rl); None: off.
        micro_batch: Segments per forward/backward pass.
        grad_accum: Micro-batches per optimizer update; None: the whole batch in one update.
        max_grad_norm: Gradient clipping norm.
        weight_decay: AdamW weight decay.
    """

    learning_rate: float = Field(1e-5, gt=0)
    clip_low: float = Field(0.2, ge=0, lt=1)
    clip_high: float = Field(0.2, ge=0)
    kl_estimator: Literal["k1", "k3", "low_var_kl"] = "k3"
    weighting: Literal["trajectory", "segment", "token"] = "trajectory"
    loss_agg_mode: str = "token-mean"
    norm_length: int | None = Field(None, ge=1)
    behaviour_logprobs: Literal["trainer", "sampler"] = "trainer"
    tis_cap: float | None = Field(None, gt=0)
    micro_batch: int = Field(8, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)

    @field_validator("loss_agg_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        return check_choice(value, LOSS_AGG_MODES, "loss_agg_mode")

    @model_validator(mode="after")
    def _consistent(self):
        if self.loss_agg_mode == "seq-mean-token-sum-norm" and self.norm_length is None:
            raise ValueError("loss_agg_mode 'seq-mean-token-sum-norm' needs norm_length")
        if self.tis_cap is not None and self.behaviour_logprobs == "sampler":
            raise ValueError("tis_cap corrects the trainer's behaviour logprobs against the "
                             "sampler's; with behaviour_logprobs 'sampler' there is nothing to "
                             "correct: use one or the other")
        return self
