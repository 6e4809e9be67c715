"""Training-step speed of sidkit's models: float32 vs bfloat16 autocast, and sidkit's CPU
dropout (FastDropout) vs torch's nn.Dropout, side by side.

    python benches/compare_train_step.py              # CPU: best of 7 interleaved rounds of 5 steps
    python benches/compare_train_step.py --device cuda

One optimizer step (forward, backward, AdamW) of ``sidkit.models.TIGER`` (the 2+2-layer CPU
preset and the paper's 4+4 layers) on a Beauty-sized SID table (12,101 items, 3 x 256 + suffix)
at batch 256, histories of 10 items (40 tokens: Beauty's histories are short), and of
``SASRec`` (12,101 items, full-softmax CE, batch 128, length 50). The models and inputs are
the same for both precisions; the loss of the first step is printed too (bf16 changes it by
rounding only). The ratio is what ``train.amp = "on"`` buys on this machine: CPUs with
AVX512-BF16 or AMX run bf16 matmuls in hardware; others may see none or a slowdown. The last
columns time the bf16 step again as stock torch + transformers run it: every FastDropout
(sidkit's native counter-based dropout) swapped back to ``nn.Dropout`` (torch draws a CPU mask
one 32-bit Mersenne-Twister number per element) and, in TIGER, T5's own feed-forward block
(which casts its activations to float32 and back under autocast) and transformers' SDPA
attention (torch's ``bernoulli_`` mask on the attention probabilities): what sidkit's CPU
training kernels buy. The middle columns swap back only the attention: what sidkit's attention
function (T5's arithmetic with the native dropout kernel) buys alone.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import sidkit as sk
import torch
from _timing import best_time


def beauty_like_table(n: int = 12101, seed: int = 0) -> sk.SidTable:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, 3))
    return sk.resolve(codes, item_ids=np.arange(1, n + 1))


def tiger_case(layers: int, heads: int, d_kv: int, d_ff: int, device: str):
    from sidkit.models import TIGER

    table = beauty_like_table()
    model = TIGER(table, d_model=128, num_layers=layers, num_heads=heads, d_kv=d_kv, d_ff=d_ff).to(device)
    gen = torch.Generator().manual_seed(0)
    v = model.token_map.vocab_size
    x = torch.randint(2, v, (256, 40), generator=gen).to(device)
    y = torch.randint(2, v, (256, table.levels), generator=gen).to(device)
    return model, (x, y)


def sasrec_case(device: str):
    from sidkit.models import SASRec

    model = SASRec(12101, max_len=50, d_model=64, num_layers=2).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, 12102, (128, 50), generator=gen).to(device)
    y = torch.randint(1, 12102, (128, 50), generator=gen).to(device)
    return model, (x, y)


class Stepper:
    """One model's training step (forward, backward, AdamW) at one precision."""

    def __init__(self, model, batch, amp: bool, device: str, steps: int) -> None:
        self.model, self.batch, self.amp, self.steps = model, batch, amp, steps
        self.kind = torch.device(device).type
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        torch.manual_seed(0)  # the same dropout draws for every variant's first step
        self.first_loss = self.step()  # also the warm-up (oneDNN / cuBLAS kernel selection)

    def step(self) -> float:
        with torch.autocast(self.kind, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.model(*self.batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def run(self) -> None:
        for _ in range(self.steps):
            self.step()
        if self.kind == "cuda":
            torch.cuda.synchronize()


def interleaved(steppers: list[Stepper], rounds: int) -> list[float]:
    """Seconds per step of each stepper: the best of ``rounds`` rounds, each round timing every
    stepper once in turn (so a slow spell of a noisy machine hits all of them alike)."""
    best = [float("inf")] * len(steppers)
    for _ in range(rounds):
        for i, s in enumerate(steppers):
            best[i] = min(best[i], best_time(s.run, repeat=1)[0] / s.steps)
    return best


def sdpa_attention(model):
    """TIGER with transformers' SDPA attention (torch draws its attention-probability dropout
    mask) instead of sidkit's attention function; everything else as sidkit builds it."""
    if getattr(model, "sidkit_attention", False):
        model.t5.set_attn_implementation("sdpa")
    return model


def stock(model):
    """The model as plain torch + transformers build it: every FastDropout back to nn.Dropout
    of the same p, TIGER's lean feed-forward blocks back to T5's own (same weights), SDPA
    attention, and SASRec's loss as one ``cross_entropy`` over all the logits."""
    from sidkit.models._dropout import FastDropout
    from sidkit.models.tiger import _DenseActDense

    sdpa_attention(model)
    if hasattr(model, "blockwise_loss"):
        model.blockwise_loss = False

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, FastDropout):
                setattr(module, name, torch.nn.Dropout(child.p))
            elif isinstance(child, _DenseActDense):
                from transformers.models.t5.modeling_t5 import T5DenseActDense

                block = T5DenseActDense(model.t5.config)
                block.wi, block.wo, block.act = child.wi, child.wo, child.act
                block.dropout = torch.nn.Dropout(child.dropout.p)
                setattr(module, name, block)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", default="", help="run only the cases whose name contains this (e.g. SASRec)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = ""
    if platform.system() == "Linux":
        cpu = Path("/proc/cpuinfo").read_text()
        flags = ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in cpu) or "no bf16 instructions"
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; CPU: {flags}\n")
    cases = {
        "TIGER 2+2, d 128, ff 512 (CPU preset)": lambda: tiger_case(2, 4, 32, 512, args.device),
        "TIGER 4+4, d 128, ff 1024 (paper)": lambda: tiger_case(4, 6, 64, 1024, args.device),
        "SASRec 2 layers, d 64, full softmax": lambda: sasrec_case(args.device),
    }
    print(
        "| model | float32 s/step | bf16 autocast s/step | bf16 speed-up | first loss fp32 / bf16 | "
        "bf16, SDPA attention s/step | attention kernel speed-up | "
        "bf16, stock torch + transformers s/step | sidkit kernels speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, make in cases.items():
        if args.only not in name:
            continue
        # Four builds of the same seeded weights and batch: float32, bf16, bf16 with SDPA
        # attention, and bf16 as stock torch + transformers build the model.
        (f32, batch), (bf16, _), (sdpa, _), (plain, _) = make(), make(), make(), make()
        sdpa, plain = sdpa_attention(sdpa), stock(plain)
        variants = ((f32, False), (bf16, True), (sdpa, True), (plain, True))
        steppers = [Stepper(m, batch, amp, args.device, args.steps) for m, amp in variants]
        t32, t16, ta, td = interleaved(steppers, args.rounds)
        l32, l16 = steppers[0].first_loss, steppers[1].first_loss
        attn = f"{ta:.4f} | **{ta / t16:.2f}x**" if getattr(bf16, "sidkit_attention", False) else "– | –"
        print(
            f"| {name} | {t32:.4f} | {t16:.4f} | **{t32 / t16:.2f}x** | {l32:.4f} / {l16:.4f} | {attn} | "
            f"{td:.4f} | **{td / t16:.2f}x** |",
            flush=True,
        )


if __name__ == "__main__":
    main()
