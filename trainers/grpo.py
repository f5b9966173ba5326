"""GRPO on segmented trajectories: each segment is a prompt+completion sample that carries its
trajectory's group-relative advantage."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from transformers import PreTrainedModel

from memgym.trainers.advantages import expand_to_segments, grpo_advantages
from memgym.trajectory import Segment, Trajectory


class GRPOConfig(BaseModel):
    """GRPO hyper-parameters.

    Attributes:
        learning_rate: AdamW learning rate.
        clip_eps: PPO ratio clip ε (ratio kept in [1-ε, 1+ε]).
        beta: Weight of the k3 KL penalty to the reference model; 0 disables it and no reference
            is kept.
        scale_rewards: Divide advantages by the group std (GRPO) or not (Dr. GRPO).
        micro_batch: Segments per forward/backward pass (gradients accumulate over a step).
        max_grad_norm: Gradient clipping norm.
        weight_decay: AdamW weight decay.
    """

    learning_rate: float = Field(1e-5, gt=0)
    clip_eps: float = Field(0.2, gt=0)
    beta: float = Field(0.0, ge=0)
    scale_rewards: bool = True
    micro_batch: int = Field(8, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)


@dataclass
class SegmentBatch:
    """Segments of a batch of trajectories, with their advantages.

    Attributes:
        segments: S segments with token ids.
        advantages: ``(S,)`` float advantage of each segment.
    """

    segments: list[Segment]
    advantages: torch.Tensor

    @classmethod
    def from_trajectories(cls, trajectories: list[Trajectory], scale: bool = True) -> SegmentBatch:
        """GRPO advantages over trajectory returns within groups, expanded to segments."""
        returns = torch.tensor([t.episode_return for t in trajectories], dtype=torch.float64)
        groups = torch.tensor([t.group for t in trajectories])
        adv = grpo_advantages(returns, groups, scale=scale).float()
        owner = torch.tensor([i for i, t in enumerate(trajectories) for _ in t.segments],
                             dtype=torch.long)
        segments = [s for t in trajectories for s in t.segments]
        return cls(segments, expand_to_segments(adv, owner))


def _pack(segments: list[Segment], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompts and right-pad completions so every completion starts at column P."""
    p = max(len(s.prompt_ids) for s in segments)
    c = max(len(s.completion_ids) for s in segments)
    ids, attn, mask, old = [], [], [], []
    for s in segments:
        lp, lc = len(s.prompt_ids), len(s.completion_ids)
        ids.append([pad_id] * (p - lp) + s.prompt_ids + s.completion_ids + [pad_id] * (c - lc))
        attn.append([0] * (p - lp) + [1] * (lp + lc) + [0] * (c - lc))
        mask.append(list(s.loss_mask) + [0] * (c - lc))
        old.append(list(s.logprobs) + [0.0] * (c - lc))
    attention = torch.tensor(attn)
    return {"input_ids": torch.tensor(ids), "attention_mask": attention,
            "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
            "loss_mask": torch.tensor(mask, dtype=torch.float32),
            "old_logprobs": torch.tensor(old, dtype=torch.float32), "completion_len": c}


def completion_logprobs(model: PreTrainedModel, packed: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logprob of each completion token under ``model``.

    Returns:
        ``(B, C)`` float32 logprobs (garbage where ``loss_mask`` is 0).
    """
    c = packed["completion_len"]
    logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                   position_ids=packed["position_ids"], logits_to_keep=c + 1).logits[:, :-1]
    targets = packed["input_ids"][:, -c:]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class GRPOTrainer:
    """One optimizer step per batch of rollouts (on-policy, single update, as TRL's default).

    Loss per token (DAPO token-mean over all completion tokens of the batch):
    ``-min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) + β·KL_k3`` with ``ρ = exp(logp - logp_old)``; with one
    update per batch ``logp_old`` is the detached current logprob, so ``ρ = 1`` in value and the
    gradient is the policy gradient. ``KL_k3 = exp(r) - r - 1``, ``r = logp_ref - logp``
    (Schulman's k3 estimator).

    Args:
        model: The policy (plain or peft); trained in place.
        pad_token_id: Padding id of the tokenizer.
        config: :class:`GRPOConfig`.
        ref_model: Frozen reference for the KL term (needed when ``config.beta > 0``).
    """

    def __init__(self, model: PreTrainedModel, pad_token_id: int, config: GRPOConfig,
                 ref_model: PreTrainedModel | None = None) -> None:
        self.model, self.pad_token_id, self.config, self.ref_model = (
            model, pad_token_id, config, ref_model)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.global_step = 0

    def step(self, batch: SegmentBatch) -> dict[str, float]:
        """Compute the loss over all segments (micro-batched), clip gradients, update.

        Returns:
            Metrics: ``loss``, ``kl``, ``clip_frac``, ``grad_norm``, ``tokens``, ``segments``.
        """
        cfg = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total_tokens = sum(sum(s.loss_mask) for s in batch.segments)
        stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        for start in range(0, len(batch.segments), cfg.micro_batch):
            segs = batch.segments[start:start + cfg.micro_batch]
            adv = batch.advantages[start:start + cfg.micro_batch].unsqueeze(-1)
            packed = _pack(segs, self.pad_token_id)
            mask = packed["loss_mask"]
            logp = completion_logprobs(self.model, packed)
            ratio = torch.exp(logp - logp.detach())
            clipped = torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps)
            per_token = -torch.min(ratio * adv, clipped * adv)
            kl = torch.zeros_like(logp)
            if cfg.beta > 0 and self.ref_model is not None:
                with torch.no_grad():
                    ref = completion_logprobs(self.ref_model, packed)
                kl = torch.exp(ref - logp) - (ref - logp) - 1
                per_token = per_token + cfg.beta * kl
            loss = (per_token * mask).sum() / max(total_tokens, 1)
            loss.backward()
            stats["loss"] += loss.item()
            stats["kl"] += float((kl * mask).sum()) / max(total_tokens, 1)
            stats["clip_frac"] += float((((ratio - clipped).abs() > 0) * mask).sum()) / max(
                total_tokens, 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
        self.optimizer.step()
        self.global_step += 1
        return {**stats, "grad_norm": float(grad_norm), "tokens": float(total_tokens),
                "segments": float(len(batch.segments))}
