"""GAE on segmented batches: hand-computed values, segment invariance, bootstrapping."""

import pytest
import torch

from memgym.errors import ConfigError
from memgym.trainers.gae import gae_advantages, masked_whiten, segment_gae


def reference_gae(rewards, values, gamma, lam):
    """Textbook GAE over a list of MDP steps, terminal after the last (Schulman 2016)."""
    adv, nxt_v, nxt_a = [0.0] * len(rewards), 0.0, 0.0
    for t in reversed(range(len(rewards))):
        nxt_a = rewards[t] + gamma * nxt_v - values[t] + gamma * lam * nxt_a
        nxt_v = values[t]
        adv[t] = nxt_a
    return adv


def test_hand_computed_three_steps():
    # r = [0, 0, 1], V = [0.5, 0.2, 0.4], γ = 0.9, λ = 0.8:
    # δ2 = 1 - 0.4 = 0.6;              A2 = 0.6
    # δ1 = 0 + 0.9·0.4 - 0.2 = 0.16;   A1 = 0.16 + 0.72·0.6 = 0.592
    # δ0 = 0 + 0.9·0.2 - 0.5 = -0.32;  A0 = -0.32 + 0.72·0.592 = 0.10624
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]], dtype=torch.float64)
    adv, ret = gae_advantages(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert adv[0].tolist() == pytest.approx([0.10624, 0.592, 0.6], abs=1e-12)
    assert ret[0].tolist() == pytest.approx([0.60624, 0.792, 1.0], abs=1e-12)


def test_lambda_limits():
    rewards = torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64)
    values = torch.tensor([[0.3, -0.1, 0.7]], dtype=torch.float64)
    ones = torch.ones(1, 3)
    # λ = 1: discounted return minus V; λ = 0: one-step TD error.
    adv1, ret1 = gae_advantages(rewards, values, ones, gamma=0.5, lam=1.0)
    assert ret1[0].tolist() == pytest.approx([1.5, 1.0, 2.0])
    assert adv1[0].tolist() == pytest.approx([1.2, 1.1, 1.3])
    adv0, _ = gae_advantages(rewards, values, ones, gamma=0.5, lam=0.0)
    assert adv0[0].tolist() == pytest.approx([1.0 - 0.05 - 0.3, 0.35 + 0.1, 2.0 - 0.7])


def test_masked_tokens_are_skipped():
    # Tokens 1 and 3 are env tokens: the result on tokens 0, 2, 4 equals GAE of those three.
    rewards = torch.tensor([[0.5, 9.0, 0.0, 9.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.1, 7.0, 0.2, 7.0, 0.3]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0, 1]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.7)
    expected = reference_gae([0.5, 0.0, 1.0], [0.1, 0.2, 0.3], 0.9, 0.7)
    assert adv[0, [0, 2, 4]].tolist() == pytest.approx(expected, abs=1e-12)
    assert ret[0, [0, 2, 4]].tolist() == pytest.approx(
        [a + v for a, v in zip(expected, [0.1, 0.2, 0.3], strict=True)], abs=1e-12)


def test_rows_are_independent_episodes():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    mask = (torch.rand(3, 6, generator=g) > 0.3).float()
    adv, _ = gae_advantages(rewards, values, mask, 0.95, 0.9)
    for b in range(3):
        single, _ = gae_advantages(rewards[b:b + 1], values[b:b + 1], mask[b:b + 1], 0.95, 0.9)
        assert torch.equal(adv[b], single[0])


def test_one_segment_trajectory_equals_unsegmented_exactly():
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    mask = (torch.rand(4, 7, generator=g) > 0.2).float()
    adv, ret = segment_gae(rewards, values, mask, torch.tensor([3, 0, 2, 1]), 0.99, 0.95)
    flat_adv, flat_ret = gae_advantages(rewards, values, mask, 0.99, 0.95)
    assert torch.equal(adv, flat_adv) and torch.equal(ret, flat_ret)


def test_bootstrap_across_segments_equals_concatenated_sequence():
    g = torch.Generator().manual_seed(2)
    # Trajectory 0: segments in rows 0, 2, 3 (widths padded to 5); trajectory 1: row 1.
    lengths = [3, 5, 4, 2]
    rewards, values = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    mask = torch.zeros(4, 5)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    mask[2, 1] = 0  # an env token inside segment 2
    owner = torch.tensor([0, 1, 0, 0])
    adv, ret = segment_gae(rewards, values, mask, owner, 0.9, 0.8)
    rows = [0, 2, 3]
    cat = lambda x: torch.cat([x[r] for r in rows]).unsqueeze(0)  # noqa: E731
    flat_adv, flat_ret = gae_advantages(cat(rewards), cat(values), cat(mask), 0.9, 0.8)
    keep = cat(mask)[0].bool()
    assert torch.equal(cat(adv)[0][keep], flat_adv[0][keep])
    assert torch.equal(cat(ret)[0][keep], flat_ret[0][keep])
    # Last token of segment 0 bootstraps from V of segment 2's first policy token.
    expected = reference_gae(
        [rewards[r, c].item() for r in rows for c in range(5) if mask[r, c]],
        [values[r, c].item() for r in rows for c in range(5) if mask[r, c]], 0.9, 0.8)
    assert adv[0, 2].item() == pytest.approx(expected[2], abs=1e-5)
    delta = rewards[0, 2] + 0.9 * values[2, 0] - values[0, 2]
    assert adv[0, 2].item() == pytest.approx((delta + 0.72 * adv[2, 0]).item(), abs=1e-6)
    # The other trajectory does not see trajectory 0's values.
    single, _ = gae_advantages(rewards[1:2], values[1:2], mask[1:2], 0.9, 0.8)
    assert torch.equal(adv[1], single[0])


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = masked_whiten(x, mask)
    kept = w[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-6)  # unbiased std
    with pytest.raises(ConfigError, match="at least 2"):
        masked_whiten(x, torch.zeros_like(mask))


def test_bad_input_raises_config_error():
    ok = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="values of shape"):
        gae_advantages(ok, torch.zeros(2, 4), ok)
    with pytest.raises(ConfigError, match="gamma and lam"):
        gae_advantages(ok, ok, ok, gamma=1.5)
    with pytest.raises(ConfigError, match="segment_trajectory"):
        segment_gae(ok, ok, ok, torch.zeros(3, dtype=torch.long))
