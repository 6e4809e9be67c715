"""Drop-in constrained decoding for Hugging Face ``transformers`` ``generate()``.

``transformers`` stays optional: only this module imports it (lazily, at call time), and the
processor itself is a plain callable with the ``LogitsProcessor`` signature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_int
from .trie import TokenMap, Trie


class SidLogitsProcessor:
    """Masks every token that would not continue a valid SID.

    Use it in ``model.generate(..., logits_processor=LogitsProcessorList([proc]))`` with
    encoder-decoder models (T5: ``start=1``, after the decoder start token) or decoder-only
    models where the SID follows a prompt (``start`` = the prompt length). Each call walks all
    beams' generated suffixes through the trie in one batched Rust call and writes -inf with
    vectorised torch ops — no Python loop over beams. With scores on a GPU the mask is built
    on that device (:meth:`Trie.mask_torch`). After the last SID level only
    ``eos_token_id`` is allowed (or nothing changes if it is None).

    Args:
        trie: the valid SIDs.
        token_map: the token ids of SID codes in the model's vocabulary.
        start: position in ``input_ids`` where the SID begins.
        eos_token_id: the token that must follow a complete SID, if any.
    """

    def __init__(self, trie: Trie, token_map: TokenMap, start: int = 1, eos_token_id: int | None = None) -> None:
        if not isinstance(trie, Trie) or not isinstance(token_map, TokenMap):
            raise TypeError(
                f"trie, token_map: expected a sidkit.Trie and a sidkit.TokenMap, got "
                f"{type(trie).__name__} and {type(token_map).__name__}"
            )
        if token_map.sizes != trie.sizes:
            raise ValueError(f"token_map: expected sizes {trie.sizes} (the trie's), got {token_map.sizes}")
        start = as_int(start, "start", 0)
        if eos_token_id is not None:
            eos_token_id = as_int(eos_token_id, "eos_token_id", 0)
            sid_tokens = range(token_map.offset, token_map.vocab_size)
            if eos_token_id in sid_tokens:
                raise ValueError(
                    f"eos_token_id: expected a token outside the SID tokens [{sid_tokens.start}, {sid_tokens.stop}), "
                    f"got {eos_token_id}"
                )
        self.trie, self.token_map, self.start, self.eos_token_id = trie, token_map, start, eos_token_id

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not isinstance(input_ids, torch.Tensor) or not isinstance(scores, torch.Tensor):
            raise TypeError(
                f"input_ids, scores: expected torch tensors, got {type(input_ids).__name__} and {type(scores).__name__}"
            )
        if input_ids.ndim != 2 or scores.ndim != 2 or len(input_ids) != len(scores):
            raise ValueError(
                f"input_ids, scores: expected (B, T) and (B, V), got {tuple(input_ids.shape)} and {tuple(scores.shape)}"
            )
        generated = input_ids[:, self.start :]
        t = generated.shape[1]
        vocab = scores.shape[-1]
        if vocab < self.token_map.vocab_size:
            raise ValueError(f"scores: expected at least {self.token_map.vocab_size} columns, got {vocab}")
        if self.eos_token_id is not None and self.eos_token_id >= vocab:
            raise ValueError(f"eos_token_id: expected < the {vocab} score columns, got {self.eos_token_id}")
        if t >= self.trie.depth:
            allowed = torch.zeros_like(scores, dtype=torch.bool)
            if self.eos_token_id is not None:
                allowed[:, self.eos_token_id] = True
            return scores.masked_fill(~allowed, float("-inf"))
        tokens = generated.detach().cpu().numpy().astype(np.int64)
        codes = tokens - np.array(self.token_map.starts[:t], dtype=np.int64)
        ok = np.asarray(((codes >= 0) & (codes < np.array(self.token_map.sizes[:t]))).all(1))
        nodes = self.trie.walk(np.where(ok[:, None], codes, 0)) if t else np.zeros(len(tokens), np.int64)
        nodes = np.where(ok, nodes, -1)  # a beam off the trie gets no allowed token
        if scores.device.type != "cpu":
            # GPU logits: only the node ids travel; the mask is built there from CSR arrays
            # copied to the device once.
            node_t = torch.from_numpy(np.ascontiguousarray(nodes)).to(scores.device, non_blocking=True)
            allowed = self.trie.mask_torch(node_t, vocab, self.token_map.starts[t])
        else:
            mask = self.trie._native.mask(np.ascontiguousarray(nodes), vocab, self.token_map.starts[t])
            allowed = torch.from_numpy(mask)
        return scores.masked_fill(~allowed, float("-inf"))


def logits_processor_list(trie: Trie, token_map: TokenMap, **kwargs: Any) -> Any:
    """A ``transformers.LogitsProcessorList`` holding one :class:`SidLogitsProcessor`."""
    from transformers import LogitsProcessorList

    return LogitsProcessorList([SidLogitsProcessor(trie, token_map, **kwargs)])
