"""The HF engine's two paths: the CPU fast path where it is valid, plain ``generate`` elsewhere."""

import pytest
import torch
from transformers import (
    Gemma2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
)

import memgym.rollouts.hf as hf
from memgym.config import ModelConfig
from memgym.engine import SamplingParams
from memgym.errors import EngineError
from memgym.rollouts.hf import HFEngine, fast_path_supported, load_tokenizer

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
PROMPTS = [[{"role": "user", "content": "Name a fruit."}],
           [{"role": "user", "content": "Say hello in French, then stop, and say nothing else."}],
           [{"role": "user", "content": "Count from one to five, in words, on one line."}]]
SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2's tokenizer (it has the chat template the engine needs)."""
    return load_tokenizer("smollm2")


def tiny(model_cls, config_cls, tokenizer, **kwargs):
    """A random-initialised float32 model with SmolLM2's vocabulary, in train mode. A spread
    LM head (std 1) makes greedy choices clear-cut, not ties within rounding."""
    config = config_cls(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        **SHAPE, **kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = model_cls(config)
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, 1.0)
    return model.train()


def plain_generate(engine, prompts, max_new_tokens):
    """``model.generate`` on the prompts' engine ids, left-padded by the tokenizer."""
    ids = [engine.prompt_ids(p) for p in prompts]
    batch = engine.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    was_training = engine.model.training
    with torch.no_grad():
        out = engine.model.eval().generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=engine.tokenizer.pad_token_id,
                                           eos_token_id=engine.tokenizer.eos_token_id)
    engine.model.train(was_training)
    eos = engine.tokenizer.eos_token_id
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    return [tuple(r[:r.index(eos) + 1] if eos in r else r) for r in rows]


def test_fast_path_rule_reads_the_public_config():
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, **SHAPE))
    assert fast_path_supported(llama) is None
    assert "dtype" in fast_path_supported(llama.to(torch.bfloat16))
    sliding = MistralForCausalLM(MistralConfig(vocab_size=64, sliding_window=16, **SHAPE))
    assert "sliding" in fast_path_supported(sliding)
    for config, reason in [
            (Qwen2Config(vocab_size=64, **SHAPE), None),  # use_sliding_window=False by default
            (Qwen2Config(vocab_size=64, use_sliding_window=True, sliding_window=16,
                         max_window_layers=0, **SHAPE), "sliding"),
            (Gemma2Config(vocab_size=64, head_dim=8, **SHAPE), "sliding"),
            (LlamaConfig(vocab_size=64, attn_logit_softcapping=30.0, **SHAPE), "softcapping")]:
        model = type("M", (), {"config": config, "device": torch.device("cpu"),
                                "dtype": torch.float32})()  # only what the rule reads
        found = fast_path_supported(model)
        assert found is None if reason is None else reason in found, (config.model_type, found)


def test_sliding_window_falls_back_to_plain_generate_with_its_tokens(tokenizer, monkeypatch):
    model = tiny(MistralForCausalLM, MistralConfig, tokenizer, sliding_window=4)
    engine = HFEngine(model, tokenizer, batch_size=8)
    out = engine.generate(PROMPTS, GREEDY)
    assert engine.last_path == "generate" and "sliding" in engine.fallback_reason()
    assert [c.completion_ids for c in out] == plain_generate(engine, PROMPTS, 8)
    # Why: forced onto the fast path, its packed full-attention prefill does not fit the
    # model's sliding-window cache.
    monkeypatch.setattr(hf, "fast_path_supported", lambda model: None)
    with pytest.raises(EngineError):
        engine.generate(PROMPTS, GREEDY)
    assert engine.last_path == "fast"


def test_fast_path_off_gives_the_fast_paths_tokens_and_logprobs_on_a_tiny_llama(tokenizer):
    model = tiny(LlamaForCausalLM, LlamaConfig, tokenizer)
    fast, plain = HFEngine(model, tokenizer), HFEngine(model, tokenizer, fast_path=False)
    a, b = fast.generate(PROMPTS, GREEDY), plain.generate(PROMPTS, GREEDY)
    assert (fast.last_path, plain.last_path) == ("fast", "generate")
    assert plain.fallback_reason() == "fast_path=False"
    assert model.training  # the engine restores the mode it found
    assert_same(a, b)
    assert [c.completion_ids for c in b] == plain_generate(plain, PROMPTS, 8)


def test_bf16_on_cpu_runs_through_the_fallback(tokenizer):
    model = tiny(LlamaForCausalLM, LlamaConfig, tokenizer).to(torch.bfloat16)
    engine = HFEngine(model, tokenizer)
    out = engine.generate(PROMPTS, GREEDY)
    assert engine.last_path == "generate" and "bfloat16" in engine.fallback_reason()
    assert [c.completion_ids for c in out] == plain_generate(engine, PROMPTS, 8)
    assert all(isinstance(x, float) for c in out for x in c.logprobs)


def assert_same(a, b, atol=1e-4):
    assert [c.completion_ids for c in a] == [c.completion_ids for c in b]
    assert all(c.completion_ids for c in a)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=atol)


@pytest.mark.slow
def test_smollm2_fast_path_off_gives_the_same_tokens_and_logprobs(smollm2):
    model, tokenizer = smollm2
    fast, plain = HFEngine(model, tokenizer), HFEngine(model, tokenizer, fast_path=False)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    a, b = fast.generate(PROMPTS, params), plain.generate(PROMPTS, params)
    assert (fast.last_path, plain.last_path) == ("fast", "generate")
    assert_same(a, b)


@pytest.mark.slow
def test_from_pretrained_takes_fast_path_from_the_model_config():
    engine = HFEngine.from_pretrained(ModelConfig(name_or_path="smollm2", fast_path=False),
                                      batch_size=4)
    assert not engine.fast_path and engine.name == "hf:smollm2" and engine.batch_size == 4
    assert engine.model.device.type == "cpu" and engine.fallback_reason() == "fast_path=False"


def test_model_source_takes_model_and_adapter_directories_and_names_both(tmp_path):
    with pytest.raises(EngineError, match=r"config\.json .*adapter_config\.json"):
        hf.model_source(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    assert hf.model_source(str(tmp_path)) == str(tmp_path)
