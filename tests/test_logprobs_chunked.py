"""Chunked completion logprobs (LM head + log-softmax over chunks of tokens, checkpointed) equal
the full-vocabulary computation in value, entropy and gradient; on tiny random models."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from memgym.errors import ConfigError
from memgym.trainers import logprobs
from memgym.trainers.logprobs import completion_logprobs, pack_segments
from memgym.trajectory import Segment

from .tiny_models import tiny_llama

VOCAB = 12
# prompts and completions of different lengths: left- and right-padding in one batch
SHAPES = [([1, 2, 3], [4, 5, 6, 7, 8]), ([2], [9, 4]), ([3, 3, 1, 2], [5, 6, 7]), ([1, 1], [])]


def _packed() -> dict:
    segments = [Segment(0, 0, 1, p, c, [1] * len(c), [0.0] * len(c), "end") for p, c in SHAPES]
    return pack_segments(segments, 0)


def _reference(model, packed, entropy=False, temperature=1.0):
    """The full-vocabulary computation (memgym's before chunking), written out here."""
    c = packed["completion_len"]
    logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                   position_ids=packed["position_ids"], logits_to_keep=c + 1).logits[:, :-1]
    targets = packed["input_ids"][:, packed["input_ids"].shape[1] - c:]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        logits = logits / temperature
    all_logp = torch.log_softmax(logits, -1)
    logp = all_logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, -(all_logp.exp() * all_logp).sum(-1).detach()


def _grads(model, logp, mask) -> torch.Tensor:
    """Flat gradient of a weighted sum of the masked logprobs."""
    weights = torch.arange(1, mask.numel() + 1, dtype=logp.dtype).view_as(mask) * mask
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad((logp * weights).sum(), params)])


def _compare(model, temperature, chunk_tokens, atol):
    """(value, entropy, gradient) max-abs differences, chunked vs reference, on loss tokens,
    each relative to the reference's largest magnitude (float32 rounds at ~1e-7 of it)."""
    packed = _packed()
    mask = packed["loss_mask"].to(torch.float64 if atol < 1e-9 else torch.float32)
    ref, ref_ent = _reference(model, packed, True, temperature)
    got, ent = completion_logprobs(model, packed, entropy=True, temperature=temperature,
                                   chunk_tokens=chunk_tokens)
    assert got.dtype == ref.dtype and got.shape == ref.shape and ent.shape == ref.shape
    on = mask.bool()
    ref_grad = _grads(model, ref, mask.to(ref.dtype))
    return (((got - ref)[on].abs().max() / ref[on].abs().max()).item(),
            ((ent - ref_ent)[on].abs().max() / ref_ent[on].abs().max()).item(),
            ((_grads(model, got, mask.to(got.dtype)) - ref_grad).abs().max()
             / ref_grad.abs().max()).item())


def tiny_qwen2(dtype=torch.float64, tied=True) -> Qwen2ForCausalLM:
    """A 2-layer Qwen2 (tied embeddings) with a spread-out next-token distribution."""
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64, tie_word_embeddings=tied)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = Qwen2ForCausalLM(config).to(dtype)
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, 1.0)
    return model.train()


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
@pytest.mark.parametrize("chunk_tokens", [1, 4, None])
def test_float64_chunked_equals_full_vocabulary(temperature, chunk_tokens):
    for model in (tiny_llama(VOCAB), tiny_qwen2()):
        value, ent, grad = _compare(model, temperature, chunk_tokens, atol=1e-12)
        assert max(value, ent, grad) < 1e-12, (type(model).__name__, value, ent, grad)


def test_float32_chunked_within_2e_6():
    """float32 sums round differently in chunks: ~2 ulps for values and gradients, the entropy
    1.0e-6 relative (~8 ulps) on a 2-core AMD EPYC (AVX2); ignoring the temperature is ~1e-3."""
    model = tiny_qwen2(torch.float32)
    value, ent, grad = _compare(model, 0.7, 3, atol=1e-6)
    assert max(value, ent, grad) < 2e-6, (value, ent, grad)


def test_ignoring_the_temperature_in_the_chunked_path_fails(monkeypatch):
    real = logprobs._chunk_logprobs
    monkeypatch.setattr(logprobs, "_chunk_logprobs",
                        lambda head, states, targets, temperature, entropy:
                        real(head, states, targets, 1.0, entropy))
    value, _, grad = _compare(tiny_llama(VOCAB), 0.7, 4, atol=1e-12)
    assert value > 1e-3 and grad > 1e-3


def test_no_full_vocabulary_logits_and_no_padding_rows():
    model, packed = tiny_llama(VOCAB), _packed()
    rows = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: rows.append(out.shape[:-1]))
    try:
        logp, _ = completion_logprobs(model, packed, chunk_tokens=4)
        logp.sum().backward()
    finally:
        handle.remove()
    real = sum(len(c) for _, c in SHAPES)  # 10: chunks 4 + 4 + 2, and again in backward
    chunks = [r[0] for r in rows if len(r) == 1]
    assert sorted(chunks) == [2, 2, 4, 4, 4, 4] and real == 10
    assert logp[1, 2:].eq(0).all() and logp[3].eq(0).all()  # right-padding: 0, not computed


def test_peft_lora_model_is_chunked_alike():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_qwen2(tied=False), peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False))
    value, ent, grad = _compare(model, 0.7, 4, atol=1e-12)
    assert max(value, ent, grad) < 1e-12, (value, ent, grad)


def test_gradient_checkpointed_model():
    model = tiny_qwen2()
    model.activation_checkpointing_enable()
    value, ent, grad = _compare(model, 0.7, 2, atol=1e-12)
    assert max(value, ent, grad) < 1e-12, (value, ent, grad)


class _ScaledLlama(LlamaForCausalLM):
    """Logits scaled after the head (as Cohere or Granite do), unknown to memgym."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out


def test_models_whose_logits_are_not_the_head_take_the_full_path():
    scaled = _ScaledLlama(tiny_llama(VOCAB).config).double().train()
    assert max(_compare(scaled, 0.7, 4, atol=1e-12)) < 1e-12
    gemma = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        final_logit_softcapping=0.5)).double().train()
    assert max(_compare(gemma, 0.7, 4, atol=1e-12)) < 1e-12


def test_empty_completions_and_bad_chunk_size():
    model = tiny_llama(VOCAB)
    empty = pack_segments([Segment(0, 0, 1, [1, 2], [], [], [], "end")], 0)
    logp, ent = completion_logprobs(model, empty, entropy=True, temperature=0.7)
    assert logp.shape == ent.shape == (1, 0)
    with pytest.raises(ConfigError, match="chunk_tokens"):
        completion_logprobs(model, _packed(), chunk_tokens=0)


MIXED_PRECISION_CHECK = """
import torch
from accelerate import Accelerator
from memgym.trainers import logprobs
from memgym.trainers.logprobs import completion_logprobs, pack_segments
from memgym.trajectory import Segment
from tests.tiny_models import tiny_llama

model = tiny_llama(vocab_size=64).float()
prepared, _ = Accelerator(cpu=True, mixed_precision="bf16").prepare(
    model, torch.optim.AdamW(model.parameters()))
packed = pack_segments([Segment(0, 0, 1, [1, 2, 3], [4, 5, 6, 7], [1] * 4, [0.0] * 4, "end")], 0)
expected, _ = logprobs.full_vocab_logprobs(prepared, packed, False, 0.7)
logprobs.full_vocab_logprobs = None  # calling it would fail
chunked, _ = completion_logprobs(prepared, packed, temperature=0.7)
assert torch.allclose(chunked, expected, atol=1e-6), (chunked, expected)
chunked.sum().backward()
assert model.lm_head.weight.grad is not None
"""


def test_accelerate_mixed_precision_is_chunked_under_its_autocast():
    """Accelerate's bf16 autocast wraps the inner forward, outside which the chunks run: they
    run under the same autocast and equal the full-vocabulary path, which is never taken.
    (A fresh process: Accelerate's state is a per-process singleton.)"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", MIXED_PRECISION_CHECK], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
