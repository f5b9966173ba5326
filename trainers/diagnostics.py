"""Per-iteration diagnostics of a policy update, as CleanRL and verl log them.

Shapes: ``(B, C)`` per-token tensors of one micro-batch and its ``(B, C)`` {0, 1} loss mask;
the trainers sum the masked values over the batch and divide by its loss tokens.
"""

from __future__ import annotations

import math

import torch

from memgym.trajectory import Segment


def update_diagnostics(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                       advantages: torch.Tensor, clip_low: float,
                       clip_high: float) -> dict[str, torch.Tensor]:
    """Per-token diagnostics of the clipped surrogate (all detached, float).

    Args:
        logprobs: ``(B, C)`` logprobs under the policy being trained.
        old_logprobs: ``(B, C)`` behaviour logprobs of the ratio.
        advantages: ``(B, C)`` (or broadcastable) per-token advantages.
        clip_low / clip_high: The ratio clip range ``[1 - clip_low, 1 + clip_high]``.

    Returns:
        ``approx_kl``: ``(ρ - 1) - log ρ`` with ``ρ = exp(logp - logp_old)``, an unbiased,
        non-negative estimate of ``KL(π_old || π)`` from samples of π_old (Schulman 2020, k3;
        CleanRL's ``approx_kl``); ``clip_frac_low``: 1 where the lower bound is active
        (``ρ < 1 - clip_low`` and ``A < 0``: the token's gradient is clipped to 0);
        ``clip_frac_high``: 1 where the upper bound is active (``ρ > 1 + clip_high`` and
        ``A > 0``); ``nonzero_adv_frac``: 1 where ``A ≠ 0`` (tokens that carry any gradient).
    """
    log_ratio = (logprobs - old_logprobs).detach()
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().expand_as(ratio)
    return {"approx_kl": (ratio - 1) - log_ratio,
            "clip_frac_low": ((ratio < 1 - clip_low) & (adv < 0)).to(ratio.dtype),
            "clip_frac_high": ((ratio > 1 + clip_high) & (adv > 0)).to(ratio.dtype),
            "nonzero_adv_frac": (adv != 0).to(ratio.dtype)}


def has_sampler_logprobs(segments: list[Segment]) -> bool:
    """Whether every segment carries a finite sampler logprob of each completion token."""
    return all(len(s.logprobs) == len(s.completion_ids) and all(map(math.isfinite, s.logprobs))
               for s in segments)


def logprob_mismatch(trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                     mask: torch.Tensor) -> tuple[float, float]:
    """Sum and max over loss tokens of ``|logp_trainer − logp_sampler|`` (nats): how far the
    engine's logprobs are from the trainer's for the same weights and tokens (bf16 engine vs a
    trainer in another precision, a different kernel, or a stale engine).

    Returns:
        ``(sum, max)`` as floats (0.0 and 0.0 without loss tokens).
    """
    diff = (trainer_logprobs.detach() - sampler_logprobs).abs() * mask
    return float(diff.sum()), float(diff.max()) if diff.numel() else 0.0


def explained_variance(values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor) -> float:
    """``1 − Var[R − V] / Var[R]`` over the loss tokens (the critic's fit; CleanRL, verl): 1 is
    a perfect critic, 0 no better than a constant, below 0 worse.

    Returns:
        The float, NaN when the returns do not vary.
    """
    n = mask.sum()
    if n < 2:
        return float("nan")

    def variance(x: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum() / n
        return (((x - mean) * mask) ** 2).sum() / n

    var_returns = variance(returns)
    if var_returns == 0:
        return float("nan")
    return float(1 - variance(returns - values) / var_returns)
