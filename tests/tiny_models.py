"""A tiny random-initialised Llama for fast, exact trainer tests (float64, no download)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int = 12, seed: int = 0, logit_scale: float = 1.0) -> LlamaForCausalLM:
    """A 1-layer Llama (hidden 16) in float64, in train mode.

    Args:
        vocab_size: Vocabulary size.
        seed: Seed of the random initialisation.
        logit_scale: Std of the LM head's weights: ~1 spreads the next-token distribution, so
            that temperatures 0.7 and 1 give clearly different distributions (the default
            init, std 0.02, makes every distribution nearly uniform).
    """
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    with torch.random.fork_rng():  # the global RNG is left as it was
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).double()
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, logit_scale)
    return model.train()
