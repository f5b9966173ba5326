"""Pre-transposed linear layers for generation on CPU.

``nn.Linear`` computes ``x @ weight.T`` on the ``(out, in)`` weight, which MKL's fp32 GEMM runs
slowly for the few rows of a decode step: SmolLM2's 576×49,152 output layer took 46.6 ms for 8
rows and 12.2 ms for one (one thread, this project's CPU), its MLP layers 0.34 ms for 8 rows. The
same product on a contiguous ``(in, out)`` copy of the weight (``x @ weight_t``) took 28.5 ms
and 0.16 ms. :class:`PrepackedLinears` keeps such copies and runs a model's linear layers on them
during generation, with public torch operations only (it replaces oneDNN packs made through
torch's internal mkldnn ops; see the README's engine section for tokens/s before and after).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch


def _forward(weight_t: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear``'s output from the ``(in, out)`` transposed weight."""
    if bias is None:
        return x @ weight_t
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight_t).view(*x.shape[:-1], -1)


class _Probe:
    """Tells whether a tensor was modified in place since the probe was made, through public
    autograd: a tiny graph saves a view of the tensor (a view shares its version counter), and
    autograd refuses to backpropagate through a saved tensor modified since (an optimizer
    step, ``load_state_dict``, any in-place op; not writes through ``.data``, which autograd
    does not see either)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._seed = self._out = None
        if tensor.is_inference():  # no version counter: never known to be unchanged
            return
        with torch.inference_mode(False), torch.enable_grad():
            self._seed = torch.ones((), requires_grad=True)
            self._out = self._seed * tensor.detach()[(0,) * tensor.dim()]

    def unchanged(self) -> bool:
        """Whether the tensor is as it was when the probe was made."""
        if self._out is None:
            return False
        with torch.inference_mode(False), torch.enable_grad():
            try:
                torch.autograd.grad(self._out, self._seed, retain_graph=True)
            except RuntimeError:  # "modified by an inplace operation"
                return False
        return True


class PrepackedLinears:
    """Runs a model's fp32 CPU ``nn.Linear`` layers on pre-transposed copies of their weights.

    Use as ``with packs.active(model): model.generate(...)``, in inference only (no gradients).
    Copies are kept between calls and redone for a layer whose weight changed: another tensor,
    or an in-place update (optimizer steps, ``load_state_dict``), so an engine sharing its model
    with a trainer stays on the trainer's current policy. Outputs match ``nn.Linear`` to float32
    rounding, not bit for bit. Memory: one copy of each weight.
    """

    def __init__(self) -> None:
        self._packs: dict[torch.nn.Linear, tuple[torch.Tensor, _Probe, torch.Tensor]] = {}

    def _pack(self, layer: torch.nn.Linear) -> torch.Tensor:
        weight = layer.weight
        cached = self._packs.get(layer)
        if cached is None or cached[0] is not weight or not cached[1].unchanged():
            with torch.no_grad():
                transposed = weight.detach().t().contiguous()
            cached = self._packs[layer] = (weight, _Probe(weight), transposed)
        return cached[2]

    @contextmanager
    def active(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block, ``model``'s fp32 CPU linear layers run on their transposed copies.
        Layers are looked up on each entry, so a model wrapped since (peft) is seen."""
        layers = [m for m in model.modules() if type(m) is torch.nn.Linear
                  and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]
        self._packs = {m: self._packs[m] for m in layers if m in self._packs}  # drop gone layers
        with torch.no_grad():
            for layer in layers:
                bias = None if layer.bias is None else layer.bias.detach()
                layer.forward = partial(_forward, self._pack(layer), bias)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward
