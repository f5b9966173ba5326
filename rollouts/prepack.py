"""Prepacked oneDNN linear layers for generation on CPU.

On this project's CPUs ATen's fp32 ``nn.Linear`` (MKL sgemm) is slow for the few rows of a
decode step: SmolLM2's 576×49152 output layer takes 29.6 ms for 8 rows against 10.7 ms for one,
and 9.7 ms through oneDNN with a weight packed ahead of time. Over the whole model a decode step
of 8 sequences drops from ~135 to ~95 ms, and one of a single sequence gets no slower.

No public torch API packs fp32 weights for oneDNN, so this uses the two ops that torch's own
Inductor emits for frozen CPU linears (``mkldnn::_reorder_linear_weight`` and
``mkldnn::_linear_pointwise``); torch is pinned. Where they are missing, layers are left as
they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch

# Row-count hint for the packed layout. Measured on SmolLM2 decode steps of 1, 4 and 8
# sequences: a pack for 8 rows is as fast as one for the exact count, so one pack serves all.
PACK_ROWS = 8


def available() -> bool:
    """Whether this torch build has oneDNN and the packed-linear ops."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None,
                    x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class PrepackedLinears:
    """Runs a model's fp32 CPU ``nn.Linear`` layers on oneDNN with prepacked weights.

    Use as ``with packs.active(model): model.generate(...)``, in inference only (no gradients).
    Packs are kept between calls and redone for a layer whose weight changed: another tensor
    (data pointer) or an in-place update (the version counter that optimizer steps and
    ``load_state_dict`` bump), so an engine sharing its model with a trainer stays on the
    trainer's current policy. Outputs match ``nn.Linear`` to float32 rounding (~1e-4 on
    SmolLM2's logits), not bit for bit. Memory: one packed copy of each weight.
    """

    def __init__(self) -> None:
        self._packs: dict[torch.nn.Linear, tuple[int, int, torch.Tensor]] = {}

    def _pack(self, layer: torch.nn.Linear) -> torch.Tensor:
        weight = layer.weight
        key = (weight.data_ptr(), weight._version)
        cached = self._packs.get(layer)
        if cached is None or cached[:2] != key:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS)
            cached = self._packs[layer] = (*key, packed)
        return cached[2]

    @contextmanager
    def active(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block, ``model``'s packable linear layers run prepacked (no-op without
        oneDNN). Layers are looked up on each entry, so a model wrapped since (peft) is seen."""
        layers = [m for m in model.modules() if type(m) is torch.nn.Linear
                  and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32
                  ] if available() else []
        self._packs = {m: self._packs[m] for m in layers if m in self._packs}  # drop gone layers
        with torch.no_grad():
            for layer in layers:
                bias = None if layer.bias is None else layer.bias.detach()
                layer.forward = partial(_packed_forward, self._pack(layer), bias)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward
