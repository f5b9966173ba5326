"""Trainer settings: the ``grpo:`` and ``ppo:`` sections of a train config.

Kept free of torch so that reading a config imports neither torch nor the trainers. The names
an estimator or a loss mode may take are the ``Literal`` types below; the registries that
implement them (:data:`memgym.trainers.advantages.ESTIMATORS`,
:data:`memgym.trainers.losses.LOSS_AGG_MODES`) hold the same keys, which a test checks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from memgym.config.base import Section

EstimatorName = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"]
LossAggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean",
                      "seq-mean-token-sum-norm"]


class TrainerConfig(Section):
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
    loss_agg_mode: LossAggMode = "token-mean"
    norm_length: int | None = Field(None, ge=1)
    behaviour_logprobs: Literal["trainer", "sampler"] = "trainer"
    tis_cap: float | None = Field(None, gt=0)
    micro_batch: int = Field(8, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self):
        if self.loss_agg_mode == "seq-mean-token-sum-norm" and self.norm_length is None:
            raise ValueError("loss_agg_mode 'seq-mean-token-sum-norm' needs norm_length")
        if self.tis_cap is not None and self.behaviour_logprobs == "sampler":
            raise ValueError("tis_cap corrects the trainer's behaviour logprobs against the "
                             "sampler's; with behaviour_logprobs 'sampler' there is nothing to "
                             "correct: use one or the other")
        return self



class GRPOConfig(TrainerConfig):
    """GRPO hyper-parameters (the ``grpo:`` section of a train config): the shared
    :class:`TrainerConfig` and

    Attributes:
        estimator: A key of :data:`memgym.trainers.advantages.ESTIMATORS`: ``grpo`` |
            ``dr_grpo`` | ``rloo`` | ``reinforce_pp``.
        group_by: Group definition: ``seed`` (same env, config and episode seed) or ``fork``
            (``Trajectory.group``: forks of one shared memory state, Memory-R2 style).
        adv_eps: Std guard of ``grpo`` / ``reinforce_pp``.
        beta: KL coefficient to the reference model; 0 disables KL (no reference needed).
        kl_mode: ``loss`` (``β·KL`` added to the per-token loss, GRPO) or ``penalty``
            (``β·KL`` subtracted, detached, from each token's advantage: a per-token reward
            penalty).
        memory_terms: Reward-term names whose episode sum is the memory return; when set,
            memory-op tokens (``Segment.memory_mask``, recorded at rollout) get its
            group-relative advantage (HiMPO-style memory-token credit,
            :func:`memgym.trainers.advantages.memory_token_advantages`); empty disables it.

    A legacy ``clip_eps`` sets clip_low and clip_high; ``scale_rewards: false`` means
    estimator ``dr_grpo``.
    """

    estimator: EstimatorName = "grpo"
    group_by: Literal["seed", "fork"] = "seed"
    adv_eps: float = Field(1e-6, ge=0)
    beta: float = Field(0.0, ge=0)
    kl_mode: Literal["loss", "penalty"] = "loss"
    memory_terms: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data):
        """Map the version-0 keys: ``clip_eps`` → clip_low and clip_high; ``scale_rewards:
        false`` → estimator ``dr_grpo``."""
        if isinstance(data, dict):
            data = dict(data)
            if "clip_eps" in data:
                eps = data.pop("clip_eps")
                data.setdefault("clip_low", eps)
                data.setdefault("clip_high", eps)
            if "scale_rewards" in data:
                data.setdefault("estimator", "grpo" if data.pop("scale_rewards") else "dr_grpo")
        return data


class PPOConfig(TrainerConfig):
    """PPO hyper-parameters (the ``ppo:`` section of a train config): the shared
    :class:`TrainerConfig` (verl's PPO defaults: lr 1e-6, ``k1``; the
    clip range, weighting and reduction apply to the policy, value and KL terms alike) and

    Attributes:
        value_learning_rate: AdamW learning rate of the critic (Memory-R1: 10× the policy's).
        gamma: GAE discount γ.
        lam: GAE λ.
        whiten_advantages: Normalize the advantages over the batch's policy tokens.
        cliprange_value: Value clipping around the old value (PPO2); 0 disables it.
        vf_coef: Weight of the value loss.
        kl_coef: Per-token KL penalty subtracted from the rewards before GAE (Ouyang et al.
            2022; verl ``use_kl_in_reward``).
        kl_loss_coef: Weight of a KL term in the loss (GRPO's form; verl ``use_kl_loss``).
        ppo_epochs: Passes over the batch.
        seed: Seed of the mini-batch shuffling (with the step number, so resume is exact).

    ``grad_accum`` micro-batches make one mini-batch (None: the whole batch in one update per
    epoch); ``max_grad_norm`` clips the policy's and the critic's gradients separately.
    """

    learning_rate: float = Field(1e-6, gt=0)
    kl_estimator: Literal["k1", "k3", "low_var_kl"] = "k1"
    value_learning_rate: float = Field(1e-5, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_advantages: bool = True
    cliprange_value: float = Field(0.2, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    kl_coef: float = Field(0.0, ge=0)
    kl_loss_coef: float = Field(0.0, ge=0)
    ppo_epochs: int = Field(1, ge=1)
    seed: int = 0
