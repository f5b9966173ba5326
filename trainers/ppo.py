"""PPO with a critic on segmented trajectories: token-level GAE across segment boundaries.

One :meth:`PPOTrainer.step` takes a batch of rollouts and (as verl's PPO and TRL's former
``PPOTrainer``) first computes, without gradients, the policy's logprobs (the "old" logprobs of
the ratio), the reference's logprobs and the critic's values on every segment; then the
per-token rewards (each step's reward on the last policy token of the step, minus
``kl_coef`` × the per-token KL to the reference), GAE across the segments of each trajectory
(:func:`memgym.trainers.gae.segment_gae`) and the whitened advantages of the whole batch; then
``ppo_epochs`` passes over shuffled mini-batches of segments, one optimizer step for the policy
and one for the critic per mini-batch, accumulating gradients over micro-batches. The loss
coefficients are those of the whole batch, scaled by the number of mini-batches
(:func:`memgym.trainers.losses.update_coefficients`): a mini-batch may hold some of a
trajectory's segments and not others, and each trajectory keeps its full-batch weight however
its segments are shuffled (coefficients per mini-batch would count a trajectory once per
mini-batch it appears in). So the gradients depend neither on how a mini-batch is split into
micro-batches nor, summed over an epoch, on how the batch is split into mini-batches. Every
logprob (old, new, reference) is taken from ``logits / T`` at the rollouts' sampling
temperature ``PPOBatch.temperature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from memgym.batch import RolloutBatch
from memgym.config.trainer import PPOConfig
from memgym.errors import ConfigError
from memgym.trainers.diagnostics import (
    explained_variance,
    has_sampler_logprobs,
    logprob_mismatch,
    update_diagnostics,
)
from memgym.trainers.gae import masked_whiten, segment_gae
from memgym.trainers.logprobs import (
    check_temperature,
    completion_logprobs,
    pack_segments,
    sampler_logprobs,
    truncated_is_weights,
)
from memgym.trainers.losses import clipped_surrogate, kl_divergence, update_coefficients
from memgym.trainers.value import completion_values, value_model_from_policy
from memgym.trajectory import Segment, Step, Trajectory

if TYPE_CHECKING:
    from memgym.trainers.distributed import Distributed


def _pad(rows: list[list[float]], width: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor([list(r) + [0] * (width - len(r)) for r in rows], dtype=dtype)


def step_end_columns(segment: Segment, steps: list[Step]) -> list[int]:
    """Completion column of the last policy token of each step a segment covers.

    Uses the steps' completion lengths when they carry token ids (fresh rollouts), else the
    runs of 1s of the loss mask (trajectories loaded from a file), one run per step.

    Args:
        segment: The segment.
        steps: All steps of its trajectory.

    Returns:
        ``segment.step_end − segment.step_start`` column indices, increasing.

    Raises:
        ConfigError: The loss mask does not hold one run of policy tokens per step.
    """
    covered = steps[segment.step_start:segment.step_end]
    mask = segment.loss_mask
    if covered and all(s.completion_ids for s in covered):
        ends, pos = [], 0
        for step in covered:
            while pos < len(mask) and mask[pos] == 0:
                pos += 1
            pos += len(step.completion_ids)
            ends.append(pos - 1)
        if pos <= len(mask):
            return ends
    ends = [i for i, m in enumerate(mask) if m and (i + 1 == len(mask) or not mask[i + 1])]
    if len(ends) != len(covered):
        raise ConfigError(f"segment {segment.index} covers {len(covered)} steps but its loss mask "
                          f"has {len(ends)} runs of policy tokens")
    return ends


@dataclass
class PPOBatch:
    """The token segments of a batch of trajectories, with their per-token outcome rewards.

    Attributes:
        segments: S segments, each trajectory's in order.
        rewards: ``(S, C)`` float32, each step's reward on its last policy token (C = longest
            completion); steps no token segment covers (a fork's replayed prefix) give none.
        mask: ``(S, C)`` float32 loss mask (1 = policy token; 0 = env token or padding).
        segment_trajectory: ``(S,)`` int64 index of each segment's trajectory.
        temperature: The temperature T the rollouts were sampled at (old, new and reference
            logprobs use ``logits / T``; greedy 0 trains at 1.0, see
            :func:`memgym.trainers.logprobs.training_temperature`).

    Raises:
        ConfigError: A reward is NaN or infinite, or the temperature is not a finite float > 0.
    """

    segments: list[Segment]
    rewards: torch.Tensor
    mask: torch.Tensor
    segment_trajectory: torch.Tensor
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not bool(torch.isfinite(self.rewards).all()):
            raise ConfigError(f"rewards must be finite, got {self.rewards.tolist()}")
        check_temperature(self.temperature)

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory],
                          temperature: float = 1.0) -> PPOBatch:
        """:meth:`from_rollouts` of the :class:`RolloutBatch` of ``trajectories`` sampled at
        ``temperature``."""
        return cls.from_rollouts(RolloutBatch(list(trajectories), temperature))

    @classmethod
    def from_rollouts(cls, batch: RolloutBatch) -> PPOBatch:
        """Collect the token segments and place the step rewards.

        Args:
            batch: Rollouts (those without token segments, scripted, are skipped), trained at
                the batch's ``training_temperature``.

        Raises:
            ConfigError: No trajectory has token segments, a loss mask does not match its
                steps (see :func:`step_end_columns`; a step without policy tokens has no token
                to carry its reward), a reward is NaN or infinite, or a bad temperature.
        """
        segments, owner, placed = [], [], []
        for k, traj in enumerate(batch.trajectories):
            for seg in traj.segments:
                row = [0.0] * len(seg.completion_ids)
                for step, col in zip(traj.steps[seg.step_start:seg.step_end],
                                     step_end_columns(seg, traj.steps), strict=True):
                    row[col] += step.reward
                segments.append(seg)
                owner.append(k)
                placed.append(row)
        if not segments:
            raise ConfigError("expected trajectories with token segments (an LLM policy's "
                              "rollouts), got none")
        width = max(len(s.completion_ids) for s in segments)
        return cls(segments, _pad(placed, width, torch.float32),
                   _pad([s.loss_mask for s in segments], width, torch.float32),
                   torch.tensor(owner, dtype=torch.long), batch.training_temperature)


class PPOTrainer:
    """PPO with a separate critic on segmented trajectories (Schulman et al. 2017; Ouyang et
    al. 2022; verl).

    Per policy token, with ``ρ = exp(log π − log π_old)`` and the (whitened) GAE advantage
    ``A``: ``pg = −min(ρA, clip(ρ, 1 − clip_low, 1 + clip_high)A)``
    (:func:`memgym.trainers.losses.clipped_surrogate`); value loss
    ``vf = ½·max((V − R)², (V_old + clip(V − V_old, ±cliprange_value) − R)²)`` (PPO2);
    ``l = pg + kl_loss_coef·KL + vf_coef·vf``, reduced with the coefficients of
    :func:`memgym.trainers.losses.token_coefficients` computed over the whole batch and scaled
    by the number of mini-batches (:func:`memgym.trainers.losses.update_coefficients`), times
    the truncated importance weight of ``tis_cap`` on ``pg`` when it is set.

    Args:
        model: The policy (a causal LM; peft-wrapped works when ``value_model`` is given);
            trained in place.
        pad_token_id: Padding id of the tokenizer.
        config: :class:`PPOConfig`.
        ref_model: Frozen reference for the KL terms (needed when ``kl_coef`` or
            ``kl_loss_coef`` > 0).
        value_model: The critic (logits ``(B, L, 1)``); default
            :func:`memgym.trainers.value.value_model_from_policy` of ``model``.
        distributed: Train data-parallel or sharded
            (:class:`~memgym.trainers.distributed.Distributed`): policy and critic with their
            optimizers prepared by Accelerate; every rank computes the rollout statistics
            (old logprobs, values, GAE) of the whole batch, and the loss of its shard of each
            mini-batch with the whole batch's coefficients; metrics are whole-batch values.
            None: one process.

    Raises:
        ConfigError: A KL coefficient is set without a reference model.
    """

    def __init__(self, model: PreTrainedModel, pad_token_id: int, config: PPOConfig,
                 ref_model: PreTrainedModel | None = None,
                 value_model: PreTrainedModel | None = None,
                 distributed: Distributed | None = None) -> None:
        if (config.kl_coef > 0 or config.kl_loss_coef > 0) and ref_model is None:
            raise ConfigError("kl_coef or kl_loss_coef > 0 needs a reference model (ref_model)")
        self.model, self.pad_token_id, self.config, self.ref_model = (
            model, pad_token_id, config, ref_model)
        self.value_model = value_model if value_model is not None else value_model_from_policy(
            model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.value_params = [p for p in self.value_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.value_optimizer = torch.optim.AdamW(self.value_params, lr=config.value_learning_rate,
                                                 weight_decay=config.weight_decay)
        self.distributed = distributed
        if distributed is not None:
            self.model, self.optimizer = distributed.prepare(model, self.optimizer)
            self.value_model, self.value_optimizer = distributed.prepare(
                self.value_model, self.value_optimizer)
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.value_params = [p for p in self.value_model.parameters() if p.requires_grad]
            if ref_model is not None:
                self.ref_model = ref_model.to(distributed.device)
        self.device = distributed.device if distributed is not None else self.params[0].device
        self.global_step = 0

    def _pack(self, segments: list[Segment]) -> dict:
        """:func:`pack_segments` on the policy's device."""
        packed = pack_segments(segments, self.pad_token_id)
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in packed.items()}

    @torch.no_grad()
    def _rollout_stats(self, batch: PPOBatch) -> dict[str, torch.Tensor]:
        """Old logprobs (the trainer's, in the update's mode and at the batch's temperature, or
        the sampler's), old values, the sampler's logprobs when ``tis_cap`` needs them and
        (when a KL term is on) reference logprobs, each ``(S, C)``, computed before any
        update."""
        cfg, segments, width, temp = (self.config, batch.segments, batch.mask.shape[1],
                                      batch.temperature)
        use_ref = cfg.kl_coef > 0 or cfg.kl_loss_coef > 0
        out: dict[str, list[torch.Tensor]] = {"old_logp": [], "old_values": [], "ref_logp": []}
        for start in range(0, len(segments), cfg.micro_batch):
            packed = self._pack(segments[start:start + cfg.micro_batch])
            pad = (0, width - packed["completion_len"])
            if cfg.behaviour_logprobs == "trainer":
                logp, _ = completion_logprobs(self.model, packed, temperature=temp)
                out["old_logp"].append(F.pad(logp, pad))
            out["old_values"].append(F.pad(completion_values(self.value_model, packed), pad))
            if use_ref:
                ref, _ = completion_logprobs(self.ref_model, packed, temperature=temp)
                out["ref_logp"].append(F.pad(ref, pad))
        stats = {k: torch.cat(v).cpu() for k, v in out.items() if v}
        if cfg.behaviour_logprobs == "sampler" or cfg.tis_cap is not None:
            sampled = sampler_logprobs(segments, width).to(stats["old_values"].dtype)
            stats["old_logp" if cfg.behaviour_logprobs == "sampler" else "sampler_logp"] = sampled
        return stats

    def step(self, batch: RolloutBatch | PPOBatch) -> dict[str, float]:
        """Run PPO on one batch of rollouts.

        Args:
            batch: The rollouts of the current policy (:meth:`PPOBatch.from_rollouts`; those
                without token segments, scripted, are skipped), or a prepared
                :class:`PPOBatch` (it carries the training temperature).

        Returns:
            Metrics: ``loss``, ``pg_loss``, ``vf_loss``, ``kl``, ``clip_frac``,
            ``vf_clip_frac``, ``entropy`` (per update, the loss terms as reduced, the rest as
            token means; averaged over updates), ``grad_norm``,
            ``value_grad_norm`` (before clipping, mean over updates), ``adv_mean``,
            ``adv_std`` (GAE advantages before whitening), ``value_mean``, ``return_mean``,
            ``rollout_kl`` (token means over the batch's policy tokens), ``tis_weight`` (mean
            truncated IS weight; 1 when off), ``approx_kl``, ``clip_frac_low``,
            ``clip_frac_high``, ``nonzero_adv_frac`` (per update, averaged;
            :func:`~memgym.trainers.diagnostics.update_diagnostics`), ``explained_variance``
            of the critic's values before the update, ``logprob_diff_mean`` /
            ``logprob_diff_max`` (``|logp_trainer − logp_sampler|`` over policy tokens, the
            trainer's old logprobs; NaN without sampler logprobs), ``tokens``, ``segments``,
            ``updates``.

        Raises:
            ConfigError: See :meth:`PPOBatch.from_rollouts`; the sampler's logprobs are
                needed and a segment lacks them; fewer than 2 policy tokens to whiten.
        """
        cfg = self.config
        if isinstance(batch, RolloutBatch):
            batch = PPOBatch.from_rollouts(batch)
        mask = batch.mask
        self.model.train()
        self.value_model.train()
        stats = self._rollout_stats(batch)
        rewards = batch.rewards.to(stats["old_values"].dtype)
        kl = torch.zeros_like(rewards)
        if "ref_logp" in stats:
            kl = kl_divergence(stats["old_logp"], stats["ref_logp"], cfg.kl_estimator) * mask
            rewards = rewards - cfg.kl_coef * kl
        advantages, returns = segment_gae(rewards, stats["old_values"], mask,
                                          batch.segment_trajectory, cfg.gamma, cfg.lam)
        n_tokens = mask.sum()

        def token_mean(x: torch.Tensor) -> float:
            return float((x * mask).sum() / n_tokens)

        diff_mean = diff_max = float("nan")
        if has_sampler_logprobs(batch.segments):
            sampled = sampler_logprobs(batch.segments, mask.shape[1])
            diff_sum, diff_max = logprob_mismatch(
                stats["old_logp"], sampled.to(stats["old_logp"].dtype), mask)
            diff_mean = diff_sum / float(n_tokens)

        adv_mean = token_mean(advantages)
        adv_std = token_mean((advantages - adv_mean) ** 2) ** 0.5
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        data = {"mask": mask, "advantages": advantages, "returns": returns, **stats}
        if cfg.tis_cap is not None:
            data["tis"] = truncated_is_weights(data["old_logp"], data.pop("sampler_logp"),
                                               cfg.tis_cap)
        counts = mask.sum(-1).long()

        size = len(batch.segments)
        per_update = size if cfg.grad_accum is None else cfg.micro_batch * cfg.grad_accum
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.global_step)
        totals: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(size, generator=generator).tolist()
            minibatches = [order[s:s + per_update] for s in range(0, size, per_update)]
            coefs = update_coefficients(counts, batch.segment_trajectory, minibatches,
                                        cfg.loss_agg_mode, cfg.weighting, cfg.norm_length)
            for rows, coef in zip(minibatches, coefs, strict=True):
                for name, value in self._update(batch, data, rows, coef).items():
                    totals[name] = totals.get(name, 0.0) + value
                updates += 1
        self.global_step += 1
        return {**{k: v / updates for k, v in totals.items()},
                "adv_mean": adv_mean, "adv_std": adv_std,
                "value_mean": token_mean(stats["old_values"]), "return_mean": token_mean(returns),
                "rollout_kl": token_mean(kl),
                "explained_variance": explained_variance(stats["old_values"], returns, mask),
                "logprob_diff_mean": diff_mean, "logprob_diff_max": diff_max,
                "tis_weight": token_mean(data["tis"]) if "tis" in data else 1.0,
                "tokens": float(n_tokens),
                "segments": float(size), "updates": float(updates)}

    def _update(self, batch: PPOBatch, data: dict[str, torch.Tensor], rows: list[int],
                coef: torch.Tensor) -> dict[str, float]:
        """One optimizer step of the policy and of the critic on the segments ``rows``, whose
        loss coefficients are ``coef`` ``(len(rows),)``."""
        cfg, segments, dist = self.config, batch.segments, self.distributed
        tokens = data["mask"][rows].sum().clamp(min=1)
        n_real = len(rows)
        if dist is not None:  # this rank's shard, padded with weight 0
            shard, n_real = dist.even_shard(list(zip(rows, coef.tolist(), strict=True)))
            rows = [i for i, _ in shard]
            coef = torch.tensor([c for _, c in shard], dtype=coef.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        self.value_optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(("loss", "pg_loss", "vf_loss", "kl", "clip_frac", "vf_clip_frac",
                              "entropy", "approx_kl", "clip_frac_low", "clip_frac_high",
                              "nonzero_adv_frac"), 0.0)
        for start in range(0, len(rows), cfg.micro_batch):
            idx = rows[start:start + cfg.micro_batch]
            packed = self._pack([segments[i] for i in idx])
            d = {k: v[idx, :packed["completion_len"]].to(packed["input_ids"].device)
                 for k, v in data.items()}
            if n_real < len(rows):  # padding rows of a shard count nowhere
                keep = torch.arange(start, start + len(idx)) < n_real
                d["mask"] = d["mask"] * keep.unsqueeze(-1).to(d["mask"])
            weights = d["mask"] * coef[start:start + cfg.micro_batch].unsqueeze(-1).to(
                d["mask"].device)
            last = start + cfg.micro_batch >= len(rows)
            logp, entropy = completion_logprobs(self.model, packed, entropy=True,
                                                temperature=batch.temperature)
            old_logp = d["old_logp"].to(logp.dtype)
            pg, clipped = clipped_surrogate(logp, old_logp, d["advantages"], cfg.clip_low,
                                            cfg.clip_high)
            diagnostics = update_diagnostics(logp, old_logp, d["advantages"], cfg.clip_low,
                                             cfg.clip_high)
            if "tis" in d:
                pg = pg * d["tis"]
            kl = (kl_divergence(logp, d["ref_logp"], cfg.kl_estimator) if "ref_logp" in d
                  else torch.zeros_like(logp))
            terms = {"pg_loss": (pg * weights).sum(), "kl": (kl * weights).sum()}
            # Separate models: one backward each, so only one graph is alive at a time.
            self._backward(self.model, terms["pg_loss"] + cfg.kl_loss_coef * terms["kl"], last)
            values = completion_values(self.value_model, packed)
            old = d["old_values"]
            vf_unclipped = (values - d["returns"]) ** 2
            vf_clipped = (old + (values - old).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                          - d["returns"]) ** 2
            vf = 0.5 * (torch.maximum(vf_unclipped, vf_clipped) if cfg.cliprange_value > 0
                        else vf_unclipped)
            terms["vf_loss"] = (vf * weights).sum()
            self._backward(self.value_model, cfg.vf_coef * terms["vf_loss"], last)
            loss = terms["pg_loss"] + cfg.kl_loss_coef * terms["kl"] + cfg.vf_coef * terms[
                "vf_loss"]
            sums["loss"] += loss.item()
            for name, value in terms.items():
                sums[name] += value.item()
            for name, value in (("entropy", entropy), ("clip_frac", clipped),
                                ("vf_clip_frac", vf_clipped > vf_unclipped),
                                *diagnostics.items()):
                sums[name] += float((value * d["mask"]).sum() / tokens)
        clip = torch.nn.utils.clip_grad_norm_ if dist is None else dist.clip_grad_norm_
        grad_norm = clip(self.params, cfg.max_grad_norm)
        value_grad_norm = clip(self.value_params, cfg.max_grad_norm)
        self.optimizer.step()
        self.value_optimizer.step()
        if dist is not None:  # whole-mini-batch values (the norms are the same on every rank)
            sums = dist.sum(sums)
        return {**sums, "grad_norm": float(grad_norm), "value_grad_norm": float(value_grad_norm)}

    def _backward(self, model: torch.nn.Module, loss: torch.Tensor, last: bool) -> None:
        """``loss.backward()``, or the group's backward (gradients synchronised on the last
        micro-batch of an update only)."""
        if self.distributed is None:
            loss.backward()
            return
        with self.distributed.no_sync(model, not last):
            self.distributed.backward(loss)

    def state_dict(self) -> dict:
        """Everything :meth:`load_state_dict` needs to resume exactly except the policy's
        weights (saved with the model): the step, both optimizers, the critic's weights."""
        return {"global_step": self.global_step, "optimizer": self.optimizer.state_dict(),
                "value_optimizer": self.value_optimizer.state_dict(),
                "value_model": self.value_model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ConfigError: ``state`` lacks a key.
        """
        missing = {"global_step", "optimizer", "value_optimizer", "value_model"} - set(state)
        if missing:
            raise ConfigError(f"PPO trainer state lacks {sorted(missing)}")
        self.value_model.load_state_dict(state["value_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.global_step = int(state["global_step"])
