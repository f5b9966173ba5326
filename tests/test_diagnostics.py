"""Per-iteration diagnostics: clip fractions at each bound, approx KL, non-zero advantages,
sampler-vs-trainer logprob mismatch and the critic's explained variance."""

import math

import pytest
import torch

from memgym.batch import RolloutBatch
from memgym.segments import build_segments
from memgym.trainers import GRPOConfig, GRPOTrainer, clipped_surrogate
from memgym.trainers.diagnostics import (
    explained_variance,
    logprob_mismatch,
    update_diagnostics,
)
from memgym.trainers.logprobs import completion_logprobs, pack_segments
from memgym.trainers.ppo import PPOConfig, PPOTrainer
from memgym.trainers.value import value_model_from_policy
from memgym.trajectory import Step, Trajectory

from .tiny_models import tiny_llama


def test_update_diagnostics_by_hand():
    ratio = torch.tensor([[0.5, 0.5, 1.0, 1.5, 1.5, 1.1]])
    adv = torch.tensor([[-1.0, 1.0, 2.0, 1.0, -1.0, 0.0]])
    old = torch.zeros_like(ratio)
    d = update_diagnostics(ratio.log(), old, adv, clip_low=0.2, clip_high=0.28)
    assert d["clip_frac_low"].tolist() == [[1, 0, 0, 0, 0, 0]]
    assert d["clip_frac_high"].tolist() == [[0, 0, 0, 1, 0, 0]]
    assert d["nonzero_adv_frac"].tolist() == [[1, 1, 1, 1, 1, 0]]
    expected = [r - 1 - math.log(r) for r in ratio[0].tolist()]
    assert d["approx_kl"][0].tolist() == pytest.approx(expected)
    # together the two bounds are exactly where the clipped branch is active
    _, clipped = clipped_surrogate(ratio.log(), old, adv, 0.2, 0.28)
    assert torch.equal(clipped.double(), (d["clip_frac_low"] + d["clip_frac_high"]).double())


def test_mismatch_and_explained_variance_by_hand():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    total, top = logprob_mismatch(torch.tensor([[-1.0, -2.0, -9.0]]),
                                  torch.tensor([[-1.5, -1.0, 0.0]]), mask)
    assert (total, top) == (1.5, 1.0)  # the masked column's 9 is not counted
    returns = torch.tensor([[1.0, 3.0, 100.0]])
    assert explained_variance(returns, returns, mask) == 1.0
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask) == 0.0
    assert explained_variance(-returns, returns, mask) < 0
    assert math.isnan(explained_variance(returns, torch.ones_like(returns), mask))


def _trajectories(policy, shift, rewards=(1.0, 0.0, 0.5, 0.25)):
    """One-segment rollouts whose recorded sampler logprobs are the policy's own minus
    ``shift`` (an engine that is off by ``shift`` nats on every token)."""
    out = []
    for k, reward in enumerate(rewards):
        step = Step(0, "o", "a", reward=reward, reward_terms={"r": reward}, terminated=True,
                    prompt_ids=[1, 2 + k], completion_ids=[4, 5, 6])
        segment = build_segments([step])[0]
        with torch.no_grad():
            logp, _ = completion_logprobs(policy, pack_segments([segment], 0), temperature=0.7)
        step.logprobs = segment.logprobs = [x - shift for x in logp[0].tolist()]
        out.append(Trajectory("x", 0, {}, "p", [step], segments=[segment]))
    return out


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_trainers_report_the_diagnostics(algorithm):
    policy = tiny_llama(12, logit_scale=1.0)
    batch = RolloutBatch(_trajectories(policy, shift=0.25), temperature=0.7)
    if algorithm == "grpo":
        trainer = GRPOTrainer(policy, 0, GRPOConfig(micro_batch=2))
    else:
        trainer = PPOTrainer(policy, 0, PPOConfig(micro_batch=2),
                             value_model=value_model_from_policy(policy))
    stats = trainer.step(batch)
    assert stats["logprob_diff_mean"] == pytest.approx(0.25, abs=1e-6)
    assert stats["logprob_diff_max"] == pytest.approx(0.25, abs=1e-6)
    # one update from the behaviour policy: ratio 1, nothing clipped, no KL yet
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-9)
    assert stats["clip_frac_low"] == stats["clip_frac_high"] == 0.0
    assert 0 < stats["nonzero_adv_frac"] <= 1
    if algorithm == "ppo":
        assert math.isfinite(stats["explained_variance"])
    for traj in batch.trajectories:  # no sampler logprobs recorded: no mismatch to report
        traj.segments[0].logprobs = []
    assert math.isnan(trainer.step(RolloutBatch(batch.trajectories, 0.7))["logprob_diff_mean"])
