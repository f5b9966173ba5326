import math

import pytest
import torch

from memgym import Step, Trajectory
from memgym.errors import ConfigError
from memgym.trainers import (
    GRPOConfig,
    SegmentBatch,
    dr_grpo_advantages,
    expand_to_segments,
    group_ids,
    grpo_advantages,
    memory_token_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    trajectory_advantages,
)
from memgym.trajectory import Segment

RETURNS = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0], dtype=torch.float64)
GROUPS = torch.tensor([0, 0, 1, 1, 2])
R2 = 1 / math.sqrt(2)


def test_grpo_hand_values():
    # group 0: mean 2, sample std sqrt(2) → ∓1/√2; group 1: zero std → 0; group 2: alone → 0
    assert grpo_advantages(RETURNS, GROUPS, eps=0.0).tolist() == pytest.approx(
        [-R2, R2, 0.0, 0.0, 0.0])
    assert grpo_advantages(RETURNS, GROUPS).tolist() == pytest.approx([-R2, R2, 0, 0, 0],
                                                                        rel=1e-5)


def test_grpo_matches_trl_formula():
    # TRL 1.16: (r - mean_g) / (nanstd_g + 1e-4) over contiguous groups of num_generations
    rewards = torch.tensor([0.3, 0.9, 0.1, 0.4, 1.0, 0.0, 0.5, 0.5], dtype=torch.float64)
    grouped = rewards.view(-1, 4)
    trl = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4))
    ours = grpo_advantages(rewards, torch.tensor([0] * 4 + [1] * 4), eps=1e-4)
    torch.testing.assert_close(ours, trl.flatten())


def test_dr_grpo_hand_values():
    assert dr_grpo_advantages(RETURNS, GROUPS).tolist() == [-1.0, 1.0, 0.0, 0.0, 0.0]


def test_rloo_hand_values():
    # pair: 1 - 3, 3 - 1; triple (0, 3, 6): 0 - 4.5, 3 - 3, 6 - 1.5
    assert rloo_advantages(RETURNS, GROUPS).tolist() == [-2.0, 2.0, 0.0, 0.0, 0.0]
    triple = rloo_advantages(torch.tensor([0.0, 3.0, 6.0]), torch.tensor([7, 7, 7]))
    assert triple.tolist() == [-4.5, 0.0, 4.5]


def test_reinforce_pp_hand_values():
    # group-centred (-1, 1, 0, 0, 0): batch mean 0, sample std sqrt(2/4) → ∓√2
    adv = reinforce_pp_advantages(RETURNS, GROUPS, eps=0.0)
    assert adv.tolist() == pytest.approx([-math.sqrt(2), math.sqrt(2), 0, 0, 0])
    assert reinforce_pp_advantages(torch.tensor([3.0]), torch.tensor([0])).tolist() == [0.0]


def test_dispatch_and_errors():
    for name, fn in (("grpo", grpo_advantages), ("dr_grpo", dr_grpo_advantages),
                     ("rloo", rloo_advantages), ("reinforce_pp", reinforce_pp_advantages)):
        assert torch.equal(trajectory_advantages(RETURNS, GROUPS, name), fn(RETURNS, GROUPS))
    with pytest.raises(ConfigError, match="unknown advantage estimator"):
        trajectory_advantages(RETURNS, GROUPS, "ppo")
    with pytest.raises(ConfigError, match="1-D"):
        grpo_advantages(RETURNS, GROUPS[:3])
    with pytest.raises(ConfigError, match="floating"):
        rloo_advantages(torch.tensor([1, 2]), torch.tensor([0, 0]))


def test_group_order_and_ids_do_not_matter():
    perm = torch.tensor([4, 2, 0, 3, 1])
    for name in ("grpo", "dr_grpo", "rloo", "reinforce_pp"):
        base = trajectory_advantages(RETURNS, GROUPS, name)
        permuted = trajectory_advantages(RETURNS[perm], GROUPS[perm] * 100 + 7, name)
        torch.testing.assert_close(permuted, base[perm])


def test_expand_to_segments():
    assert expand_to_segments(torch.tensor([0.5, -1.0]), torch.tensor([0, 0, 1])).tolist() == [
        0.5, 0.5, -1.0]


def test_memory_token_advantages():
    adv = memory_token_advantages(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0]),
                                  torch.tensor([[0, 1, 1], [1, 0, 0]]))
    assert adv.tolist() == [[1.0, 0.5, 0.5], [2.0, -1.0, -1.0]]
    with pytest.raises(ConfigError, match="memory_mask"):
        memory_token_advantages(torch.zeros(2), torch.zeros(2), torch.zeros(3, 1))


def _traj(ret, n_segments, seed=0, group=0, terms=None):
    segs = [Segment(i, i, i + 1, [1], [2, 3], [1, 1], [0.0, 0.0], "end")
            for i in range(n_segments)]
    steps = [Step(i, "", "", reward=ret / n_segments,
                  reward_terms=terms or {"qa": ret / n_segments}) for i in range(n_segments)]
    return Trajectory("x", seed, {"w": 1}, "p", steps, group=group, segments=segs)


def test_group_stats_over_trajectories_not_segments():
    # a long trajectory (5 segments) must not pull the group mean toward itself
    batch = SegmentBatch.from_trajectories([_traj(1.0, 5), _traj(0.0, 1)],
                                           GRPOConfig(estimator="dr_grpo"))
    assert batch.advantages.tolist() == pytest.approx([0.5] * 5 + [-0.5])
    assert batch.segment_trajectory.tolist() == [0] * 5 + [1]


def test_one_segment_trajectories_give_the_unsegmented_advantages():
    trajs = [_traj(r, 1, seed=s) for r, s in ((1.0, 0), (3.0, 0), (2.0, 1), (0.0, 1))]
    batch = SegmentBatch.from_trajectories(trajs, GRPOConfig(adv_eps=0.0))
    expected = grpo_advantages(torch.tensor([1.0, 3.0, 2.0, 0.0], dtype=torch.float64),
                               torch.tensor([0, 0, 1, 1]), eps=0.0)
    assert batch.advantages.tolist() == pytest.approx(expected.tolist())


def test_group_by_seed_or_fork():
    trajs = [_traj(0.0, 1, seed=3, group=9), _traj(0.0, 1, seed=3, group=8),
             _traj(0.0, 1, seed=4, group=9)]
    assert group_ids(trajs, "seed").tolist() == [0, 0, 1]
    assert group_ids(trajs, "fork").tolist() == [0, 1, 0]
    other_config = _traj(0.0, 1, seed=3)
    other_config.config = {"w": 2}
    assert group_ids([trajs[0], other_config], "seed").tolist() == [0, 1]
    with pytest.raises(ConfigError, match="group_by"):
        group_ids(trajs, "prompt")


def test_legacy_config_keys():
    cfg = GRPOConfig.model_validate({"clip_eps": 0.3, "scale_rewards": False})
    assert (cfg.clip_low, cfg.clip_high, cfg.estimator) == (0.3, 0.3, "dr_grpo")


def test_memory_credit_needs_recorded_masks_and_known_terms():
    trajs = [_traj(1.0, 1), _traj(0.0, 1)]
    with pytest.raises(ConfigError, match="not among"):
        SegmentBatch.from_trajectories(trajs, GRPOConfig(memory_terms=["nope"]))
    with pytest.raises(ConfigError, match="memory masks recorded at rollout"):
        SegmentBatch.from_trajectories(trajs, GRPOConfig(memory_terms=["qa"]))
