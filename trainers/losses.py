"""Policy-gradient losses on segments: KL estimators, the clipped surrogate, and the token
coefficients that implement ``loss_agg_mode`` × segment ``weighting``.

Shapes: ``B`` segments in a (micro-)batch, ``C`` completion columns (right-padded), ``S``
segments in the whole optimizer batch. A per-token loss ``l`` ``(B, C)`` becomes the scalar
``Σ_s c_s Σ_t m_{s,t} l_{s,t}`` with one coefficient ``c_s`` per segment from
:func:`token_coefficients`. The coefficients are computed over the *whole* batch before the
micro-batch loop, so the sum over micro-batches is the same loss (and gradient) however the batch
is split: 1 micro-batch of 8 equals 8 of 1.

:data:`LOSS_AGG_MODES` implements the loss modes (each one's per-token weight in a sequence of
``n`` tokens) that :data:`memgym.config.trainer.LossAggMode` names; a new mode is an entry here
and its name there (the torch-free config validates names without importing the trainers).
"""

from __future__ import annotations

import torch

from memgym.errors import ConfigError

KL_ESTIMATORS = ("k1", "k3", "low_var_kl")
WEIGHTINGS = ("trajectory", "segment", "token")


def _token_mean_of_sequence(n: torch.Tensor, norm_length: int | None) -> torch.Tensor:
    return torch.where(n > 0, 1.0 / n.clamp(min=1.0), torch.zeros_like(n))


# name -> per-token weight w(n, L) of a sequence of n loss tokens (``(K,)`` float64 -> ``(K,)``)
# in a mean over sequences; None: ``token-mean``, one weight 1 / Σ n for every token.
LOSS_AGG_MODES: dict[str, object] = {
    "token-mean": None,
    "seq-mean-token-sum": lambda n, norm_length: torch.ones_like(n),
    "seq-mean-token-mean": _token_mean_of_sequence,
    "seq-mean-token-sum-norm": lambda n, norm_length: torch.full_like(n, 1.0 / norm_length),
}


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                  estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of ``KL(π || π_ref)`` from samples of π (Schulman 2020,
    "Approximating KL Divergence").

    With ``r = log π_ref(y) - log π(y)``: ``k1 = -r`` (unbiased, high variance),
    ``k3 = exp(r) - r - 1`` (unbiased, non-negative; TRL's GRPO KL), ``low_var_kl`` = k3 with
    ``r`` clamped to ±20 and the result to [-10, 10] (verl's ``kl_penalty(..., "low_var_kl")``).

    Args:
        logprobs: ``(B, C)`` float logprobs of the sampled tokens under the policy.
        ref_logprobs: ``(B, C)`` float logprobs under the reference model.
        estimator: One of :data:`KL_ESTIMATORS`.

    Returns:
        ``(B, C)`` per-token KL estimates (differentiable in ``logprobs``).

    Raises:
        ConfigError: Unknown estimator or shapes differ.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ConfigError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs "
                          f"{tuple(ref_logprobs.shape)} differ in shape")
    r = ref_logprobs - logprobs
    if estimator == "k1":
        return -r
    if estimator == "k3":
        return torch.exp(r) - r - 1
    if estimator == "low_var_kl":
        r = r.clamp(-20, 20)
        return (torch.exp(r) - r - 1).clamp(-10, 10)
    raise ConfigError(f"unknown KL estimator {estimator!r}; expected one of {list(KL_ESTIMATORS)}")


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                      advantages: torch.Tensor, clip_low: float = 0.2,
                      clip_high: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token (Schulman et al. 2017, eq. 7) with DAPO's decoupled
    clip range (Yu et al. 2025, "clip-higher", eq. 10).

    ``l = -min(ρ A, clip(ρ, 1 - clip_low, 1 + clip_high) A)``, ``ρ = exp(logp - logp_old)``.

    Args:
        logprobs: ``(B, C)`` float logprobs under the policy being trained.
        old_logprobs: ``(B, C)`` float logprobs of the policy that sampled (detached).
        advantages: ``(B, C)`` per-token or ``(B, 1)`` per-segment advantages.
        clip_low: Lower clip ε (ratio ≥ 1 - clip_low).
        clip_high: Upper clip ε (ratio ≤ 1 + clip_high); DAPO uses 0.28 with clip_low 0.2.

    Returns:
        ``(loss, clipped)``: ``(B, C)`` per-token loss and ``(B, C)`` bool where the clipped
        branch is the active one (its gradient is 0).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    clipped_ratio = ratio.clamp(1 - clip_low, 1 + clip_high)
    unclipped, clipped = ratio * advantages, clipped_ratio * advantages
    return -torch.min(unclipped, clipped), (clipped < unclipped).detach()


def token_coefficients(token_counts: torch.Tensor, segment_trajectory: torch.Tensor,
                       loss_agg_mode: str = "token-mean", weighting: str = "trajectory",
                       norm_length: int | None = None) -> torch.Tensor:
    """Per-segment coefficient ``c_s`` of the loss ``Σ_s c_s Σ_t m_{s,t} l_{s,t}``.

    ``loss_agg_mode`` (verl's names) with each segment as one sequence:

    * ``token-mean``: ``Σ l / Σ n`` (DAPO; TRL ``dapo``),
    * ``seq-mean-token-sum``: ``mean_s Σ_t l``,
    * ``seq-mean-token-mean``: ``mean_s (Σ_t l / n_s)`` (GRPO; TRL ``grpo``),
    * ``seq-mean-token-sum-norm``: ``Σ l / (S · L)`` with a constant ``L = norm_length``
      (Dr. GRPO; TRL ``dr_grpo`` with ``L = max_completion_length``).

    ``weighting`` decides what a "sequence" weighs:

    * ``segment``: every segment as one sequence (a trajectory with more segments weighs more),
    * ``trajectory``: every token weighs what it would weigh in its trajectory as one
      unsegmented sequence of ``n_τ = Σ_{s ∈ τ} n_s`` tokens, however the trajectory is cut
      into segments, and the seq-mean is over trajectories: ``c_s = w(n_τ) / T`` with
      ``w = 1 / n_τ`` (``seq-mean-token-mean``), 1 (``seq-mean-token-sum``) or ``1 / L``
      (``seq-mean-token-sum-norm``) and T trajectories. So the loss of a split trajectory is
      the unsegmented loss token for token (not only its total weight),
    * ``token``: every policy token weighs ``1 / Σ n`` (token-mean, whatever the mode).

    Under ``token-mean`` the three weightings coincide.

    Args:
        token_counts: ``(S,)`` int number of loss tokens ``n_s`` of each segment.
        segment_trajectory: ``(S,)`` int trajectory index of each segment.
        loss_agg_mode: One of :data:`LOSS_AGG_MODES`.
        weighting: One of :data:`WEIGHTINGS`.
        norm_length: ``L`` of ``seq-mean-token-sum-norm`` (required there).

    Returns:
        ``(S,)`` float64 coefficients. A segment without loss tokens adds nothing to the loss
        but, as TRL's ``mask.sum(-1).clamp(min=1)`` does with an empty completion, still counts
        as a sequence in the seq-mean modes' number of sequences (segments or trajectories); it
        never makes a coefficient NaN or infinite.

    Raises:
        ConfigError: Unknown mode or weighting, missing ``norm_length``, shapes differ.
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ConfigError(f"unknown loss_agg_mode {loss_agg_mode!r}; expected one of "
                          f"{list(LOSS_AGG_MODES)}")
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {weighting!r}; expected one of {list(WEIGHTINGS)}")
    if token_counts.ndim != 1 or token_counts.shape != segment_trajectory.shape:
        raise ConfigError(f"expected token_counts and segment_trajectory of one 1-D shape, got "
                          f"{tuple(token_counts.shape)} and {tuple(segment_trajectory.shape)}")
    if loss_agg_mode == "seq-mean-token-sum-norm" and not norm_length:
        raise ConfigError("loss_agg_mode 'seq-mean-token-sum-norm' needs norm_length > 0")
    n = token_counts.to(torch.float64)
    weight = LOSS_AGG_MODES[loss_agg_mode]
    if weighting == "token" or weight is None:
        return torch.full_like(n, 1.0 / max(float(n.sum()), 1.0))
    if weighting == "segment":  # every segment one sequence
        return weight(n, norm_length) / max(len(n), 1)
    # trajectory: each token's weight in its unsegmented trajectory (n_τ = Σ_{s ∈ τ} n_s
    # tokens), then the mean over trajectories.
    _, owner = torch.unique(segment_trajectory, return_inverse=True)
    size = int(owner.max()) + 1 if owner.numel() else 0
    tokens = torch.zeros(size, dtype=n.dtype).index_add_(0, owner, n)[owner]
    return weight(tokens, norm_length) / max(size, 1)


def update_coefficients(token_counts: torch.Tensor, segment_trajectory: torch.Tensor,
                        updates: list[list[int]], loss_agg_mode: str = "token-mean",
                        weighting: str = "trajectory",
                        norm_length: int | None = None) -> list[torch.Tensor]:
    """Coefficients of each optimizer update's segments when one batch is split into M updates
    (PPO mini-batches, GRPO's several updates per batch).

    The coefficients ``c`` are those of the *whole* batch (:func:`token_coefficients`), and
    update ``k`` uses ``M · c[updates[k]]``: each update's loss is on the scale of the full
    batch's loss (their mean over the M updates is exactly the full-batch loss), and each
    trajectory's weight summed over the updates of an epoch is ``M`` times its full-batch
    weight, however its segments fall into the updates. Coefficients computed per update would
    instead count a trajectory (under ``trajectory`` weighting) or a segment's share of a
    token-mean once per update it appears in, so a trajectory split over two updates would weigh
    up to twice as much as one that is not.

    Args:
        token_counts: ``(S,)`` int loss tokens of each segment.
        segment_trajectory: ``(S,)`` int trajectory index of each segment.
        updates: M lists of segment indices, together a partition of ``range(S)``.
        loss_agg_mode / weighting / norm_length: As :func:`token_coefficients`.

    Returns:
        M tensors, the k-th ``(len(updates[k]),)`` float64.

    Raises:
        ConfigError: ``updates`` is not a partition of the segments, or as
            :func:`token_coefficients`.
    """
    rows = sorted(i for update in updates for i in update)
    if rows != list(range(len(token_counts))):
        raise ConfigError(f"expected updates that partition the {len(token_counts)} segments, "
                          f"got {updates}")
    coef = token_coefficients(token_counts, segment_trajectory, loss_agg_mode, weighting,
                              norm_length)
    return [coef[torch.tensor(update, dtype=torch.long)] * len(updates) for update in updates]
