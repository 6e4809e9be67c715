"""Cross-entropy over a large output layer without its (N, V) logits in memory.

``cross_entropy(h @ w.T, target)`` writes the logits, their log-softmax, a zero-filled
gradient and its log-softmax backward: four passes over N x V floats (310 MB for 6,400
positions x 12,101 items), which cost SASRec's CPU training step more than all its layers.
:func:`linear_cross_entropy` computes the same loss and gradients block by block of rows: a
block's logits are made, reduced to their log-sum-exp and dropped; the backward pass makes them
again and turns them into the gradient in place (softmax minus one-hot), so each block stays in
cache and nothing of size N x V exists.
"""

from __future__ import annotations

from typing import Any

import torch

#: Rows per block: 128 x 12,101 float32 logits are 6 MB (128-256 measured fastest on a 2-core
#: Xeon; 1,024 and more fall back to the plain path's speed).
BLOCK = 128
#: Below this many logits the plain path is as fast (the blocks' Python loop costs more).
MIN_LOGITS = 1 << 20


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = len(h)
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        picked = torch.empty(n, dtype=torch.float32, device=h.device)
        for s in range(0, n, BLOCK):
            logits = h[s : s + BLOCK] @ w.T  # (b, V)
            lse[s : s + BLOCK] = torch.logsumexp(logits, 1)
            picked[s : s + BLOCK] = logits.gather(1, target[s : s + BLOCK, None])[:, 0]
        ctx.save_for_backward(h, w, target, lse)
        return (lse - picked).sum() / n

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        h, w, target, lse = ctx.saved_tensors
        n = len(h)
        scale = grad / n
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for s in range(0, n, BLOCK):
            hb = h[s : s + BLOCK]
            g = hb @ w.T  # the block's logits again, turned into d loss / d logits in place
            g.sub_(lse[s : s + BLOCK, None]).exp_()
            rows = torch.arange(len(g), device=g.device)
            g[rows, target[s : s + BLOCK]] -= 1.0
            g.mul_(scale)
            if grad_h is not None:
                torch.mm(g, w, out=grad_h[s : s + BLOCK])
            if grad_w is not None:
                grad_w.addmm_(g.T, hb)
        return grad_h, grad_w, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``cross_entropy(h @ w.T, target)`` (mean over the N rows): h (N, d), w (V, d), target (N,)
    int64 in [0, V). On a CPU, with at least :data:`MIN_LOGITS` logits, it takes the blockwise
    path above, in float32 whatever the autocast state (under bf16 autocast the plain path's
    matmul is bf16 and its softmax float32 anyway): the same loss and gradients up to float
    rounding (relative 1e-6 against the plain float32 path). Elsewhere (CUDA, small problems)
    the plain path."""
    if h.device.type == "cpu" and len(h) * len(w) >= MIN_LOGITS:
        with torch.autocast("cpu", enabled=False):
            return _LinearCrossEntropy.apply(h.float().contiguous(), w.float(), target.contiguous())
    return torch.nn.functional.cross_entropy(h @ w.T, target)
