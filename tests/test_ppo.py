"""PPO with a critic: reward placement, critic init, split invariance, exact resume, and one
end-to-end run on real SmolLM2 rollouts of MemAgent-v0."""

import copy
import math

import pytest
import torch

from memgym.batch import RolloutBatch
from memgym.engine import SamplingParams
from memgym.envs.sources import FiniteSource, QAItem, StreamItem, TaskInstance
from memgym.errors import ConfigError
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.trainers.logprobs import completion_logprobs, pack_segments
from memgym.trainers.ppo import PPOBatch, PPOConfig, PPOTrainer, step_end_columns
from memgym.trainers.value import value_model_from_policy
from memgym.trajectory import Segment, Step, Trajectory

from .tiny_models import tiny_llama


def _trajectory(seed: int, owner_offset: int = 0) -> Trajectory:
    """Three steps in two segments: steps 0-1 share a prefix (env tokens between them), step 2
    starts a new segment; rewards 0.5, 0, 1 + seed."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 5000, (40,), generator=g).tolist()
    steps = [Step(0, "o0", "a0", reward=0.5, prompt_ids=ids[:5], completion_ids=ids[5:8],
                  logprobs=[-1.0] * 3),
             Step(1, "o1", "a1", reward=0.0, prompt_ids=ids[:10], completion_ids=ids[10:12],
                  logprobs=[-1.0] * 2, segment_end="overwrite"),
             Step(2, "o2", "a2", reward=1.0 + seed, terminated=True, prompt_ids=ids[20:26],
                  completion_ids=ids[26:30 + seed % 3], logprobs=[-1.0] * (4 + seed % 3))]
    from memgym.segments import build_segments

    traj = Trajectory("memgym/MemAgent-v0", seed, {}, "test", steps, group=seed)
    traj.segments = build_segments(steps)
    return traj


def test_rewards_sit_on_the_last_policy_token_of_each_step():
    traj = _trajectory(0)
    first, second = traj.segments
    assert first.loss_mask == [1, 1, 1, 0, 0, 1, 1]  # step 0, 2 env tokens, step 1
    assert step_end_columns(first, traj.steps) == [2, 6]
    assert step_end_columns(second, traj.steps) == [3]
    batch = PPOBatch.from_trajectories([traj, _trajectory(1)])
    assert batch.rewards.shape == batch.mask.shape == (4, 7)
    assert batch.rewards[0].tolist() == [0, 0, 0.5, 0, 0, 0, 0]
    assert batch.rewards[1].tolist() == [0, 0, 0, 1.0, 0, 0, 0]
    assert batch.rewards[3].tolist() == [0, 0, 0, 0, 2.0, 0, 0]
    assert batch.mask[3].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert batch.segment_trajectory.tolist() == [0, 0, 1, 1]
    assert float(batch.rewards.sum()) == traj.episode_return + _trajectory(1).episode_return


def test_step_ends_from_the_mask_when_steps_carry_no_tokens():
    traj = _trajectory(0)
    loaded = [Step(s.index, s.observation, s.action, reward=s.reward) for s in traj.steps]
    for seg in traj.segments:
        assert step_end_columns(seg, loaded) == step_end_columns(seg, traj.steps)
    merged = Segment(0, 0, 2, [1], [5, 6, 7], [1, 1, 1], [0.0] * 3, "end")
    with pytest.raises(ConfigError, match="covers 2 steps but its loss mask has 1 runs"):
        step_end_columns(merged, loaded)


def test_bad_input():
    with pytest.raises(ConfigError, match="token segments"):
        PPOBatch.from_trajectories([Trajectory("x", 0, {}, "noop", [Step(0, "o", "a")])])
    with pytest.raises(ValueError, match="norm_length"):
        PPOConfig(loss_agg_mode="seq-mean-token-sum-norm")


@pytest.fixture(scope="module")
def small_smollm2(smollm2):
    """The real SmolLM2 cut to its first 2 layers, in float64 (cheap; exact comparisons)."""
    model = copy.deepcopy(smollm2[0])
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    return model.double()


def _copies(model):
    """(policy, critic) to train; the (tied) embeddings stay frozen to keep AdamW cheap."""
    policy = copy.deepcopy(model)
    with torch.no_grad():  # so that the KL terms are not 0
        policy.model.layers[0].mlp.down_proj.weight.mul_(1.05)
    critic = value_model_from_policy(policy)
    with torch.no_grad():  # a non-zero head, so that the critic's backbone gets gradients
        critic.score.weight.copy_(torch.linspace(-0.05, 0.05, critic.score.weight.numel()))
    for net in (policy, critic):
        net.model.embed_tokens.weight.requires_grad_(False)
    return policy, critic


def _grads(trainer):
    return [p.grad.clone() for p in (*trainer.params, *trainer.value_params)]


@pytest.fixture(scope="module")
def tiny_pair():
    """A tiny random float64 Llama over the ids of :func:`_trajectory` and its critic (with a
    non-zero head, so that values and value gradients are not 0)."""
    policy = tiny_llama(vocab_size=5000, seed=3)
    critic = value_model_from_policy(policy)
    with torch.no_grad():
        critic.score.weight.copy_(torch.linspace(-0.5, 0.5, critic.score.weight.numel()))
    return policy, critic


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to float32 rounding inside the model (Llama's RMSNorm runs in float32, so
    another packing of the same segments moves gradients by ~1e-7 of their norm)."""
    return float((a - b).norm()) <= rel * float(b.norm())


def _recorded_step(policy, critic, config, batch, ref=None):
    """(stats, policy gradients, critic gradients) of each update of one step; the optimizers
    only record, so the models stay as they were."""
    trainer = PPOTrainer(policy, 0, config, ref_model=ref, value_model=critic)
    seen: dict[str, list[torch.Tensor]] = {"policy": [], "critic": []}

    def recorder(name, params):
        return lambda: seen[name].append(torch.cat([p.grad.flatten() for p in params]))

    trainer.optimizer.step = recorder("policy", trainer.params)
    trainer.value_optimizer.step = recorder("critic", trainer.value_params)
    return trainer.step(batch), seen["policy"], seen["critic"]


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum", "token-mean"])
def test_mini_batches_keep_each_trajectorys_weight(tiny_pair, mode):
    # 4 trajectories of 2 segments in 4 shuffled mini-batches of 2 segments: a trajectory's
    # segments may land in different mini-batches. With whole-batch coefficients the
    # mini-batches' gradients (ratio 1: the optimizers do not move) sum to 4 × the one-update
    # gradient; coefficients per mini-batch counted a split trajectory once per mini-batch.
    batch = PPOBatch.from_trajectories([_trajectory(s) for s in range(4)], temperature=0.7)
    common = {"loss_agg_mode": mode, "weighting": "trajectory", "max_grad_norm": 1e9,
              "seed": 1}
    full = _recorded_step(*tiny_pair, PPOConfig(micro_batch=8, **common), batch)
    split = _recorded_step(*tiny_pair, PPOConfig(micro_batch=1, grad_accum=2, **common), batch)
    assert full[0]["updates"] == 1 and split[0]["updates"] == 4
    for whole, parts in ((full[1], split[1]), (full[2], split[2])):
        (whole,) = whole
        assert _close(sum(parts), 4 * whole)


def test_ppo_scores_old_new_and_reference_logprobs_at_the_batch_temperature(tiny_pair):
    # The reference is the policy itself: at one temperature everywhere, the KL to it is 0 and
    # the ratio 1 (nothing clipped in a 1e-4 clip range); any logprob at another temperature
    # breaks both.
    policy, critic = tiny_pair
    batch = PPOBatch.from_trajectories([_trajectory(s) for s in range(2)], temperature=0.7)
    config = PPOConfig(kl_coef=0.1, kl_loss_coef=0.1, kl_estimator="k3", clip_low=1e-4,
                       clip_high=1e-4, micro_batch=2)
    stats, _, _ = _recorded_step(policy, critic, config, batch, ref=policy)
    assert stats["rollout_kl"] == pytest.approx(0.0, abs=1e-12)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-12)
    assert stats["clip_frac"] == 0.0
    cold = PPOBatch.from_trajectories([_trajectory(s) for s in range(2)], temperature=0.3)
    assert _recorded_step(policy, critic, config, cold, ref=policy)[0]["entropy"] < stats[
        "entropy"]


def _with_sampler_logprobs(policy, trajectories, temperature, shift):
    """The trajectories with each segment's sampler logprobs set to the policy's at
    ``temperature`` minus ``shift`` (0 at env tokens)."""
    for traj in trajectories:
        for seg in traj.segments:
            with torch.no_grad():
                logp, _ = completion_logprobs(policy, pack_segments([seg], 0),
                                              temperature=temperature)
            seg.logprobs = [(lp - shift) * m for lp, m in zip(logp[0].tolist(), seg.loss_mask,
                                                               strict=True)]
    return trajectories


def test_ppo_sampler_behaviour_logprobs_and_truncated_is(tiny_pair):
    policy, critic = tiny_pair
    config = {"micro_batch": 4, "max_grad_norm": 1e9}
    exact = PPOBatch.from_trajectories(
        _with_sampler_logprobs(policy, [_trajectory(s) for s in range(2)], 0.7, 0.0), 0.7)
    _, (trainer_grad,), (trainer_value,) = _recorded_step(policy, critic, PPOConfig(**config),
                                                          exact)
    _, (sampler_grad,), _ = _recorded_step(
        policy, critic, PPOConfig(behaviour_logprobs="sampler", **config), exact)
    assert _close(sampler_grad, trainer_grad)
    # the engine's logprobs lower by log 2: every weight exp(log 2) = 2 is capped at 1.5, so the
    # policy gradient is 1.5 × the uncorrected one and the critic's is unchanged
    halved = PPOBatch.from_trajectories(
        _with_sampler_logprobs(policy, [_trajectory(s) for s in range(2)], 0.7, math.log(2)),
        0.7)
    stats, (tis_grad,), (tis_value,) = _recorded_step(
        policy, critic, PPOConfig(tis_cap=1.5, **config), halved)
    assert stats["tis_weight"] == pytest.approx(1.5)
    assert _close(tis_grad, 1.5 * trainer_grad) and not _close(tis_grad, trainer_grad, 0.1)
    assert _close(tis_value, trainer_value)
    with pytest.raises(ConfigError, match="sampler logprobs"):
        traj = _trajectory(0)
        traj.segments[0].logprobs = []
        _recorded_step(policy, critic, PPOConfig(tis_cap=2.0), PPOBatch.from_trajectories([traj]))


@pytest.mark.slow
def test_critic_starts_from_the_policy_with_zero_values(smollm2):
    policy = smollm2[0]
    critic = value_model_from_policy(policy)
    ours, theirs = critic.model.embed_tokens.weight, policy.model.embed_tokens.weight
    assert torch.equal(ours, theirs) and ours.data_ptr() != theirs.data_ptr()  # a copy
    out = critic(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert out.shape == (1, 3, 1) and not out.any()


@pytest.mark.slow
def test_micro_batch_times_grad_accum_equivalence(small_smollm2):
    trajectories = [_trajectory(s) for s in range(4)]  # 8 segments
    common = {"kl_coef": 0.05, "kl_loss_coef": 0.1, "kl_estimator": "k3",
              "loss_agg_mode": "seq-mean-token-mean", "weighting": "trajectory",
              "max_grad_norm": 1e9, "learning_rate": 1e-9, "value_learning_rate": 1e-9}
    results = []
    for micro, accum in ((8, 1), (1, 8)):
        policy, critic = _copies(small_smollm2)
        trainer = PPOTrainer(policy, 0, PPOConfig(micro_batch=micro, grad_accum=accum, **common),
                             ref_model=small_smollm2, value_model=critic)
        results.append((trainer.step(RolloutBatch(trajectories)), _grads(trainer)))
    (one_by_eight, g1), (eight_by_one, g8) = results
    assert one_by_eight["updates"] == eight_by_one["updates"] == 1
    assert one_by_eight["kl"] > 0 and one_by_eight["vf_loss"] > 0
    for name in ("loss", "pg_loss", "vf_loss", "kl", "entropy", "grad_norm", "value_grad_norm",
                 "adv_mean", "return_mean"):
        assert eight_by_one[name] == pytest.approx(one_by_eight[name], abs=1e-5, rel=1e-5)
    for a, b in zip(g1, g8, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_resume_from_state_dict_is_exact(small_smollm2):
    config = PPOConfig(micro_batch=2, grad_accum=1, ppo_epochs=2, learning_rate=1e-4,
                       value_learning_rate=1e-3, seed=3)
    batches = [RolloutBatch([_trajectory(0), _trajectory(1)]),
               RolloutBatch([_trajectory(2), _trajectory(3)])]
    straight, straight_critic = _copies(small_smollm2)
    trainer = PPOTrainer(straight, 0, config, value_model=straight_critic)
    for b in batches:
        trainer.step(b)
    resumed, critic = _copies(small_smollm2)
    first = PPOTrainer(resumed, 0, config, value_model=critic)
    assert first.step(batches[0])["updates"] == 4  # 2 epochs × 2 mini-batches
    state = copy.deepcopy(first.state_dict())
    second = PPOTrainer(resumed, 0, config, value_model=_copies(small_smollm2)[1])
    second.load_state_dict(state)
    second.step(batches[1])
    assert second.global_step == trainer.global_step == 2
    for a, b in zip((*straight.parameters(), *trainer.value_model.parameters()),
                    (*resumed.parameters(), *second.value_model.parameters()), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="lacks"):
        second.load_state_dict({"global_step": 1})


TINY = [TaskInstance(f"tiny{i}", (StreamItem("c0", f"{city} is a city in {country}."),
                                  StreamItem("c1", "The weather was mild that year."),
                                  StreamItem("c2", f"{city} hosts a {event} every spring.")),
                     (QAItem(f"Which city hosts a {event}?", (city,), ("c2",)),))
        for i, (city, country, event) in enumerate([("Lyon", "France", "light festival"),
                                                   ("Porto", "Portugal", "wine fair")])]


@pytest.mark.slow
def test_ppo_end_to_end_on_memagent_rollouts(smollm2, engine):
    # Rollouts by the real SmolLM2; PPO trains its first 2 layers (float32) on them, which keeps
    # the test within a few minutes on a shared 2-core CPU (old logprobs are recomputed by the
    # trained policy, so the rollouts' own logprobs are not needed).
    model, tokenizer = smollm2
    policy = LLMPolicy(engine, SamplingParams(max_new_tokens=8, temperature=1.0, seed=0))
    trajectories = run_episodes("memgym/MemAgent-v0", {"source": FiniteSource(TINY),
                                                       "max_memory_tokens": 16},
                                policy, seeds=[0, 1], progress=False)
    assert all(len(t.segments) == 4 for t in trajectories)  # 3 overwrites + the answer
    policy_model = copy.deepcopy(model)
    policy_model.model.layers = policy_model.model.layers[:2]
    policy_model.config.num_hidden_layers = 2
    critic = value_model_from_policy(policy_model)
    for net in (policy_model, critic):  # the embeddings stay frozen: AdamW stays small
        net.model.embed_tokens.weight.requires_grad_(False)
    config = PPOConfig(lam=1.0, micro_batch=4, learning_rate=1e-5, value_learning_rate=1e-3,
                       cliprange_value=0.0)
    trainer = PPOTrainer(policy_model, tokenizer.pad_token_id, config, value_model=critic)
    before = policy_model.model.layers[1].mlp.up_proj.weight.clone()
    history = [trainer.step(RolloutBatch(trajectories)) for _ in range(3)]
    for stats in history:
        assert stats["segments"] == 8 and stats["updates"] == 1
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    # γ = λ = 1: the targets are the Monte-Carlo returns, fixed, so the critic's error falls.
    assert history[0]["value_mean"] == 0.0  # zero head
    assert history[-1]["vf_loss"] < history[0]["vf_loss"]
    assert history[0]["return_mean"] == pytest.approx(history[-1]["return_mean"])
    assert not torch.equal(before, policy_model.model.layers[1].mlp.up_proj.weight)
