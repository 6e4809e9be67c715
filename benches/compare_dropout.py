"""CPU dropout, forward + backward, side by side: sidkit's FastDropout (native counter-based
kernel) against torch's ``nn.Dropout`` and against the pure-torch cheaper mask sidkit used
before (one ``torch.randint`` int64 draw per four elements, compare, cast, two multiplies).

    python benches/compare_dropout.py             # all cores (--threads N to choose), best of 7

Shapes are those of TIGER's 2+2-layer CPU preset at batch 256 x 40 tokens: the residual
stream (256, 40, 128) and the feed-forward activations (256, 40, 512), float32 and bfloat16.
Each timing is forward + backward of one dropout call (the backward multiplies the incoming
gradient by the mask); ``compare_train_step.py`` shows what it adds up to in a training step.
"""

from __future__ import annotations

import argparse
import math

import sidkit as sk
import torch
from _timing import best_time
from sidkit.models._dropout import FastDropout
from torch import nn


class RandintLanes(nn.Dropout):
    """sidkit's previous pure-torch FastDropout: 16-bit lanes of torch.randint int64 draws."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, cut = math.prod(x.shape), round(self.p * 65536)
        lanes = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
        keep = (lanes >= cut - 32768).view(x.shape)
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - cut / 65536)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        sk.set_num_threads(args.threads)
    print(f"torch {torch.__version__}: {torch.get_num_threads()} threads; sidkit: {sk.get_num_threads()} threads\n")
    kinds = {
        "sidkit FastDropout": FastDropout(0.1),
        "previous randint lanes": RandintLanes(0.1),
        "torch nn.Dropout": nn.Dropout(0.1),
    }
    print("| shape | dtype | " + " | ".join(f"{k} ms" for k in kinds) + " | vs previous | vs torch |")
    print("|---|---|" + "---:|" * (len(kinds) + 2))
    for shape in ((256, 40, 128), (256, 40, 512)):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            g = torch.ones(shape, dtype=dtype)

            def timed(d: nn.Module, x: torch.Tensor = x, g: torch.Tensor = g) -> float:
                def run() -> None:
                    for _ in range(args.calls):
                        d(x).backward(g)

                return best_time(run, repeat=7)[0]

            ms = {k: timed(d) / args.calls * 1e3 for k, d in kinds.items()}
            fast, prev, torch_ms = ms.values()
            cells = " | ".join(f"{v:.2f}" for v in ms.values())
            name = str(dtype).removeprefix("torch.")
            print(f"| {shape} | {name} | {cells} | **{prev / fast:.1f}x** | **{torch_ms / fast:.1f}x** |", flush=True)


if __name__ == "__main__":
    main()
