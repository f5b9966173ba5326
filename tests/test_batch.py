"""The rollout→training contract (`RolloutBatch`) and the registries the trainers' configs read."""

import math
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from memgym.batch import RolloutBatch, training_temperature
from memgym.config.trainer import EstimatorName, LossAggMode
from memgym.engine import SamplingParams
from memgym.errors import ConfigError
from memgym.trainers import GRPOConfig, SegmentBatch, token_coefficients, trajectory_advantages
from memgym.trainers.advantages import ESTIMATORS
from memgym.trainers.losses import LOSS_AGG_MODES
from memgym.trainers.ppo import PPOBatch, PPOConfig
from memgym.trajectory import Segment, Step, Trajectory


def _traj(seed, reward, n_segments=1, version=0, memory=True):
    segments = [Segment(i, i, i + 1, [1, 2], [3, 4], [1, 1], [-0.5, -0.25], "end",
                        [0, 1] if memory else []) for i in range(n_segments)]
    steps = [Step(i, "", "", reward=reward / n_segments,
                  reward_terms={"qa": reward / n_segments, "format": 0.0},
                  completion_ids=[3, 4]) for i in range(n_segments)]
    return Trajectory("e", seed, {}, "p", steps, segments=segments, policy_version=version)


def test_batch_carries_samples_returns_groups_and_versions():
    trajs = [_traj(0, 1.0, 2, version=3), _traj(0, 0.0), _traj(1, 0.5, version=4)]
    batch = RolloutBatch.from_rollouts(trajs, SamplingParams(temperature=0.7, top_p=0.9))
    assert (batch.temperature, batch.top_p, batch.training_temperature) == (0.7, 0.9, 0.7)
    assert len(batch.segments) == 4 and batch.segment_trajectory.tolist() == [0, 0, 1, 2]
    assert batch.returns().tolist() == [1.0, 0.0, 0.5]
    assert batch.term_returns(["qa", "format"]).tolist() == [1.0, 0.0, 0.5]
    assert batch.groups("seed").tolist() == [0, 0, 1]
    assert batch.policy_versions().tolist() == [3, 0, 4]
    assert RolloutBatch(trajs, temperature=0.0).training_temperature == 1.0  # greedy
    with pytest.raises(ConfigError, match="not among"):
        batch.term_returns(["bleu"])


@pytest.mark.parametrize("change, match", [
    (lambda t: t.clear(), "at least one trajectory"),
    (lambda t: setattr(t[0].steps[0], "reward", math.nan), "NaN or infinite"),
    (lambda t: t[0].steps[0].reward_terms.update(qa=math.inf), "NaN or infinite"),
    (lambda t: setattr(t[0].segments[0], "loss_mask", [1]), "loss mask"),
    (lambda t: setattr(t[0].segments[0], "memory_mask", [1]), "memory mask"),
])
def test_bad_batches_are_typed_errors(change, match):
    trajs = [_traj(0, 1.0)]
    change(trajs)
    with pytest.raises(ConfigError, match=match):
        RolloutBatch(trajs)


@pytest.mark.parametrize("temperature, top_p", [(-1.0, 1.0), (math.nan, 1.0), (1.0, 0.0),
                                                (1.0, 1.5)])
def test_bad_sampling_settings_are_refused(temperature, top_p):
    with pytest.raises(ConfigError):
        RolloutBatch([_traj(0, 1.0)], temperature, top_p)
    with pytest.raises(ConfigError):
        training_temperature(-0.5)


def test_both_trainers_build_their_batches_from_it():
    trajs = [_traj(0, 1.0, 2), _traj(0, 0.0)]
    batch = RolloutBatch(trajs, temperature=0.7)
    grpo = SegmentBatch.from_rollouts(batch, GRPOConfig(memory_terms=["qa"]))
    assert grpo.temperature == 0.7 and grpo.memory_masks == [[0, 1]] * 3
    assert grpo.advantages.tolist() == pytest.approx([2**-0.5] * 2 + [-(2**-0.5)], rel=1e-5)
    ppo = PPOBatch.from_rollouts(batch)
    assert ppo.temperature == 0.7 and ppo.rewards.tolist() == [[0, 0.5], [0, 0.5], [0, 0]]
    no_masks = RolloutBatch([_traj(0, 1.0, memory=False), _traj(0, 0.0, memory=False)])
    with pytest.raises(ConfigError, match="memory masks recorded at rollout"):
        SegmentBatch.from_rollouts(no_masks, GRPOConfig(memory_terms=["qa"]))


def test_config_names_are_the_registries_keys():
    """The configs (torch-free) validate against Literal names; the registries implement them."""
    assert set(get_args(EstimatorName)) == set(ESTIMATORS)
    assert set(get_args(LossAggMode)) == set(LOSS_AGG_MODES)
    for config in (GRPOConfig, PPOConfig):
        with pytest.raises(ValidationError, match="seq-mean-token-sum-norm"):
            config(loss_agg_mode="seq-mean-token-median")
    with pytest.raises(ValidationError, match="reinforce_pp"):
        GRPOConfig(estimator="best")


def test_the_functions_take_any_registry_entry(monkeypatch):
    monkeypatch.setitem(ESTIMATORS, "best", lambda r, g, eps: r - r.max())
    monkeypatch.setitem(LOSS_AGG_MODES, "seq-mean-token-half",
                        lambda n, norm_length: torch.full_like(n, 0.5))
    returns = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert trajectory_advantages(returns, torch.tensor([0, 0]), "best").tolist() == [-2.0, 0.0]
    coef = token_coefficients(torch.tensor([2, 4]), torch.tensor([0, 1]), "seq-mean-token-half",
                              "segment")
    assert coef.tolist() == [0.25, 0.25]
