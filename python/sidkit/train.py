"""Training loop for SID sequence models: AdamW, linear warm-up then linear decay, early
stopping on validation Recall@10, best-checkpoint restore, deterministic with a seed.

Inputs are left-padded with 0. Batches are drawn from length buckets (shuffled pools of 64
batches sorted by length, batch order shuffled) and the all-padding leading columns of each
batch are cut, so short histories do not pay for the longest one."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from .metrics import ranking_metrics


def fit(
    model: Any,
    train: Any,
    valid: Any | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup: float = 0.05,
    patience: int = 3,
    beam_width: int = 20,
    device: str | torch.device = "cpu",
    seed: int = 0,
    verbose: bool = True,
    amp: bool | None = None,
    checkpoint: str | None = None,
    schedule: str = "linear",
) -> list[dict[str, float]]:
    """Trains ``model`` (a module with ``forward(inputs, targets) -> loss`` and
    ``recommend(inputs, beam_width, top_k)``) on ``train`` examples (``.inputs``, ``.targets``);
    with ``valid`` examples, evaluates Recall@10 / NDCG@10 after every epoch, stops after
    ``patience`` epochs without improvement and restores the best weights. Returns the
    per-epoch history (loss, and validation metrics).

    ``amp``: bfloat16 autocast for the forward pass (default: on for CUDA devices, off on CPU;
    no loss scaling is needed with bfloat16). ``checkpoint``: a path where the best weights so
    far are saved (``torch.save`` of the state dict) after every improving epoch.
    ``schedule``: the learning rate after the linear warm-up (``warmup`` × all steps):
    ``"linear"`` decay to 0, ``"cosine"`` decay to 0, or ``"constant"`` (see :func:`lr_factor`)."""
    from tqdm.auto import tqdm

    use_amp = torch.device(device).type == "cuda" if amp is None else bool(amp)
    amp_device = torch.device(device).type
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    inputs = torch.as_tensor(train.inputs)
    targets = torch.as_tensor(train.targets)
    steps = epochs * max(1, -(-len(inputs) // batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    factor = lr_factor(schedule, steps, warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    history, best, best_state, bad = [], -1.0, None, 0
    lengths = (inputs != 0).sum(1)
    same_shape = targets.shape == inputs.shape  # per-position targets (SASRec) are cut alike
    for epoch in range(epochs):
        model.train()
        total = 0.0
        batches = bucket_batches(lengths, batch_size, gen)
        for idx in tqdm(batches, desc=f"epoch {epoch}", disable=not verbose, leave=False):
            x, y = inputs[idx], targets[idx]
            cut = x.shape[1] - max(1, int(lengths[idx].max()))
            x = x[:, cut:]
            if same_shape:
                y = y[:, cut:]
            with torch.autocast(amp_device, dtype=torch.bfloat16, enabled=use_amp):
                loss = model(x.to(device), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        row: dict[str, float] = {"epoch": epoch, "loss": total / max(len(inputs), 1)}
        if valid is not None:
            ranked = model.recommend(valid.inputs, beam_width=beam_width, top_k=10)
            row.update(ranking_metrics(ranked, valid.items, ks=(5, 10)))
            if row["recall@10"] > best:
                best, best_state, bad = row["recall@10"], copy.deepcopy(model.state_dict()), 0
                if checkpoint is not None:
                    from ._arrays import atomic_path

                    with atomic_path(checkpoint) as tmp:
                        torch.save(best_state, tmp)
            else:
                bad += 1
        history.append(row)
        if verbose:
            tqdm.write("epoch " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{v}" for k, v in row.items()))
        if valid is not None and bad >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def lr_factor(schedule: str, steps: int, warmup: float) -> Any:
    """The learning-rate multiplier of optimizer step ``s`` (0-based) out of ``steps``: a
    linear warm-up to 1 over ``max(1, int(warmup * steps))`` steps, then ``"linear"`` decay to
    0 at ``steps``, ``"cosine"`` (half a cosine to 0 at ``steps``) or ``"constant"`` 1."""
    import math

    if schedule not in ("linear", "cosine", "constant"):
        raise ValueError(f"schedule: expected 'linear', 'cosine' or 'constant', got {schedule!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup: expected a share of the steps in [0, 1), got {warmup}")
    warm = max(1, int(warmup * steps))

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        done = min(1.0, (s - warm) / max(1, steps - warm))
        if schedule == "linear":
            return 1.0 - done
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * done))
        return 1.0

    return factor


def bucket_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator, pool: int = 64) -> list[torch.Tensor]:
    """Index batches covering every example once: a random permutation cut into pools of
    ``pool`` batches, each pool sorted by length and cut into batches, then all batches
    shuffled. Batches hold examples of similar length, so little compute goes to padding."""
    order = torch.randperm(len(lengths), generator=gen)
    batches = []
    for s in range(0, len(order), pool * batch_size):
        chunk = order[s : s + pool * batch_size]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    perm = torch.randperm(len(batches), generator=gen)
    return [batches[i] for i in perm.tolist()]


def trim_left_padding(inputs: np.ndarray) -> np.ndarray:
    """``inputs`` (B, T) without the leading columns that are padding (0) in every row."""
    filled = (np.asarray(inputs) != 0).any(0)
    first = int(filled.argmax()) if filled.any() else inputs.shape[1] - 1
    return inputs[:, first:]


__all__ = ["bucket_batches", "fit", "lr_factor", "trim_left_padding"]
