"""Drop-in constrained decoding for Hugging Face ``transformers`` ``generate()``.

``transformers`` stays optional: only this module imports it (lazily, at call time), and the
processor itself is a plain callable with the ``LogitsProcessor`` signature.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    ``eos_token_id`` is allowed; if it is None, the processor leaves the scores of those
    later steps unchanged.

    Args:
        trie: the valid SIDs.
        token_map: the token ids of SID codes in the model's vocabulary.
        start: position in ``input_ids`` where the SID begins (``input_ids`` must be at least
            this long at every call).
        eos_token_id: the token (or tokens, as in a ``generation_config`` list) that must
            follow a complete SID, if any.
    """

    def __init__(
        self, trie: Trie, token_map: TokenMap, start: int = 1, eos_token_id: int | Sequence[int] | None = None
    ) -> None:
        if not isinstance(trie, Trie) or not isinstance(token_map, TokenMap):
            raise TypeError(
                f"trie, token_map: expected a sidkit.Trie and a sidkit.TokenMap, got "
                f"{type(trie).__name__} and {type(token_map).__name__}"
            )
        if token_map.sizes != trie.sizes:
            raise ValueError(f"token_map: expected sizes {trie.sizes} (the trie's), got {token_map.sizes}")
        start = as_int(start, "start", 0)
        eos: tuple[int, ...] = ()
        if eos_token_id is not None:
            ids = list(eos_token_id) if isinstance(eos_token_id, Sequence) else [eos_token_id]
            eos = tuple(as_int(e, "eos_token_id", 0) for e in ids)
            if not eos:
                raise ValueError("eos_token_id: expected a token id or a non-empty list of them, got []")
            sid_tokens = range(token_map.offset, token_map.vocab_size)
            inside = [e for e in eos if e in sid_tokens]
            if inside:
                raise ValueError(
                    f"eos_token_id: expected a token outside the SID tokens [{sid_tokens.start}, {sid_tokens.stop}), "
                    f"got {inside[0]}"
                )
        self.trie, self.token_map, self.start = trie, token_map, start
        self.eos_token_id = eos_token_id
        self._eos = eos

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
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids: expected integer token ids, got dtype {input_ids.dtype}")
        if input_ids.shape[1] < self.start:
            raise ValueError(
                f"input_ids: expected at least start = {self.start} columns (the SID begins there), "
                f"got {input_ids.shape[1]}"
            )
        generated = input_ids[:, self.start :]
        t = generated.shape[1]
        vocab = scores.shape[-1]
        if vocab < self.token_map.vocab_size:
            raise ValueError(f"scores: expected at least {self.token_map.vocab_size} columns, got {vocab}")
        if self._eos and max(self._eos) >= vocab:
            raise ValueError(f"eos_token_id: expected < the {vocab} score columns, got {max(self._eos)}")
        if t >= self.trie.depth:
            if not self._eos:
                return scores  # the SID is complete; without an eos what follows is the model's
            allowed = torch.zeros_like(scores, dtype=torch.bool)
            allowed[:, list(self._eos)] = True
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
