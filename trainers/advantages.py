"""Advantage estimators on segmented trajectories.

Group statistics are computed over *trajectories* and only then expanded to their segments:
expanding first would weigh long trajectories (more segments) more in the group mean and std
(DESIGN §3).
"""

from __future__ import annotations

import torch

from memgym.errors import ConfigError


def grpo_advantages(returns: torch.Tensor, groups: torch.Tensor, scale: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages, one per trajectory (GRPO, Shao et al. 2024, eq. 3).

    ``A_i = (R_i - mean_{j in g(i)} R_j) / (std_{j in g(i)} R_j + eps)``; with ``scale=False``
    the division is skipped (Dr. GRPO, Liu et al. 2025). The std is the population std (ddof=0).

    Args:
        returns: ``(T,)`` float episode returns.
        groups: ``(T,)`` int group id of each trajectory (same episode seed).
        scale: Divide by the group std.
        eps: Added to the std.

    Returns:
        ``(T,)`` float advantages; a group of one trajectory gets 0.

    Raises:
        ConfigError: ``returns`` and ``groups`` differ in shape or are not 1-D.
    """
    if returns.ndim != 1 or returns.shape != groups.shape:
        raise ConfigError(f"expected 1-D returns and groups of one shape, got "
                          f"{tuple(returns.shape)} and {tuple(groups.shape)}")
    _, inverse = torch.unique(groups, return_inverse=True)
    count = torch.zeros(int(inverse.max()) + 1, dtype=returns.dtype).index_add_(
        0, inverse, torch.ones_like(returns))
    mean = torch.zeros_like(count).index_add_(0, inverse, returns) / count
    centred = returns - mean[inverse]
    if not scale:
        return centred
    var = torch.zeros_like(count).index_add_(0, inverse, centred**2) / count
    return centred / (var.sqrt()[inverse] + eps)


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
