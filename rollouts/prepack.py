"""Pre-transposed linear layers for generation on CPU.

``nn.Linear`` computes ``x @ weight.T`` on the ``(out, in)`` weight, which MKL's fp32 GEMM runs
slowly for the few rows of a decode step: SmolLM2's 576×49,152 output layer took 46.6 ms for 8
rows and 12.2 ms for one (one thread, this project's CPU), its MLP layers 0.34 ms for 8 rows. The
same product on a contiguous ``(in, out)`` copy of the weight (``x @ weight_t``) took 28.5 ms
and 0.16 ms. :class:`PrepackedLinears` makes such copies and runs a model's linear layers on them
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


class PrepackedLinears:
    """Runs a model's fp32 CPU ``nn.Linear`` layers on pre-transposed copies of their weights.

    Use as ``with packs.active(model): model.generate(...)``, in inference only (no gradients).
    The copies are made on entering the block and dropped on leaving it, so they always hold
    the model's current weights and no copy is kept between generations: an engine sharing its
    model with a trainer would otherwise hold one (540 MB for SmolLM2) beside the optimizer's
    state while the trainer steps. Making them costs ~0.2-0.35 s for SmolLM2 on this CPU, per
    generation batch. Outputs match ``nn.Linear`` to float32 rounding, not bit for bit.
    """

    @contextmanager
    def active(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block, ``model``'s fp32 CPU linear layers run on transposed copies of
        their weights, made now. Layers are looked up on each entry, so a model wrapped since
        (peft) is seen."""
        layers = [m for m in model.modules() if type(m) is torch.nn.Linear
                  and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]
        with torch.no_grad():
            for layer in layers:
                bias = None if layer.bias is None else layer.bias.detach()
                layer.forward = partial(_forward, layer.weight.detach().t().contiguous(), bias)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward
