"""Generalized advantage estimation over the policy tokens of segmented trajectories.

Token-level GAE in the form LLM-PPO uses (Schulman et al. 2016, "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", eq. 16; Ouyang et al. 2022; verl
``compute_gae_advantage_return``): every policy token is one MDP step, its value is the
critic's estimate of the state before the token, rewards sit on the last policy token of each
env step. Tokens with mask 0 (env-inserted tokens, padding) are not MDP steps: the recursion
passes through them unchanged, so a trajectory cut into segments and laid out segment after
segment bootstraps the last token of segment ``k`` from the value of the first policy token of
segment ``k + 1`` (the value of the next segment's first state), exactly as if the segments
were one sequence.
"""

from __future__ import annotations

import torch

from memgym.errors import ConfigError


def _check(name: str, tensor: torch.Tensor, shape: torch.Size, ndim: int) -> None:
    if tensor.ndim != ndim or tensor.shape != shape:
        raise ConfigError(f"expected {name} of shape {tuple(shape)} ({ndim}-D), "
                          f"got {tuple(tensor.shape)}")


def _check_discount(gamma: float, lam: float) -> None:
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ConfigError(f"expected gamma and lam in [0, 1], got gamma={gamma}, lam={lam}")


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) along each row, skipping masked-out tokens (Schulman et al. 2016, eq. 16).

    Over the tokens ``t`` with ``mask[t] = 1`` taken in order (``t'`` is the next such token,
    ``V_{t'} = 0`` after the last one, i.e. the episode terminates at the end of the row)::

        δ_t = r_t + γ·V_{t'} − V_t
        A_t = δ_t + γ·λ·A_{t'}
        R_t = A_t + V_t                  (the critic's target, the λ-return)

    Masked-out tokens carry the advantage of the next unmasked token (verl's multi-turn form);
    their rewards and values are ignored, and callers exclude them from every loss.

    Args:
        rewards: ``(B, T)`` float per-token rewards (outcome on the last token of each step,
            minus any per-token KL penalty).
        values: ``(B, T)`` float critic values ``V_t`` of the state before token ``t``.
        mask: ``(B, T)`` 0/1 (any dtype): 1 for MDP steps (policy tokens).
        gamma: Discount γ in [0, 1].
        lam: GAE λ in [0, 1] (1: Monte-Carlo return minus V; 0: one-step TD error).

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` in the dtype of ``values``; no gradient.

    Raises:
        ConfigError: Shapes differ or are not 2-D, or γ or λ is outside [0, 1].
    """
    _check("values", values, rewards.shape, 2)
    _check("mask", mask, rewards.shape, 2)
    _check_discount(gamma, lam)
    rewards, values = rewards.detach().to(values.dtype), values.detach()
    mask = mask.to(values.dtype)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.empty_like(values)
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        adv = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * next_adv
        next_adv = m * adv + (1 - m) * next_adv
        next_value = m * values[:, t] + (1 - m) * next_value
        advantages[:, t] = next_adv
    return advantages, advantages + values


def segment_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                segment_trajectory: torch.Tensor, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE across the segments of each trajectory of a padded segment batch.

    The segments of one trajectory (rows with the same ``segment_trajectory``, in row order)
    are laid end to end and :func:`gae_advantages` runs over them, so the last policy token of
    a segment bootstraps from the value of the first policy token of the trajectory's next
    segment; the last segment of a trajectory ends the episode (``V = 0`` after it). A
    trajectory of one segment gives exactly ``gae_advantages`` of that row.

    Args:
        rewards: ``(S, C)`` float per-token rewards of S completion-padded segments.
        values: ``(S, C)`` float critic values.
        mask: ``(S, C)`` 0/1 policy-token mask (0 for env tokens and padding).
        segment_trajectory: ``(S,)`` int trajectory index of each segment; a trajectory's
            segments are ordered by row.
        gamma: Discount γ in [0, 1].
        lam: GAE λ in [0, 1].

    Returns:
        ``(advantages, returns)``, both ``(S, C)`` (meaningless at masked-out tokens).

    Raises:
        ConfigError: Shapes are inconsistent, or γ or λ is outside [0, 1].
    """
    _check("values", values, rewards.shape, 2)
    _check("mask", mask, rewards.shape, 2)
    _check("segment_trajectory", segment_trajectory, rewards.shape[:1], 1)
    _check_discount(gamma, lam)
    width = rewards.shape[1]
    _, owner = torch.unique(segment_trajectory, return_inverse=True)
    # Place of each segment in its trajectory's row: its rank among that trajectory's segments.
    counts: dict[int, int] = {}
    ranks = []
    for k in owner.tolist():
        ranks.append(counts.get(k, 0))
        counts[k] = ranks[-1] + 1
    rank = torch.tensor(ranks, dtype=torch.long)
    rows, cols = len(counts), max(counts.values(), default=0)

    def lay_out(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(rows, cols, width, dtype=dtype)
        out[owner, rank] = x.to(dtype)
        return out.reshape(rows, cols * width)

    adv, ret = gae_advantages(lay_out(rewards, values.dtype), lay_out(values, values.dtype),
                              lay_out(mask, values.dtype), gamma, lam)
    return (adv.reshape(rows, cols, width)[owner, rank],
            ret.reshape(rows, cols, width)[owner, rank])


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalize ``values`` to mean 0 and std 1 over the tokens where ``mask`` is 1.

    Uses the unbiased variance, as verl's and TRL's ``masked_whiten``.

    Args:
        values: ``(...)`` float tensor.
        mask: Same shape, 0/1.
        eps: Added to the variance.

    Returns:
        Whitened values, same shape (masked-out entries carry the same affine map).

    Raises:
        ConfigError: Shapes differ, or fewer than two tokens are unmasked.
    """
    if mask.shape != values.shape:
        raise ConfigError(f"expected mask of shape {tuple(values.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(values.dtype)
    n = mask.sum()
    if n < 2:
        raise ConfigError(f"whitening needs at least 2 unmasked tokens, got {int(n)}")
    mean = (values * mask).sum() / n
    var = (((values - mean) ** 2) * mask).sum() / (n - 1)
    return (values - mean) * torch.rsqrt(var + eps)
