"""Logprobs at the sampling temperature, behaviour logprobs (trainer / sampler, truncated IS),
several updates per batch, and the inputs that must never give a NaN update; on a tiny random
float64 Llama (fast, exact)."""

import itertools
import math

import pytest
import torch

from memgym.batch import training_temperature
from memgym.errors import ConfigError
from memgym.segments import build_segments
from memgym.trainers import GRPOConfig, GRPOTrainer, SegmentBatch
from memgym.trainers.logprobs import completion_logprobs, pack_segments, truncated_is_weights
from memgym.trainers.ppo import PPOBatch
from memgym.trajectory import Segment, Step, Trajectory

from .tiny_models import tiny_llama

PROMPT, VOCAB = [1, 2, 3], 12


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(VOCAB)


def _sample(model, n: int, length: int, temperature: float, seed: int) -> list[list[int]]:
    """n completions of ``length`` tokens after PROMPT, sampled from softmax(logits / T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([PROMPT] * n)
    with torch.no_grad():
        for _ in range(length):
            probs = torch.softmax(model(input_ids=ids).logits[:, -1] / temperature, -1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=g)], 1)
    return ids[:, len(PROMPT):].tolist()


def _hand_logprobs(model, completions: list[list[int]], temperature: float) -> torch.Tensor:
    """``(B, C)`` log softmax(logits / T) of equal-length completions after PROMPT, by hand."""
    ids = torch.tensor([PROMPT + c for c in completions])
    logits = model(input_ids=ids).logits[:, len(PROMPT) - 1:-1] / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids[:, len(PROMPT):, None]).squeeze(-1)


def _segments(completions, logprobs=None) -> list[Segment]:
    return [Segment(0, 0, 1, list(PROMPT), list(c), [1] * len(c),
                    [0.0] * len(c) if logprobs is None else list(logprobs[i]), "end")
            for i, c in enumerate(completions)]


def _step(model, batch, config, ref=None):
    """(stats, flat gradient of each update) of one trainer step that leaves ``model`` as it
    was (the optimizer's step only records the gradient)."""
    trainer = GRPOTrainer(model, 0, config, ref)
    seen = []
    trainer.optimizer.step = lambda: seen.append(
        torch.cat([p.grad.flatten() for p in trainer.params]))
    return trainer.step(batch), seen


def test_training_temperature_and_its_checks():
    assert training_temperature(0.7) == 0.7 and training_temperature(0) == 1.0  # greedy
    for bad in (-0.5, math.inf, math.nan):
        with pytest.raises(ConfigError, match="temperature"):
            training_temperature(bad)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ConfigError, match="temperature"):
            SegmentBatch(_segments([[4]]), torch.ones(1), temperature=bad)


def test_completion_logprobs_divide_the_logits_by_the_temperature(tiny):
    completions = [[4, 5, 6], [7, 8, 9]]
    packed = pack_segments(_segments(completions), 0)
    with torch.no_grad():
        for temperature in (0.7, 1.0, 1.3):
            logp, entropy = completion_logprobs(tiny, packed, entropy=True,
                                                temperature=temperature)
            torch.testing.assert_close(logp, _hand_logprobs(tiny, completions, temperature))
            logits = tiny(input_ids=packed["input_ids"]).logits[:, 2:-1] / temperature
            probs = torch.softmax(logits, -1)
            torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1))
        assert not torch.allclose(completion_logprobs(tiny, packed, temperature=0.7)[0],
                                  completion_logprobs(tiny, packed)[0], atol=1e-2)
        # a micro-batch of empty completions is empty, not the whole sequence
        empty = pack_segments([Segment(0, 0, 1, PROMPT, [], [], [], "end")], 0)
        assert completion_logprobs(tiny, empty, temperature=0.7)[0].shape == (1, 0)


def test_exact_expected_policy_gradient_is_zero_at_the_sampling_temperature(tiny):
    # Every 2-token completion y, advantage π_T(y), seq-mean-token-sum: the loss gradient is
    # -(1/S) Σ_y π_T(y) ∇log π_T(y) = -(1/S) ∇ Σ_y π_T(y) = 0 exactly (score-function identity);
    # scoring at T = 1 what was sampled at 0.7 gives Σ_y π_0.7(y) ∇log π_1(y) ≠ 0.
    completions = [list(c) for c in itertools.product(range(VOCAB), repeat=2)]
    segments = _segments(completions)
    with torch.no_grad():
        prob = _hand_logprobs(tiny, completions, 0.7).sum(-1).exp()
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-12)
    config = GRPOConfig(loss_agg_mode="seq-mean-token-sum", weighting="segment",
                        micro_batch=len(segments), max_grad_norm=1e9)
    _, (right,) = _step(tiny, SegmentBatch(segments, prob, temperature=0.7), config)
    _, (wrong,) = _step(tiny, SegmentBatch(segments, prob, temperature=1.0), config)
    # what is left at T = 0.7 is rounding (Llama's RMSNorm computes in float32): ~1e-7 of T = 1's
    assert float(wrong.norm()) > 0.1
    assert float(right.norm()) < 1e-5 * float(wrong.norm())


def test_sampled_policy_gradient_with_a_constant_advantage_is_zero_at_t07(tiny):
    # 20000 completions sampled at T = 0.7, constant advantage 1: E[∇ loss] = -E[∇log π_T] = 0.
    # The gradient is averaged over 20 disjoint chunks (one trainer step each); the statistic
    # ‖mean‖² / Σ_j se_j² (se: standard error of the chunk mean) is ~1 when the expectation is
    # 0 (0.2-3 over seeds 0-5) and ~1000 when the tokens are scored at the wrong temperature.
    segments = _segments(_sample(tiny, 20000, 3, 0.7, seed=0))
    config = GRPOConfig(micro_batch=1000, max_grad_norm=1e9)

    def statistic(temperature: float) -> float:
        chunks = [_step(tiny, SegmentBatch(segments[k::20], torch.ones(1000),
                                           temperature=temperature), config)[1][0]
                  for k in range(20)]
        grads = torch.stack(chunks)
        mean, se2 = grads.mean(0), grads.var(0) / len(grads)
        return float(mean.square().sum() / se2.sum())

    assert statistic(0.7) < 10
    assert statistic(1.0) > 100


def _varied(model, n=8, seed=1):
    """n completions of 1-4 tokens sampled at 0.7 (right-padding inside micro-batches)."""
    return [c[:1 + i % 4] for i, c in enumerate(_sample(model, n, 4, 0.7, seed))]


def test_several_updates_keep_the_weights_and_score_old_logprobs_on_the_update_path(tiny):
    # 4 updates of 2 segments; trajectories 0 and 1 straddle updates. The optimizer never
    # moves, so the old logprobs (computed before the first update) must equal every update's
    # own: ρ = 1, nothing clipped even with a 1e-9 clip range, and the updates' gradients sum to
    # 4 × the one-update gradient (whole-batch coefficients).
    segments = _segments(_varied(tiny))
    owner = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    batch = SegmentBatch(segments, torch.linspace(-1, 1, 8, dtype=torch.float64), owner,
                         temperature=0.7)
    common = {"loss_agg_mode": "seq-mean-token-mean", "weighting": "trajectory",
              "max_grad_norm": 1e9, "clip_low": 1e-9, "clip_high": 1e-9}
    one, (full,) = _step(tiny, batch, GRPOConfig(micro_batch=8, **common))
    four, parts = _step(tiny, batch, GRPOConfig(micro_batch=1, grad_accum=2, **common))
    assert four["updates"] == 4 and one["updates"] == 1
    assert four["clip_frac"] == 0.0
    assert four["loss"] == pytest.approx(one["loss"], rel=1e-6)
    torch.testing.assert_close(sum(parts), 4 * full, rtol=1e-6, atol=1e-9)


def test_sampler_behaviour_logprobs_and_truncated_importance_sampling(tiny):
    completions = _sample(tiny, 6, 3, 0.7, seed=2)
    with torch.no_grad():
        trainer_logp = _hand_logprobs(tiny, completions, 0.7)
    delta = torch.linspace(-0.5, 0.5, trainer_logp.numel(), dtype=torch.float64).view_as(
        trainer_logp)
    sampler_logp = trainer_logp - delta  # the engine's logprobs differ by delta
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0, 0.3, -2.0], dtype=torch.float64)
    batch = SegmentBatch(_segments(completions, sampler_logp.tolist()), adv, temperature=0.7)
    n = trainer_logp.numel()

    def hand(loss_of_logp):
        tiny.zero_grad(set_to_none=True)
        loss_of_logp(_hand_logprobs(tiny, completions, 0.7)).backward()
        grad = torch.cat([p.grad.flatten() for p in tiny.parameters()])
        tiny.zero_grad(set_to_none=True)
        return grad

    wide = {"clip_low": 0.99, "clip_high": 100.0, "max_grad_norm": 1e9}  # nothing clipped
    a = adv[:, None]
    # sampler: ρ = exp(logp - logp_sampler) = exp(delta) in value; loss -Σ ρ A / n
    _, (got,) = _step(tiny, batch, GRPOConfig(behaviour_logprobs="sampler", **wide))
    torch.testing.assert_close(got, hand(lambda lp: -(torch.exp(lp - sampler_logp) * a).sum()
                                         / n))
    # trainer + TIS: ρ = 1, each token weighted by min(exp(delta), 1.2)
    stats, (got,) = _step(tiny, batch, GRPOConfig(tis_cap=1.2, **wide))
    weight = torch.exp(delta).clamp(max=1.2)
    torch.testing.assert_close(got, hand(lambda lp: -(weight * torch.exp(lp - lp.detach()) * a)
                                         .sum() / n))
    assert stats["tis_weight"] == pytest.approx(float(weight.mean()))
    torch.testing.assert_close(truncated_is_weights(trainer_logp, sampler_logp, 1.2), weight)
    # the sampler's logprobs equal to the trainer's: the same gradient as the trainer's path
    exact = SegmentBatch(_segments(completions, trainer_logp.tolist()), adv, temperature=0.7)
    _, (sampler,) = _step(tiny, exact, GRPOConfig(behaviour_logprobs="sampler"))
    _, (trainer,) = _step(tiny, exact, GRPOConfig())
    torch.testing.assert_close(sampler, trainer)
    with pytest.raises(ConfigError, match="sampler logprobs"):
        _step(tiny, SegmentBatch([Segment(0, 0, 1, PROMPT, [4, 5], [1, 1], [], "end")],
                                 torch.ones(1)), GRPOConfig(behaviour_logprobs="sampler"))
    with pytest.raises(ValueError, match="tis_cap"):
        GRPOConfig(behaviour_logprobs="sampler", tis_cap=2.0)


def test_zero_token_segments_add_nothing_and_count_as_sequences(tiny):
    segments = _segments(_varied(tiny, 3))
    owner = torch.tensor([0, 0, 1])
    empty = Segment(1, 1, 2, [*PROMPT, 4], [], [], [], "end")  # no completion at all
    env_only = Segment(2, 2, 3, PROMPT, [5, 6], [0, 0], [0.0, 0.0], "end")  # env tokens only
    extra = SegmentBatch([*segments, empty, env_only], torch.tensor([1.0, 1.0, -2.0, 1.0, -2.0]),
                         torch.tensor([0, 0, 1, 0, 1]), temperature=0.7)
    plain = SegmentBatch(segments, torch.tensor([1.0, 1.0, -2.0]), owner, temperature=0.7)
    for mode, weighting in (("token-mean", "token"), ("seq-mean-token-mean", "trajectory"),
                            ("seq-mean-token-sum", "trajectory")):
        config = GRPOConfig(loss_agg_mode=mode, weighting=weighting, micro_batch=1,
                            max_grad_norm=1e9)
        stats, (with_extra,) = _step(tiny, extra, config)  # a micro-batch of one empty segment
        _, (without,) = _step(tiny, plain, config)
        assert math.isfinite(stats["loss"])
        torch.testing.assert_close(with_extra, without)
    # a trajectory of zero-token segments still counts in the seq-mean (as TRL's empty
    # completion does): the two others now weigh 1/3 each instead of 1/2
    lonely = SegmentBatch([*segments, env_only], torch.tensor([1.0, 1.0, -2.0, 0.0]),
                          torch.tensor([0, 0, 1, 2]), temperature=0.7)
    config = GRPOConfig(loss_agg_mode="seq-mean-token-mean", micro_batch=1, max_grad_norm=1e9)
    _, (three,) = _step(tiny, lonely, config)
    two = _step(tiny, plain, config)[1][0]
    # (the backward passes float32 gradients through Llama's RMSNorm: relative 1e-5)
    assert float((three - two * 2 / 3).norm()) < 1e-5 * float(two.norm())
    assert float((three - two).norm()) > 0.2 * float(two.norm())
    with pytest.raises(ConfigError, match="no loss tokens"):
        _step(tiny, SegmentBatch([empty, env_only], torch.ones(2)), config)


def _trajectory(reward: float, seed: int = 0, rewards: tuple = ()) -> Trajectory:
    steps = [Step(0, "o", "a", reward=reward, prompt_ids=[1, 2], completion_ids=[4, 5],
                  logprobs=[-1.0, -1.0], reward_terms={"r": reward}, terminated=True)]
    traj = Trajectory("x", seed, {}, "p", steps)
    traj.segments = build_segments(steps)
    return traj


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rewards_are_config_errors(bad):
    trajs = [_trajectory(bad), _trajectory(1.0)]
    with pytest.raises(ConfigError, match="finite"):
        SegmentBatch.from_trajectories(trajs)
    with pytest.raises(ConfigError, match="finite"):
        PPOBatch.from_trajectories(trajs)
    with pytest.raises(ConfigError, match="finite"):
        SegmentBatch(_segments([[4]]), torch.tensor([bad]))


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp"])
def test_adv_eps_zero_with_zero_variance_groups_gives_zero_not_nan(tiny, estimator):
    # seed 0: equal returns (zero variance); seed 1: 0 and 2
    trajs = [_trajectory(1.0, 0), _trajectory(1.0, 0), _trajectory(0.0, 1), _trajectory(2.0, 1)]
    config = GRPOConfig(estimator=estimator, adv_eps=0.0, max_grad_norm=1e9)
    batch = SegmentBatch.from_trajectories(trajs, config, temperature=0.7)
    assert batch.advantages[:2].tolist() == [0.0, 0.0]
    assert batch.advantages[2] < 0 < batch.advantages[3]
    stats, (grad,) = _step(tiny, batch, config)
    assert math.isfinite(stats["loss"]) and bool(torch.isfinite(grad).all())
    flat = SegmentBatch.from_trajectories(trajs[:2], config)  # every group zero-variance
    assert flat.advantages.tolist() == [0.0, 0.0]
    _, (zero,) = _step(tiny, flat, config)
    assert not zero.any()
