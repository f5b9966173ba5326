"""Prefill of a generation batch on CPU: the shared prefix once, the rows' own tokens packed.

Prefill on a CPU is compute-bound, so every padding token costs as much as a real one, and a
batch's prompts usually share a long prefix (chat template and env instructions: 99 of ~180
tokens for the LoCoMo memory manager). :func:`prefill` runs that prefix once, then all rows' own
tokens laid end to end as unpadded sequences of at most ``max_packed`` tokens each. The linear
layers see them as large matrices (efficient); attention runs in the model's own attention
implementation under a custom 4D mask (:func:`packed_rows_mask`: each row sees the prefix and,
causally, its own tokens), the public way transformers offers to pass one. The mask and the
attention scores grow with the square of a pack's length, so the rows are packed in sequences
of at most :data:`MAX_PACKED` own tokens: 32 MemSifter prompts of ~550 own tokens each took
221 s to generate 24 tokens in one pack of ~18k tokens, 39 s in packs of 1,024
(``experiments/bench/packed_prefill.py``).

Only valid for models whose every layer attends fully and causally with a plain softmax over
the context: see :func:`memgym.rollouts.hf.fast_path_supported`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from memgym.rollouts.kv_cache import AppendCache


def packed_rows_mask(prefix: int, lengths: Sequence[int], dtype: torch.dtype,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Additive attention mask of rows packed end to end after a shared prefix.

    Query ``i`` of row ``r`` may attend to every prefix position and to the positions of row
    ``r`` up to its own; 0 where it may, ``dtype``'s lowest value where not.

    Args:
        prefix: Positions of the shared prefix (already in the KV cache).
        lengths: Tokens per row, in order (0 allowed).
        dtype: Mask dtype: the model's.
        device: Where to build it.

    Returns:
        ``(1, 1, total, prefix + total)``, ``total = sum(lengths)``.
    """
    row = torch.repeat_interleave(torch.arange(len(lengths), device=device),
                                  torch.tensor(list(lengths), device=device))
    index = torch.arange(len(row), device=device)
    own = (row[:, None] == row[None, :]) & (index[:, None] >= index[None, :])
    allowed = torch.cat([own.new_ones(len(row), prefix), own], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


MAX_PACKED = 1024
"""Own tokens per packed sequence (a row longer than this gets a pack of its own)."""


def packs(lengths: Sequence[int], max_packed: int = MAX_PACKED) -> list[range]:
    """Consecutive row ranges whose lengths sum to at most ``max_packed`` (a longer row alone),
    in order; rows of length 0 join the current range."""
    out, start, total = [], 0, 0
    for row, n in enumerate(lengths):
        if total + n > max_packed and row > start:
            out.append(range(start, row))
            start, total = row, 0
        total += n
    return [*out, range(start, len(lengths))] if lengths else out


def prefill(model: PreTrainedModel, ids: Sequence[Sequence[int]], shared: int, width: int,
            reserve: int, max_packed: int = MAX_PACKED) -> AppendCache:
    """KV cache of a batch's rows but their last tokens, for ``model.generate`` to go on from.

    Call under ``torch.inference_mode()`` with the model in eval mode. The batch's layout per
    row is: the ``shared`` prefix, left padding up to ``width``, the row's own tokens. Every
    tensor is built on ``model.device``.

    Args:
        model: A causal LM that takes ``position_ids`` and a custom 4D attention mask, and whose
            attention the mask fully describes (see
            :func:`memgym.rollouts.hf.fast_path_supported`).
        ids: Token ids per row; every row is longer than ``shared``.
        shared: Length of the prefix all rows share.
        width: Length of the longest row.
        reserve: Positions to leave room for in the returned cache (tokens to generate).
        max_packed: Own tokens per packed forward pass (see :func:`packs`).

    Returns:
        A cache of ``width - 1`` positions: per row, the prefix, zeros under the row's padding,
        then the row's own tokens but the last.
    """
    config, device = model.config, model.device
    prefix, batch = DynamicCache(config=config), AppendCache(config, reserve)
    if width == 1:
        return batch  # nothing to cache: generate feeds every row's only token
    if shared:  # logits_to_keep=1: only the cache is wanted, not the vocab projection
        model(torch.tensor([ids[0][:shared]], device=device), past_key_values=prefix,
              use_cache=True, logits_to_keep=1)
    lengths = [len(x) - 1 - shared for x in ids]  # own tokens but the last
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for rows in packs(lengths, max_packed):
        own = [lengths[r] for r in rows]
        if not shared and not sum(own):
            continue  # nothing to cache: these rows stay zeros (all padding)
        cache = DynamicCache(config=config)
        for i, layer in enumerate(prefix.layers if shared else ()):
            cache.update(layer.keys, layer.values, i)
        if sum(own):
            positions = torch.cat([torch.arange(shared, shared + n, device=device) for n in own])
            model(torch.tensor([[t for r in rows for t in ids[r][shared:-1]]], device=device),
                  attention_mask=packed_rows_mask(shared, own, model.dtype, device),
                  position_ids=positions[None], past_key_values=cache, use_cache=True,
                  logits_to_keep=1)
        for i, layer in enumerate(cache.layers):  # layer: (1, kv_heads, shared + own, head_dim)
            if len(keys) == i:  # every row: the prefix, then zeros until its own tokens
                keys.append(layer.keys.new_zeros(len(ids), layer.keys.shape[1], width - 1,
                                                 layer.keys.shape[3]))
                values.append(layer.values.new_zeros(len(ids), layer.values.shape[1],
                                                     width - 1, layer.values.shape[3]))
                keys[i][:, :, :shared] = layer.keys[0, :, :shared]
                values[i][:, :, :shared] = layer.values[0, :, :shared]
            end = shared
            for r, n in zip(rows, own, strict=True):  # own tokens last, after the padding
                keys[i][r, :, width - 1 - n:] = layer.keys[0, :, end:end + n]
                values[i][r, :, width - 1 - n:] = layer.values[0, :, end:end + n]
                end += n
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        batch.update(k, v, i)
    return batch
