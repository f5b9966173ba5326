import pytest
import torch

from memgym import Step, Trajectory
from memgym.trainers import SegmentBatch, expand_to_segments, grpo_advantages
from memgym.trajectory import Segment


def test_grpo_hand_values():
    returns = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0])
    groups = torch.tensor([0, 0, 1, 1, 2])
    adv = grpo_advantages(returns, groups, eps=0.0)
    # group 0: mean 2, std 1 → -1, +1; group 1: zero std → 0/0 guarded by eps below
    assert adv[:2].tolist() == [-1.0, 1.0]
    adv = grpo_advantages(returns, groups)
    assert adv[2:].tolist() == [0.0, 0.0, 0.0]
    assert grpo_advantages(returns, groups, scale=False).tolist() == [-1.0, 1.0, 0.0, 0.0, 0.0]


def test_expand_to_segments():
    assert expand_to_segments(torch.tensor([0.5, -1.0]), torch.tensor([0, 0, 1])).tolist() == [
        0.5, 0.5, -1.0]


def _traj(ret, n_segments, group=0):
    seg = Segment(0, 0, 1, [1], [2], [1], [0.0], "end")
    return Trajectory("x", 0, {}, "p", [Step(0, "", "", reward=ret)], group=group,
                      segments=[seg] * n_segments)


def test_group_stats_over_trajectories_not_segments():
    # a long trajectory (5 segments) must not pull the group mean toward itself
    batch = SegmentBatch.from_trajectories([_traj(1.0, 5), _traj(0.0, 1)])
    assert batch.advantages.tolist() == pytest.approx([1.0] * 5 + [-1.0], abs=1e-5)
