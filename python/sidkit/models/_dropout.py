"""Dropout with a cheaper mask on CPU.

On CPU, torch draws a dropout mask one 32-bit Mersenne-Twister number per element
(``bernoulli_``, single-threaded) and then casts and multiplies it in separate passes: in
TIGER's 2+2-layer training step that was 37% of the step (torch.profiler, 2 cores), more than
all matrix products. :class:`FastDropout` hands float32 and bfloat16 CPU tensors to sidkit's
native kernel (``sidkit-core``'s ``dropout`` module): element ``i`` is kept when 16-bit lane
``i % 4`` of the ``i // 4``-th SplitMix64 output of a per-call seed is at least
``round(p * 65536)``, and mask, scale and multiply are one multithreaded pass. So:

- it is the same independent Bernoulli mask with ``p`` rounded to a multiple of 1/65536
  (0.1 -> 0.100006; kept values are scaled by 1/(1 - that p): unbiased), and like torch's
  ``x * mask * scale`` a NaN or infinity becomes NaN where it is dropped;
- the per-call seed is drawn from the global torch RNG, so training stays deterministic for a
  seed, and the mask depends only on (seed, index): the same on any thread count;
- the backward pass recomputes the mask from the seed: nothing is stored (and, the op being
  linear, gradients of gradients work too).

Other dtypes, other layouts, in-place dropout and CUDA tensors go to ``nn.Dropout``'s own
kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .. import _native

_FAST = (torch.float32, torch.bfloat16)


def draw_seed() -> int:
    """A 63-bit seed from the global torch (CPU) generator."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def _flat(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).reshape(-1).numpy().view(np.uint16)
    return t.reshape(-1).numpy()


def dropout_into(x: torch.Tensor, p: float, seed: int) -> tuple[torch.Tensor, float]:
    """``x * mask / (1 - p')`` for a float32 or bfloat16 CPU tensor ``x`` (any shape), with the
    mask drawn from ``seed``; returns the result (x's shape and dtype) and ``p'`` (``p`` rounded
    to a multiple of 1/65536)."""
    x = x.detach().contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    p_used = _native.dropout(_flat(x), _flat(out), float(p), seed)
    return out, p_used


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        ctx.p, ctx.seed = p, seed
        return dropout_into(x, p, seed)[0]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # The op is linear in x: its gradient is the same op (mask and scale recomputed from the
        # seed), itself differentiable for higher-order gradients.
        return _Dropout.apply(grad, ctx.p, ctx.seed), None, None


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, seed: int | None = None) -> tuple[torch.Tensor, float]:
    """The (shape) bool mask FastDropout would use for ``seed`` (default: drawn from the global
    torch RNG, as FastDropout draws it), and ``p'``."""
    kept, p_used = dropout_into(torch.ones(shape), p, draw_seed() if seed is None else seed)
    return kept != 0, p_used


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, train / eval behaviour) with sidkit's native mask on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not self.training
            or self.p == 0.0
            or self.inplace
            or x.device.type != "cpu"
            or x.layout != torch.strided
            or x.dtype not in _FAST
        ):
            return super().forward(x)
        return _Dropout.apply(x, self.p, draw_seed())


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replaces every ``nn.Dropout`` inside ``module`` by a :class:`FastDropout` of the same
    ``p`` (in place; returns ``module``). Dropout applied by functional calls (attention
    probabilities inside some attention kernels) is left as it is."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p, child.inplace))
        else:
            use_fast_dropout(child)
    return module
