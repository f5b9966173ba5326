"""Advantage estimators on segmented trajectories (pure functions on tensors).

Every estimator takes one scalar return per *trajectory* and the trajectory's group id and gives
one advantage per trajectory, ``(T,)``; :func:`expand_to_segments` then broadcasts it to the
trajectory's segments, ``(S,)``. Group statistics are computed over trajectories and only then
expanded: expanding first would weigh long trajectories (more segments) more in the group mean
and std (DESIGN §3). :func:`memory_token_advantages` builds the per-token ``(S, C)`` advantages
of memory-token credit (HiMPO).

Groups are integer ids (``(T,)`` int64): trajectories of the same episode seed (GRPO's "same
prompt") or rollouts continued from one shared forked memory state (Memory-R2 style); see
:func:`memgym.batch.group_ids`.

:data:`ESTIMATORS` implements the estimators that :data:`memgym.config.trainer.EstimatorName`
names (a new one is an entry in both; a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from memgym.errors import ConfigError


def _check(returns: torch.Tensor, groups: torch.Tensor) -> None:
    if returns.ndim != 1 or returns.shape != groups.shape:
        raise ConfigError(f"expected 1-D returns and groups of one shape, got "
                          f"{tuple(returns.shape)} and {tuple(groups.shape)}")
    if not returns.is_floating_point():
        raise ConfigError(f"expected floating-point returns, got {returns.dtype}")
    if not bool(torch.isfinite(returns).all()):
        raise ConfigError(f"returns must be finite (a NaN or infinite reward would make every "
                          f"advantage of its group NaN), got {returns.tolist()}")


def _group_sums(values: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(sum over the group, group size)`` of each trajectory's group, both ``(T,)``."""
    _, inverse = torch.unique(groups, return_inverse=True)
    size = int(inverse.max()) + 1 if inverse.numel() else 0
    total = torch.zeros(size, dtype=values.dtype).index_add_(0, inverse, values)
    count = torch.zeros(size, dtype=values.dtype).index_add_(0, inverse, torch.ones_like(values))
    return total[inverse], count[inverse]


def _centred(returns: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(R - group mean, group size)``, both ``(T,)``."""
    total, count = _group_sums(returns, groups)
    return returns - total / count, count


def grpo_advantages(returns: torch.Tensor, groups: torch.Tensor, scale: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024, DeepSeekMath eq. 3).

    ``A_i = (R_i - mean_g R) / (std_g R + eps)`` over the trajectories ``g`` of ``i``'s group.
    The std is the sample std (ddof=1), as TRL's and verl's GRPO use. With ``scale=False`` the
    division is skipped: ``A_i = R_i - mean_g R`` (Dr. GRPO, Liu et al. 2025, "Understanding
    R1-Zero-Like Training", eq. 4; pair it with a length-independent ``loss_agg_mode``).

    Args:
        returns: ``(T,)`` float episode returns.
        groups: ``(T,)`` int group id of each trajectory.
        scale: Divide by the group std (GRPO) or not (Dr. GRPO).
        eps: Added to the std (TRL uses 1e-4, verl 1e-6).

    Returns:
        ``(T,)`` advantages, dtype of ``returns``; a trajectory alone in its group gets 0, and so
        do the members of a group of equal returns when ``eps=0``.

    Raises:
        ConfigError: ``returns`` and ``groups`` are not 1-D of one shape, or returns not float
            or not finite.
    """
    _check(returns, groups)
    centred, count = _centred(returns, groups)
    if not scale:
        return centred
    sq, _ = _group_sums(centred**2, groups)
    scale_by = (sq / (count - 1).clamp(min=1)).sqrt() + eps
    keep = (count > 1) & (scale_by > 0)  # alone in its group, or equal returns with eps=0: 0
    return torch.where(keep, centred / scale_by.where(keep, 1.0), torch.zeros_like(centred))


def dr_grpo_advantages(returns: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO advantages ``A_i = R_i - mean_g R`` (Liu et al. 2025, eq. 4): GRPO without the
    std division. Shapes and errors as :func:`grpo_advantages`."""
    return grpo_advantages(returns, groups, scale=False)


def rloo_advantages(returns: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024, "Back to
    Basics", eq. 7): ``A_i = R_i - 1/(n-1) Σ_{j in g, j != i} R_j`` for a group of size ``n``
    (equivalently ``n/(n-1) · (R_i - mean_g R)``).

    Args:
        returns: ``(T,)`` float episode returns.
        groups: ``(T,)`` int group id of each trajectory.

    Returns:
        ``(T,)`` advantages; a trajectory alone in its group gets 0.

    Raises:
        ConfigError: As :func:`grpo_advantages`.
    """
    _check(returns, groups)
    total, count = _group_sums(returns, groups)
    loo = (total - returns) / (count - 1).clamp(min=1)
    return torch.where(count > 1, returns - loo, torch.zeros_like(returns))


def reinforce_pp_advantages(returns: torch.Tensor, groups: torch.Tensor,
                            eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++-baseline advantages (Hu 2025, "REINFORCE++", §3; verl's
    ``compute_reinforce_plus_plus_baseline_outcome_advantage``): subtract the group mean, then
    normalize over the whole batch: ``a_i = R_i - mean_g R``, ``A_i = (a_i - mean a) /
    (std a + eps)`` (sample std, ddof=1).

    verl whitens over response *tokens*; here the batch statistics are taken over trajectories,
    so long or many-segment trajectories do not dominate them (DESIGN §3).

    Args:
        returns: ``(T,)`` float episode returns.
        groups: ``(T,)`` int group id of each trajectory.
        eps: Added to the batch std.

    Returns:
        ``(T,)`` advantages (all 0 when ``T < 2`` or, with ``eps=0``, all equal).

    Raises:
        ConfigError: As :func:`grpo_advantages`.
    """
    _check(returns, groups)
    centred, _ = _centred(returns, groups)
    scale_by = centred.std() + eps if centred.numel() > 1 else 0.0
    if scale_by == 0:
        return torch.zeros_like(centred)
    return (centred - centred.mean()) / scale_by


# name -> f(returns (T,), groups (T,), eps) -> advantages (T,)
ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "grpo": lambda r, g, eps: grpo_advantages(r, g, eps=eps),
    "dr_grpo": lambda r, g, eps: dr_grpo_advantages(r, g),
    "rloo": lambda r, g, eps: rloo_advantages(r, g),
    "reinforce_pp": lambda r, g, eps: reinforce_pp_advantages(r, g, eps=eps),
}


def trajectory_advantages(returns: torch.Tensor, groups: torch.Tensor, estimator: str = "grpo",
                          eps: float = 1e-6) -> torch.Tensor:
    """One advantage per trajectory with the named estimator (one of :data:`ESTIMATORS`).

    Args:
        returns: ``(T,)`` float episode returns.
        groups: ``(T,)`` int group ids.
        estimator: ``grpo`` | ``dr_grpo`` | ``rloo`` | ``reinforce_pp``.
        eps: Std guard of ``grpo`` and ``reinforce_pp``.

    Returns:
        ``(T,)`` advantages.

    Raises:
        ConfigError: Unknown estimator, or bad shapes.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown advantage estimator {estimator!r}; expected one of "
                          f"{list(ESTIMATORS)}")
    return ESTIMATORS[estimator](returns, groups, eps)


def expand_to_segments(trajectory_values: torch.Tensor,
                       segment_trajectory: torch.Tensor) -> torch.Tensor:
    """Broadcast one value per trajectory to each of its segments (DCPO, MemAct).

    Args:
        trajectory_values: ``(T,)`` per-trajectory values.
        segment_trajectory: ``(S,)`` int index in ``[0, T)`` of each segment's trajectory.

    Returns:
        ``(S,)`` values.
    """
    return trajectory_values[segment_trajectory]


def memory_token_advantages(advantages: torch.Tensor, memory_advantages: torch.Tensor,
                            memory_mask: torch.Tensor) -> torch.Tensor:
    """Per-token advantages with memory-token credit (HiMPO-style).

    HiMPO assigns memory-write tokens a memory-specific advantage and every other token the
    trajectory advantage: ``A_{s,t} = m_{s,t} · A^mem_s + (1 - m_{s,t}) · A_s`` where ``m`` marks
    the completion tokens of memory-op payloads. memgym's ``A^mem`` is the group-normalized
    memory return (the reward terms that score the writes, see ``GRPOConfig.memory_terms``),
    computed with the same estimator as ``A``.

    Args:
        advantages: ``(S,)`` float trajectory advantage of each segment.
        memory_advantages: ``(S,)`` float memory advantage of each segment.
        memory_mask: ``(S, C)`` {0, 1} memory-token mask.

    Returns:
        ``(S, C)`` advantages, dtype of ``advantages``.

    Raises:
        ConfigError: Shapes disagree.
    """
    if (advantages.ndim != 1 or memory_advantages.shape != advantages.shape
            or memory_mask.ndim != 2 or memory_mask.shape[0] != advantages.shape[0]):
        raise ConfigError(f"expected advantages (S,), memory_advantages (S,), memory_mask (S, C);"
                          f" got {tuple(advantages.shape)}, {tuple(memory_advantages.shape)}, "
                          f"{tuple(memory_mask.shape)}")
    m = memory_mask.to(advantages.dtype)
    return m * memory_advantages.unsqueeze(-1) + (1 - m) * advantages.unsqueeze(-1)
