"""The HF engine's CPU parts: the packed prefill's mask, append-in-place KV cache, prepacked
linears."""

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from memgym.rollouts import prepack
from memgym.rollouts.kv_cache import AppendCache
from memgym.rollouts.prefill import packed_rows_mask, packs, prefill

CONFIG = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     hidden_size=32, intermediate_size=64, vocab_size=100)


def states(batch: int, new: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 2, new, 8, generator=gen) for _ in range(2))


def test_append_cache_holds_what_dynamic_cache_holds_through_crop_and_select():
    append, dynamic = AppendCache(CONFIG, reserve=3), DynamicCache(config=CONFIG)
    steps = [("update", 5), ("update", 1), ("update", 1), ("crop", -2), ("update", 1),
             ("update", 4), ("select", None), ("update", 1)]
    for seed, (op, arg) in enumerate(steps):
        for cache in (append, dynamic):
            if op == "update":
                batch = 3 if seed < 6 else 2
                for layer in range(2):
                    out = cache.update(*states(batch, arg, 10 * seed + layer), layer)
            elif op == "crop":
                cache.crop(arg)
            else:
                cache.batch_select_indices(torch.tensor([0, 2]))
        for a, d in zip(append.layers, dynamic.layers, strict=True):
            assert torch.equal(a.keys, d.keys) and torch.equal(a.values, d.values)
        if op == "update":
            assert torch.equal(out[0], dynamic.layers[1].keys)
    assert append.get_seq_length() == dynamic.get_seq_length() == 11


def test_append_cache_writes_in_place_until_its_reserve_is_used():
    cache = AppendCache(CONFIG, reserve=2)
    cache.update(*states(1, 4, 0), 0)
    buffer = cache.layers[0].keys.data_ptr()
    cache.update(*states(1, 1, 1), 0)
    cache.update(*states(1, 1, 2), 0)
    assert cache.layers[0].keys.data_ptr() == buffer  # 4 + 2 positions: within the reserve
    cache.update(*states(1, 1, 3), 0)
    assert cache.layers[0].keys.data_ptr() != buffer and cache.get_seq_length() == 7


def test_prepacked_linears_match_nn_linear_and_follow_weight_changes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 8, bias=False))
    x = torch.randn(3, 5, 16)
    packs = prepack.PrepackedLinears()
    with torch.inference_mode():
        expected = model(x)
        with packs.active(model):
            assert "forward" in vars(model[0])
            assert torch.allclose(model(x), expected, atol=1e-5)
        assert "forward" not in vars(model[0]) and torch.equal(model(x), expected)
    with torch.no_grad():
        model[2].weight.mul_(2.0)  # in place, as an optimizer step: the pack must be redone
    model[0].weight = torch.nn.Parameter(torch.zeros(32, 16))  # a new tensor: likewise
    with torch.inference_mode():
        changed = model(x)
        with packs.active(model):
            assert torch.allclose(model(x), changed, atol=1e-5)
    assert not torch.allclose(changed, expected, atol=1e-2)


def test_packed_rows_mask_gives_each_row_the_prefix_and_its_own_tokens_causally():
    prefix, lengths = 5, [3, 0, 1, 4]
    total, gen = sum(lengths), torch.Generator().manual_seed(0)
    mask = packed_rows_mask(prefix, lengths, torch.float32)
    assert mask.shape == (1, 1, total, prefix + total)
    assert set(mask.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}
    query = torch.randn(1, 4, total, 8, generator=gen)
    key, value = (torch.randn(1, 4, prefix + total, 8, generator=gen) for _ in range(2))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=0.3)
    start = 0
    for n in lengths:  # each row alone: the prefix, then its own tokens under a causal mask
        own = slice(prefix + start, prefix + start + n)
        keys, values = (torch.cat([t[:, :, :prefix], t[:, :, own]], dim=2) for t in (key, value))
        sees = torch.ones(n, prefix + n, dtype=torch.bool).tril(prefix)
        alone = F.scaled_dot_product_attention(query[:, :, start:start + n], keys, values,
                                               attn_mask=sees, scale=0.3)
        assert torch.allclose(out[:, :, start:start + n], alone, atol=1e-6)
        start += n


def test_packs_cut_rows_at_the_token_budget():
    assert packs([3, 0, 1, 4], 4) == [range(0, 3), range(3, 4)]
    assert packs([5, 1, 5], 4) == [range(0, 1), range(1, 2), range(2, 3)]  # a long row alone
    assert packs([2, 2, 2], 100) == [range(0, 3)] and packs([], 4) == []


def test_prefill_in_several_packs_caches_what_one_pack_caches():
    """Rows split over packs (a fresh copy of the prefix cache each) cache the same keys and
    values, position for position, as all rows in one packed sequence."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(CONFIG).eval()
    gen = torch.Generator().manual_seed(1)
    shared = [5, 6, 7]
    ids = [shared + torch.randint(1, 100, (n,), generator=gen).tolist() for n in (4, 1, 9, 3, 6)]
    width = max(map(len, ids))
    for prefix_len in (3, 0):
        with torch.inference_mode():
            one = prefill(model, ids, prefix_len, width, 4, max_packed=1000)
            many = prefill(model, ids, prefix_len, width, 4, max_packed=8)
        assert len(packs([len(x) - 1 - prefix_len for x in ids], 8)) >= 3
        for a, b in zip(one.layers, many.layers, strict=True):
            assert a.keys.shape == b.keys.shape == (5, 2, width - 1, 8)
            assert torch.allclose(a.keys, b.keys, atol=1e-5)
            assert torch.allclose(a.values, b.values, atol=1e-5)
            assert a.keys.abs().sum() > 0


def test_a_trainer_step_reaches_the_engines_weight_copies():
    """An engine sharing the trainer's model generates with the weights of the latest update
    (its transposed copies are made per generation, from the current weights)."""
    from memgym.trainers import GRPOConfig, GRPOTrainer, SegmentBatch
    from memgym.trajectory import Segment

    from .tiny_models import tiny_llama

    model = tiny_llama().float()
    trainer = GRPOTrainer(model, 0, GRPOConfig(learning_rate=0.1))
    assert trainer.optimizer.defaults["fused"]
    ids, packs = torch.tensor([[1, 2, 3, 4]]), prepack.PrepackedLinears()
    with torch.inference_mode(), packs.active(model):
        before = model(ids).logits
    segments = [Segment(0, 0, 1, [1, 2], [3, 4], [1, 1], [-1.0, -1.0], "end")] * 2
    trainer.step(SegmentBatch(segments, torch.tensor([1.0, 0.5])))
    with torch.inference_mode():
        plain = model(ids).logits
        with packs.active(model):
            packed = model(ids).logits
    assert not torch.allclose(plain, before, atol=1e-4)  # the step changed the weights
    assert torch.allclose(packed, plain, atol=1e-5)
