"""A transformers KV cache that appends in place, for decoding on CPU.

transformers' ``DynamicLayer`` concatenates its whole cache with each step's new keys and
values, so a decode step copies every cached position of every layer. For 8 LoCoMo prompts of
~200 tokens that copying (``aten::cat``) took 731 ms of the 5.0 s of CPU time of one 32-token
batched generation on this project's CPU (torch profiler). transformers' ``StaticCache`` avoids
the copies but attends over its full length under a mask, and measured slower here. So this
layer keeps ``DynamicLayer``'s semantics and only changes where the states are stored.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedConfig
from transformers.cache_utils import DynamicLayer


class AppendLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes new states into spare room instead of concatenating.

    Keys and values live in buffers of shape ``(batch, kv_heads, capacity, head_dim)``;
    ``self.keys`` / ``self.values`` are views of their filled part. A buffer is reallocated
    (filled part copied, ``reserve`` positions of room added) when it is full, or when
    ``self.keys`` was replaced from outside (``crop``, ``batch_select_indices``, ...).

    Args:
        reserve: Spare positions to allocate beyond what an update needs, e.g. the number of
            tokens still to generate.
    """

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._views: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``(batch, kv_heads, new, head_dim)`` states; returns all cached states."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled = self.get_seq_length()
        end = filled + key_states.shape[-2]
        buffers = self._buffers
        if buffers is None or self.keys is not self._views[0] or end > buffers[0].shape[-2]:
            buffers = self._buffers = tuple(
                _grown(old if filled else None, new, end + self.reserve)
                for old, new in ((self.keys, key_states), (self.values, value_states)))
        buffers[0][..., filled:end, :] = key_states
        buffers[1][..., filled:end, :] = value_states
        self._views = self.keys, self.values = buffers[0][..., :end, :], buffers[1][..., :end, :]
        return self.keys, self.values


def _grown(old: torch.Tensor | None, new: torch.Tensor, capacity: int) -> torch.Tensor:
    """An empty buffer shaped like ``new`` with ``capacity`` positions, ``old`` copied in."""
    buffer = new.new_empty(*new.shape[:2], capacity, new.shape[-1])
    if old is not None:
        buffer[..., :old.shape[-2], :] = old
    return buffer


class AppendCache(DynamicCache):
    """A ``DynamicCache`` whose full-attention layers are :class:`AppendLayer` s.

    Args:
        config: The model's config (layer count and types).
        reserve: Spare positions per layer, e.g. ``max_new_tokens``.
    """

    def __init__(self, config: PreTrainedConfig, reserve: int) -> None:
        super().__init__(config=config)
        self.layers = [AppendLayer(reserve) if type(layer) is DynamicLayer else layer
                       for layer in self.layers]
