"""Training loop for SID sequence models: AdamW, linear warm-up then linear decay, early
stopping on validation Recall@10, best-checkpoint restore, deterministic with a seed."""

from __future__ import annotations

import copy
from typing import Any

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
) -> list[dict[str, float]]:
    """Trains ``model`` (a module with ``forward(inputs, targets) -> loss`` and
    ``recommend(inputs, beam_width, top_k)``) on ``train`` examples (``.inputs``, ``.targets``);
    with ``valid`` examples, evaluates Recall@10 / NDCG@10 after every epoch, stops after
    ``patience`` epochs without improvement and restores the best weights. Returns the
    per-epoch history (loss, and validation metrics)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    inputs = torch.as_tensor(train.inputs)
    targets = torch.as_tensor(train.targets)
    steps = epochs * max(1, -(-len(inputs) // batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    history, best, best_state, bad = [], -1.0, None, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=gen)
        total = 0.0
        for s in tqdm(range(0, len(inputs), batch_size), desc=f"epoch {epoch}", disable=not verbose, leave=False):
            idx = order[s : s + batch_size]
            loss = model(inputs[idx].to(device), targets[idx].to(device))
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
            else:
                bad += 1
        history.append(row)
        if valid is not None and bad >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


__all__ = ["fit"]
