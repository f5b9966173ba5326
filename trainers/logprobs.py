"""Token logprobs of segments under a model at the sampling temperature, and the behaviour
policy's logprobs (trainer recompute or sampler) with truncated importance sampling.

Both trainers score completions with :func:`completion_logprobs` in one path: the same packing
(:func:`pack_segments`), the same mode and the same temperature for the old (behaviour), new
and reference logprobs, so that with one update per batch ``ρ = exp(logp - logp_old)`` is 1 and
the loss optimises the policy that sampled, ``softmax(logits / T)`` (TRL fixed computing them at
temperature 1 while sampling at ``T ≠ 1`` in huggingface/trl#3029).
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel

from memgym.batch import check_temperature
from memgym.errors import ConfigError
from memgym.trajectory import Segment


def pack_segments(segments: list[Segment], pad_id: int,
                  memory_masks: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Left-pad prompts and right-pad completions so every completion starts at column P.

    Args:
        segments: B segments.
        pad_id: Padding token id.
        memory_masks: B lists of C_s {0, 1} memory-token flags, or None.

    Returns:
        ``input_ids``, ``attention_mask``, ``position_ids`` ``(B, P + C)`` int64;
        ``loss_mask`` (and ``memory_mask``) ``(B, C)`` float32; ``completion_len`` C (int, 0
        when every completion is empty).
    """
    p = max(len(s.prompt_ids) for s in segments)
    c = max(len(s.completion_ids) for s in segments)
    ids, attn, mask = [], [], []
    for s in segments:
        lp, lc = len(s.prompt_ids), len(s.completion_ids)
        ids.append([pad_id] * (p - lp) + s.prompt_ids + s.completion_ids + [pad_id] * (c - lc))
        attn.append([0] * (p - lp) + [1] * (lp + lc) + [0] * (c - lc))
        mask.append(list(s.loss_mask) + [0] * (c - lc))
    attention = torch.tensor(attn)
    packed = {"input_ids": torch.tensor(ids), "attention_mask": attention,
              "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
              "loss_mask": torch.tensor(mask, dtype=torch.float32).reshape(len(segments), c),
              "completion_len": c}
    if memory_masks is not None:
        packed["memory_mask"] = torch.tensor([m + [0] * (c - len(m)) for m in memory_masks],
                                             dtype=torch.float32).reshape(len(segments), c)
    return packed


def completion_logprobs(model: PreTrainedModel, packed: dict[str, torch.Tensor],
                        entropy: bool = False, temperature: float = 1.0
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob (and optionally entropy, no gradient) of each completion token under
    ``softmax(logits / temperature)``, the distribution the rollouts sampled from.

    Args:
        model: A causal LM.
        packed: A batch from :func:`pack_segments`.
        entropy: Also return the per-token entropy ``-Σ_v p_v log p_v`` (no gradient).
        temperature: The sampling temperature T > 0 (see :func:`memgym.batch.training_temperature`).

    Returns:
        ``(B, C)`` logprobs (float32, or float64 for a float64 model) and ``(B, C)`` entropies
        in nats or None (both garbage where ``loss_mask`` is 0).

    Raises:
        ConfigError: ``temperature`` is not a finite float > 0.
    """
    check_temperature(temperature)
    c = packed["completion_len"]
    logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                   position_ids=packed["position_ids"], logits_to_keep=c + 1).logits[:, :-1]
    targets = packed["input_ids"][:, packed["input_ids"].shape[1] - c:]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 → fp32, fp64 kept
    if temperature != 1.0:
        logits = logits / temperature
    all_logp = torch.log_softmax(logits, -1)
    logp = all_logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not entropy:
        return logp, None
    with torch.no_grad():
        return logp, -(all_logp.exp() * all_logp).sum(-1)


def sampler_logprobs(segments: list[Segment], width: int) -> torch.Tensor:
    """The sampler's logprobs of the segments' completion tokens, right-padded with 0.

    Args:
        segments: B segments whose ``logprobs`` the engine recorded.
        width: Columns C ≥ every completion's length.

    Returns:
        ``(B, C)`` float64 (cast it to the logprobs' dtype).

    Raises:
        ConfigError: A segment's logprobs do not cover its completion (e.g. a scripted policy's
            trajectory, or one loaded without them), or one is not finite at a policy token.
    """
    rows = []
    for s in segments:
        if len(s.logprobs) != len(s.completion_ids):
            raise ConfigError(f"segment {s.index} has {len(s.logprobs)} sampler logprobs for "
                              f"{len(s.completion_ids)} completion tokens; "
                              f"behaviour_logprobs 'sampler' and tis_cap need them")
        if not all(math.isfinite(lp) for lp, m in zip(s.logprobs, s.loss_mask, strict=True)
                   if m):
            raise ConfigError(f"segment {s.index} has non-finite sampler logprobs")
        rows.append(list(s.logprobs) + [0.0] * (width - len(s.logprobs)))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(segments), width)


def truncated_is_weights(trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Truncated importance weights of the trainer's behaviour policy against the sampler's.

    ``w = min(exp(logp_trainer - logp_sampler), cap)``, detached (Yao et al. 2025, "Your
    Efficient RL Framework Secretly Brings You Off-Policy RL Training"; verl's
    ``tis_imp_ratio_cap``, prime-rl): it corrects the policy gradient for tokens the engine
    sampled with a slightly different distribution (vLLM in bf16 against a trainer in fp32)
    than the one the trainer scores.

    Args:
        trainer_logprobs: ``(B, C)`` the trainer's logprobs of the sampled tokens before any
            update (the ratio's ``logp_old``).
        sampler_logprobs: ``(B, C)`` the sampler's logprobs of the same tokens.
        cap: Upper bound of the weight (> 0; verl uses 2).

    Returns:
        ``(B, C)`` weights, no gradient, dtype of ``trainer_logprobs``.
    """
    delta = (trainer_logprobs.detach() - sampler_logprobs.to(trainer_logprobs.dtype))
    return torch.exp(delta).clamp(max=cap)
