"""The LLM path with the real SmolLM2-135M-Instruct."""

import copy

import pytest
import torch

from memgym import load_trajectories, write_trajectories
from memgym.engine import SamplingParams
from memgym.envs.answerers import LLMAnswerer, Question
from memgym.memory import MemoryBank
from memgym.ops import Add
from memgym.replay import replay
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.trainers import GRPOConfig, GRPOTrainer, SegmentBatch
from memgym.trainers.grpo import completion_logprobs, pack_segments

from .conftest import ENV_ID

pytestmark = pytest.mark.slow
PROMPTS = [[{"role": "user", "content": "Name a fruit."}],
           [{"role": "user", "content": "Say hello in French, then stop."}]]


def test_greedy_is_deterministic_and_logprobs_match_a_forward_pass(engine):
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    a, b = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    assert a == b and all(c.completion_ids for c in a)
    assert a[0].prompt_ids == tuple(engine.prompt_ids(PROMPTS[0]))
    seg = type("S", (), {"prompt_ids": list(a[1].prompt_ids),
                         "completion_ids": list(a[1].completion_ids),
                         "loss_mask": [1] * len(a[1].completion_ids),
                         "logprobs": list(a[1].logprobs)})
    with torch.no_grad():
        packed = pack_segments([seg], engine.tokenizer.pad_token_id)
        recomputed = completion_logprobs(engine.model, packed)
    assert torch.allclose(recomputed[0], torch.tensor(a[1].logprobs), atol=1e-3)


def test_sampled_logprobs_are_the_tempered_distributions_and_need_no_logits_kept(engine,
                                                                                  monkeypatch):
    """At T = 0.7 each sampled token's logprob is log_softmax(logits / T) of a forward pass
    (mutation: at T = 1 they differ); rows that stop early keep their own lengths; generate is
    never asked to keep every step's logits (48 x 128 x 49,152 floats in the quickstart)."""
    generate = type(engine.model).generate

    def no_logits(model, *args, **kwargs):
        assert not kwargs.get("output_logits") and not kwargs.get("output_scores")
        return generate(model, *args, **kwargs)

    monkeypatch.setattr(type(engine.model), "generate", no_logits)
    params = SamplingParams(max_new_tokens=12, temperature=0.7, seed=7)
    out = engine.generate(PROMPTS, params)
    for completion in out:
        seg = type("S", (), {"prompt_ids": list(completion.prompt_ids),
                             "completion_ids": list(completion.completion_ids),
                             "loss_mask": [1] * len(completion.completion_ids),
                             "logprobs": list(completion.logprobs)})
        with torch.no_grad():
            packed = pack_segments([seg], engine.tokenizer.pad_token_id)
            tempered = completion_logprobs(engine.model, packed, temperature=0.7)[0][0]
            untempered = completion_logprobs(engine.model, packed)[0][0]
        logprobs = torch.tensor(completion.logprobs)
        assert len(logprobs) == len(completion.completion_ids)
        assert torch.allclose(tempered[:len(logprobs)], logprobs, atol=1e-3)
        assert not torch.allclose(untempered[:len(logprobs)], logprobs, atol=1e-3)


def test_batch_with_a_shared_prefix_decodes_as_one_prompt_at_a_time(engine):
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    prompts = [*PROMPTS, [{"role": "user", "content": "Count from one to five, in words."}]]
    batch = engine.generate(prompts, params)
    ids = [c.prompt_ids for c in batch]
    assert len({len(x) for x in ids}) == 3 and ids[0][:8] == ids[1][:8] == ids[2][:8]
    for prompt, together in zip(prompts, batch, strict=True):
        (alone,) = engine.generate([prompt], params)
        assert alone.completion_ids == together.completion_ids
        assert torch.allclose(torch.tensor(alone.logprobs), torch.tensor(together.logprobs),
                              atol=1e-3)


def test_seeded_sampling_is_reproducible(engine):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=123)
    assert engine.generate(PROMPTS, params) == engine.generate(PROMPTS, params)


def test_llm_rollout_segments_and_replay(engine, tmp_path):
    policy = LLMPolicy(engine, SamplingParams(max_new_tokens=24, temperature=1.0, seed=0))
    trajs = run_episodes(ENV_ID, {"window": 3}, policy, [5, 5], num_envs=2, progress=False)
    for t in trajs:
        assert len(t.segments) == 3  # each memory-manager step rebuilds its prompt
        assert [s.end_reason for s in t.segments] == ["overwrite", "overwrite", "end"]
        assert all(len(s.completion_ids) == len(s.logprobs) == sum(s.loss_mask) > 0
                   for s in t.segments)
    path = write_trajectories(trajs, tmp_path / "llm.parquet")
    assert replay(load_trajectories(path)).ok


def test_trainer_step_changes_parameters_with_finite_loss(smollm2):
    model, tokenizer = smollm2
    model = copy.deepcopy(model)
    from memgym.rollouts.hf import HFEngine

    policy = LLMPolicy(HFEngine(model, tokenizer), SamplingParams(max_new_tokens=16, seed=1))
    trajs = run_episodes(ENV_ID, {"window": 2}, policy, [1, 1, 1, 1], groups=[0, 0, 0, 0],
                         num_envs=4, progress=False)
    trajs[0].steps[0].reward += 1.0  # guarantee a non-zero advantage in the group
    before = [p.detach().clone() for p in model.parameters()]
    trainer = GRPOTrainer(model, tokenizer.pad_token_id, GRPOConfig(learning_rate=1e-4,
                                                                     micro_batch=4))
    stats = trainer.step(SegmentBatch.from_trajectories(trajs))
    assert torch.isfinite(torch.tensor(stats["loss"])) and stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_llm_answerer_answers_from_memory(engine):
    bank = MemoryBank()
    bank.apply(Add("Caroline's dog is named Max."), 0)
    (out,) = LLMAnswerer(engine, max_new_tokens=24).answer(
        [Question("What is the name of Caroline's dog?", ("Max",))], bank)
    assert isinstance(out.prediction, str) and 0.0 <= out.score <= 1.0
    assert LLMAnswerer.extract("I think.\n**Answer:** Max the dog") == "Max the dog"


def test_lora_trains_only_adapters(smollm2):
    from memgym.config import LoraConfig
    from memgym.rollouts.hf import HFEngine
    from memgym.train import with_lora

    model, tokenizer = smollm2
    model = with_lora(copy.deepcopy(model), LoraConfig(r=4))
    policy = LLMPolicy(HFEngine(model, tokenizer), SamplingParams(max_new_tokens=12, seed=2))
    trajs = run_episodes(ENV_ID, {"window": 1}, policy, [3, 3], groups=[0, 0], num_envs=2,
                         progress=False)
    trajs[0].steps[0].reward += 1.0
    named = {n: p.detach().clone() for n, p in model.named_parameters()}
    GRPOTrainer(model, tokenizer.pad_token_id, GRPOConfig(learning_rate=1e-3)).step(
        SegmentBatch.from_trajectories(trajs))
    changed = {n for n, p in model.named_parameters() if not torch.equal(named[n], p)}
    assert changed and all("lora_" in n for n in changed)


def test_lora_layers_to_transform_adapts_only_those_layers_and_grads_stop_below(smollm2):
    """``lora.layers_to_transform`` puts adapters on the named decoder layers only; with the
    rest frozen (no gradient checkpointing), autograd records nothing below them, so the
    backward pass stops at layer 28."""
    from memgym.config import LoraConfig
    from memgym.train import with_lora

    model, tokenizer = smollm2
    model = with_lora(copy.deepcopy(model), LoraConfig(r=4, layers_to_transform=[28, 29]))
    adapted = {int(n.split(".layers.")[1].split(".")[0])
               for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {28, 29}
    ids = torch.tensor([tokenizer("The memory bank holds")["input_ids"]])
    out = model(input_ids=ids, labels=ids, output_hidden_states=True)
    # hidden_states[k] is layer k's input: layer 28's input is a constant, its output is not
    assert [h.requires_grad for h in out.hidden_states[27:30]] == [False, False, True]
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_lora_layers_to_transform_out_of_range_is_a_config_error(smollm2):
    from memgym.config import LoraConfig
    from memgym.errors import ConfigError
    from memgym.train import with_lora

    with pytest.raises(ConfigError, match=r"\[0, 30\), got \[29, 30\]"):
        with_lora(copy.deepcopy(smollm2[0]), LoraConfig(layers_to_transform=[29, 30]))
