"""Shared helpers of the compare_*.py scripts: timing, and the plain KV-cached step peer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The best wall time of ``repeat`` calls, and the last call's result."""
    out, best = None, float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def plain_cache_step(t5: Any, enc: Any, mask: Any = None) -> Callable[[Any, Any], Any]:
    """A ``sidkit.generate`` step function around a Hugging Face T5 with its KV cache used the
    plain way (the whole cache reordered along the beams' parents every step): ``enc``
    (B·beam, T, D) is the encoder output already repeated per beam, ``mask`` its padding mask."""
    import inspect

    import numpy as np
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    # transformers renamed `past_key_values` to `cache` (5.2x): use whichever this version takes.
    key = "cache" if "cache" in inspect.signature(t5.forward).parameters else "past_key_values"
    state = {"cache": EncoderDecoderCache(DynamicCache(), DynamicCache())}

    def step(tokens: Any, parents: Any) -> Any:
        cache = state["cache"]
        if tokens.shape[1] == 0:
            last = torch.zeros((len(tokens), 1), dtype=torch.long)
        else:
            cache.reorder_cache(torch.as_tensor(parents))
            last = torch.as_tensor(np.ascontiguousarray(tokens[:, -1:]))
        o = t5(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=last, use_cache=True, **{key: cache})
        state["cache"] = getattr(o, key)
        return torch.log_softmax(o.logits[:, -1].float(), -1)

    return step
