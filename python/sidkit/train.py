"""Training loop for SID sequence models: AdamW, linear warm-up then linear decay, early
stopping on validation Recall@10, best-checkpoint restore, deterministic with a seed, and
resumable: with a ``state`` file, an interrupted run (a crash, Ctrl-C, a time limit) continues
from its last finished epoch and ends bit-identical to an uninterrupted one.

Inputs are left-padded with 0. Batches are drawn from length buckets (shuffled pools of 64
batches sorted by length, batch order shuffled) and the all-padding leading columns of each
batch are cut, so short histories do not pay for the longest one."""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from ._arrays import as_int, device_arg
from .metrics import ranking_metrics

_F = TypeVar("_F", bound=Callable[..., Any])


def _own_rng(fn: _F) -> _F:
    """Runs ``fn`` (``device`` a keyword) in a fork of torch's global RNG (CPU, and the CUDA
    device it trains on): its seeding and dropout draws leave the caller's RNG as it was."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        dev = device_arg(kwargs.get("device", "cpu"))
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Paused(Exception):
    """Raised by :func:`fit` when its ``time_limit`` ran out before training ended: the
    ``state`` file holds everything needed to resume (call ``fit`` again with the same
    arguments). ``epochs_done``: epochs finished so far; ``state``: the file's path."""

    def __init__(self, epochs_done: int, state: str):
        super().__init__(f"training paused after epoch {epochs_done}; the state to resume from is in {state}")
        self.epochs_done, self.state = epochs_done, state


@_own_rng
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
    state: str | os.PathLike[str] | None = None,
    time_limit: float | None = None,
    ema: float | None = 0.0,
) -> list[dict[str, float]]:
    """Trains ``model`` (a module with ``forward(inputs, targets) -> loss`` and
    ``recommend(inputs, beam_width, top_k)``) on ``train`` examples (``.inputs``, ``.targets``);
    with ``valid`` examples, evaluates Recall@10 / NDCG@10 after every epoch, stops after
    ``patience`` epochs without improvement and restores the best weights. Returns the
    per-epoch history (loss, and validation metrics).

    ``amp``: bfloat16 autocast for the forward pass (default: on for CUDA devices, off on CPU;
    no loss scaling is needed with bfloat16). ``checkpoint``: a path where the best weights so
    far are saved (``torch.save`` of the state dict) after every improving epoch (without
    ``valid``: the weights after every epoch).
    ``schedule``: the learning rate after the linear warm-up (``warmup`` × all steps):
    ``"linear"`` decay to 0, ``"cosine"`` decay to 0, or ``"constant"`` (see :func:`lr_factor`).

    ``state``: a path where the whole training state (weights, optimizer, schedule, RNG
    states, history, best weights so far) is written after every epoch. If the file exists
    when ``fit`` starts, training resumes after its last epoch (a finished run just restores
    its best weights); the state must come from a call with the same arguments, model and
    data (else ``ValueError``), except ``patience``, which a resume may change (e.g. raise, so
    that a noisy validation curve does not stop a run before its learning rate has decayed).
    Resuming on the same device gives bit-identical weights (on CUDA, as far as its kernels
    are deterministic: ``fit`` does not turn on ``torch.use_deterministic_algorithms``).
    ``seed`` seeds the batch order and torch's global RNG, which dropout draws from, in a fork:
    the caller's global RNG state is the same after ``fit`` as before.
    A non-finite training loss (a diverged run) raises ``FloatingPointError`` before that step
    updates the weights; the state file keeps the last finished epoch.
    ``time_limit``: seconds this call may train (needs ``state``): when the next epoch would
    not fit in what is left (judged by the mean epoch so far), the state is saved and
    :class:`Paused` is raised; every call trains at least one epoch.
    Each history row also holds ``seconds``, that epoch's wall time (training + validation).

    ``ema``: the decay of an exponential moving average of the (float32) weights, updated
    after every optimizer step (``torch.optim.swa_utils.AveragedModel``; 0.999 averages over
    about the last 1,000 steps); 0 or None = off. The decay warms up as
    ``min(ema, (1 + n) / (10 + n))`` after n updates (:func:`ema_decay`), so early epochs are
    not scored on an average still full of the initial steps. With it, validation, early
    stopping, the ``checkpoint`` and the weights ``model`` ends with are the averaged ones;
    training itself is unchanged (the same steps, losses and random draws as without it).

    ``model`` is returned in eval mode."""
    from tqdm.auto import tqdm

    epochs, batch_size = as_int(epochs, "epochs", 1), as_int(batch_size, "batch_size", 1)
    patience, beam_width = as_int(patience, "patience", 1), as_int(beam_width, "beam_width", 1)
    for name, v, lo in (("lr", lr, "> 0"), ("weight_decay", weight_decay, ">= 0")):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
        if not np.isfinite(v) or (v <= 0 if lo == "> 0" else v < 0):
            raise ValueError(f"{name}: expected a finite number {lo}, got {v}")
    lr, weight_decay = float(lr), float(weight_decay)  # numpy scalars would not load from a state
    seed = as_int(seed, "seed")
    if time_limit is not None and state is None:
        raise ValueError("time_limit: needs a state path to pause to (state=None)")
    if time_limit is not None and not time_limit >= 0:
        raise ValueError(f"time_limit: expected seconds >= 0, got {time_limit}")
    ema = 0.0 if ema is None else ema
    if isinstance(ema, bool) or not isinstance(ema, (int, float, np.integer, np.floating)):
        raise TypeError(f"ema: expected a number, got {type(ema).__name__} {ema!r}")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema: expected a decay in [0, 1) (0 = off), got {ema}")
    ema = float(ema)
    started = time.perf_counter()
    dev = device_arg(device)
    use_amp = dev.type == "cuda" if amp is None else bool(amp)
    amp_device = dev.type
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    inputs = torch.as_tensor(train.inputs)
    targets = torch.as_tensor(train.targets)
    if len(inputs) != len(targets) or not len(inputs):
        raise ValueError(
            f"train: expected the same number (>= 1) of inputs and targets, got {len(inputs)} and {len(targets)}"
        )
    steps = epochs * max(1, -(-len(inputs) // batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    factor = lr_factor(schedule, steps, warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    averaged = None
    if ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        def warmed_up(averages: Any, current: Any, num_averaged: Any) -> None:
            get_ema_multi_avg_fn(ema_decay(ema, int(num_averaged)))(averages, current, num_averaged)

        averaged = AveragedModel(model, multi_avg_fn=warmed_up)
    scored: Any = model if averaged is None else averaged.module  # the weights validation reads
    history: list[dict[str, float]] = []
    best, best_state, bad, first, done = -1.0, None, 0, 0, False
    lengths = (inputs != 0).sum(1)
    same_shape = targets.shape == inputs.shape  # per-position targets (SASRec) are cut alike
    if state is not None:
        state = os.fspath(state)
        fingerprint = _fingerprint(
            model,
            train,
            valid,
            epochs,
            batch_size,
            lr,
            weight_decay,
            warmup,
            schedule,
            beam_width,
            seed,
            use_amp,
        )
        if ema:  # only when on: states written before `ema` existed stay resumable
            fingerprint["ema"] = ema
        if os.path.exists(state):
            saved = _load_state(state, fingerprint, dev)
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            if averaged is not None:
                averaged.load_state_dict(saved["ema"])
            gen.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            if saved["cuda_rng"] is not None and dev.type == "cuda":
                torch.cuda.set_rng_state(saved["cuda_rng"], dev)
            history, best, best_state, bad = saved["history"], saved["best"], saved["best_state"], saved["bad"]
            # Not the saved flag: a resume with a larger patience continues a run that stopped early.
            first = len(history)
            done = first >= epochs or (valid is not None and bad >= patience)
            if verbose:
                tqdm.write(f"resuming from {state}: {first} epoch(s) done" + (" (finished)" if done else ""))
    for epoch in range(first, epochs):
        if done:
            break
        t_epoch = time.perf_counter()
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
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"fit: the training loss is {value} at epoch {epoch} (0-based), learning rate "
                    f"{sched.get_last_lr()[0]:.3g}: training diverged; the model holds the weights before this step"
                    + (f" and {state} the last finished epoch" if state is not None else "")
                    + ". Try a lower lr, a longer warmup or amp off."
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += value * len(idx)
        row: dict[str, float] = {"epoch": epoch, "loss": total / max(len(inputs), 1)}
        if valid is not None:
            ranked = scored.recommend(valid.inputs, beam_width=beam_width, top_k=10)
            row.update(ranking_metrics(ranked, valid.items, ks=(5, 10)))
            if row["recall@10"] > best:
                best, best_state, bad = row["recall@10"], copy.deepcopy(scored.state_dict()), 0
                if checkpoint is not None:
                    from ._arrays import atomic_path

                    with atomic_path(checkpoint) as tmp:
                        torch.save(best_state, tmp)
            else:
                bad += 1
        elif checkpoint is not None:  # no validation: the latest weights are the ones to keep
            from ._arrays import atomic_path

            with atomic_path(checkpoint) as tmp:
                torch.save(scored.state_dict(), tmp)
        row["seconds"] = round(time.perf_counter() - t_epoch, 3)
        history.append(row)
        if verbose:
            tqdm.write("epoch " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{v}" for k, v in row.items()))
        done = (valid is not None and bad >= patience) or epoch + 1 == epochs
        if state is not None:
            _save_state(state, fingerprint, dev, model, opt, sched, gen, averaged, history, best, best_state, bad, done)
        if done:
            break
        if time_limit is not None:
            spent = time.perf_counter() - started
            per_epoch = sum(r["seconds"] for r in history[first:]) / (epoch + 1 - first)
            if spent + per_epoch > time_limit:
                raise Paused(epoch + 1, str(state))
    if best_state is not None:
        model.load_state_dict(best_state)
    elif averaged is not None:  # no validation: the model ends with the averaged weights
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    return history


def ema_decay(ema: float, updates: int) -> float:
    """The decay :func:`fit`'s weight average applies at its update number ``updates`` + 1
    (``updates`` done before it): ``min(ema, (1 + updates) / (10 + updates))``, the warm-up of
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` (0.18 at the second update,
    0.5 at the ninth, ``ema`` = 0.999 from about the 9,000th on). The first update copies the
    weights."""
    return min(ema, (1 + updates) / (10 + updates))


def _fingerprint(model: Any, train: Any, valid: Any, *settings: Any) -> dict[str, Any]:
    """What a state file must match to be resumed: the settings that shape training, the
    model's parameter names and shapes, a digest of its modules' settings (dropout, heads: the
    shapes alone do not tell them apart), and digests of the training and validation data."""

    def digest(*arrays: Any) -> str:
        h = hashlib.sha256()
        for a in arrays:
            a = np.ascontiguousarray(np.asarray(a))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()[:32]

    names = (
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup",
        "schedule",
        "beam_width",
        "seed",
        "amp",
    )
    # Plain Python values: a state loads with weights_only=True, which refuses numpy scalars.
    plain = [s.item() if isinstance(s, np.generic) else s for s in settings]
    return {
        **dict(zip(names, plain, strict=True)),
        "parameters": ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()),
        "model": _architecture(model),
        "train": digest(train.inputs, train.targets),
        "valid": None if valid is None else digest(valid.inputs, valid.items),
    }


def _architecture(model: Any) -> str:
    """A digest of every submodule's name, type and plain settings (``p``, ``num_heads``,
    ``eps``, ...; not ``training``, which the mode at call time sets)."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        plain = sorted(
            (k, v)
            for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str))
        )
        h.update(f"{name}:{type(module).__name__}:{plain!r};".encode())
    return h.hexdigest()[:32]


def _save_state(
    path: str,
    fingerprint: dict[str, Any],
    device: torch.device,
    model: Any,
    opt: Any,
    sched: Any,
    gen: Any,
    averaged: Any,
    *rest: Any,
) -> None:
    from ._arrays import atomic_path

    history, best, best_state, bad, done = rest
    blob = {
        "format": 1,
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        # The training device's CUDA RNG only: a list of every visible GPU's would not load
        # where fewer are visible.
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "history": history,
        "best": best,
        "best_state": best_state,
        "bad": bad,
        "done": done,
    }
    if averaged is not None:
        blob["ema"] = averaged.state_dict()
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_state(path: str, fingerprint: dict[str, Any], device: torch.device) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"state: {path} is not a readable sidkit training state: {e}") from e
    if not isinstance(saved, dict) or saved.get("format") != 1:
        raise ValueError(f"state: {path} is not a sidkit training state (format 1)")
    old = saved["fingerprint"]
    # States written before patience became resumable still hold it: it is no longer compared.
    keys = (set(old) | set(fingerprint)) - {"patience"}
    absent = {"ema": 0.0}  # set only when on: states from before it existed resume as off
    if "model" not in old:  # states before session 20 hold no architecture digest
        keys.discard("model")

    def value(fp: dict[str, Any], k: str) -> Any:
        return fp.get(k, absent.get(k))

    diff = sorted(k for k in keys if value(old, k) != value(fingerprint, k))
    if diff:
        shown = ", ".join(
            f"{k} ({value(old, k)!r} there, {value(fingerprint, k)!r} here)"
            if k not in ("parameters", "model", "train", "valid")
            else k
            for k in diff
        )
        raise ValueError(f"state: {path} was written by a different training run; differs in {shown}")
    # RNG states are CPU byte tensors whatever the device.
    saved["generator"] = saved["generator"].cpu()
    saved["torch_rng"] = saved["torch_rng"].cpu()
    cuda_rng = saved["cuda_rng"]
    if isinstance(cuda_rng, (list, tuple)):  # states before session 20: every visible GPU's
        index = device.index if device.type == "cuda" and device.index is not None else 0
        cuda_rng = cuda_rng[index] if device.type == "cuda" and index < len(cuda_rng) else None
    saved["cuda_rng"] = None if cuda_rng is None else cuda_rng.cpu()
    return dict(saved)


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


__all__ = ["Paused", "bucket_batches", "fit", "lr_factor", "trim_left_padding"]
