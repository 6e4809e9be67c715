"""TIGER (Rajput et al., 2023): a T5 encoder-decoder that reads a user's history as SID tokens
and generates the SID of the next item, decoded with sidkit's trie-constrained beam search.

Vocabulary: ``[pad=0, eos=1, user-bucket tokens..., SID tokens...]`` — the SID tokens come
from one :class:`~sidkit.TokenMap` (offset = 2 + user buckets), shared by the examples, the
model and the decoder.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._arrays import as_int, to_numpy
from ..collisions import SidTable
from ..decode import generate
from ..trie import TokenMap, Trie
from ._dropout import _FAST, _Dropout, draw_seed, use_fast_dropout
from ._eval import evaluates

PAD, EOS = 0, 1


@dataclass
class Examples:
    """Tokenised (history -> next item) pairs: ``inputs`` (M, max_history * L + 1) int64 padded
    on the left, ``targets`` (M, L) int64 SID tokens, ``items`` (M,) the next item ids."""

    inputs: np.ndarray
    targets: np.ndarray
    items: np.ndarray


def make_examples(
    histories: Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    table: SidTable,
    token_map: TokenMap,
    max_history: int = 20,
    users: Sequence[int] | np.ndarray | None = None,
    user_buckets: int = 0,
) -> Examples:
    """Tokenises histories of item ids (each item -> its SID tokens, oldest first, the last
    ``max_history`` items), left-padded, with an optional hashed user token first
    (``users``, integer ids, one per history: read only when ``user_buckets`` > 0)."""
    max_history = as_int(max_history, "max_history", 1)
    user_buckets = as_int(user_buckets, "user_buckets", 0)
    if token_map.offset < 2 + user_buckets:  # PAD, EOS, then the user tokens: SID tokens start after
        raise ValueError(
            f"token_map: expected offset >= 2 + user_buckets = {2 + user_buckets} "
            f"(PAD, EOS and the user tokens before the SID tokens), got {token_map.offset}"
        )
    items = np.asarray(to_numpy(targets, "targets") if not isinstance(targets, Sequence) else targets)
    if items.size and items.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer item ids, got dtype {items.dtype}")
    if items.ndim != 1:
        raise ValueError(f"targets: expected shape (B,), got {items.shape}")
    if len(targets) != len(histories):
        raise ValueError(f"targets: expected {len(histories)} targets (one per history), got {len(targets)}")
    if user_buckets and users is None:
        raise ValueError(f"users: expected one user per history with user_buckets = {user_buckets}, got None")
    if users is not None and user_buckets:  # without user buckets the users are not read
        u = np.asarray(to_numpy(users, "users") if not isinstance(users, Sequence) else users)
        if u.size and (u.dtype.kind not in "iu"):
            raise TypeError(f"users: expected integer user ids, got dtype {u.dtype}")
        if u.shape != (len(histories),):
            raise ValueError(f"users: expected {len(histories)} users (one per history), got shape {u.shape}")
        users = u
    levels = table.levels
    width = max_history * levels + 1
    inputs = np.zeros((len(histories), width), dtype=np.int64)
    for r, hist in enumerate(histories):
        hist = np.asarray(hist)[-max_history:]
        toks = token_map.to_tokens(table.sid(hist)).ravel() if len(hist) else np.zeros(0, np.int64)
        inputs[r, width - len(toks) :] = toks
        if user_buckets and users is not None:
            inputs[r, width - len(toks) - 1] = 2 + (hash(int(users[r])) % user_buckets)
    items = items.astype(np.int64)
    return Examples(inputs, token_map.to_tokens(table.sid(items)), items)


def sliding_window(train: Sequence[np.ndarray], min_history: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """Every prefix of every training sequence predicts its next item (TIGER/GRID's
    augmentation): returns (histories, targets); :func:`sliding_window_users` gives the
    sequence index of each example. ``min_history`` >= 1: the shortest history kept."""
    min_history = as_int(min_history, "min_history", 1)
    histories, targets = [], []
    for seq in train:
        for t in range(min_history, len(seq)):
            histories.append(seq[:t])
            targets.append(seq[t])
    return histories, np.asarray(targets, dtype=np.int64)


def sliding_window_users(train: Sequence[np.ndarray], min_history: int = 1) -> np.ndarray:
    """(M,) int64: for each example of ``sliding_window(train, min_history)``, in the same
    order, the index of the sequence (user) it comes from."""
    min_history = as_int(min_history, "min_history", 1)
    counts = [max(0, len(seq) - min_history) for seq in train]
    return np.repeat(np.arange(len(train), dtype=np.int64), counts)


class _DenseActDense(nn.Module):
    """T5's feed-forward block (``wo(dropout(act(wi(x))))``, same parameters and names) without
    its cast of the activations to ``wo``'s weight dtype (there for int8 checkpoints): under
    bfloat16 autocast that cast to float32 and autocast's cast back are four extra passes over
    the (B, T, d_ff) activations per layer and step (forward + backward of one block at
    256 x 40 tokens, d_ff 512, 2 CPU threads: 34.6 ms with them, 26.2 ms without). Same
    values: the cast to float32 and back is exact."""

    def __init__(self, block: Any) -> None:
        super().__init__()
        self.wi, self.wo, self.dropout, self.act = block.wi, block.wo, block.dropout, block.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.act(self.wi(x)))
        w = self.wo.weight
        if not torch.is_autocast_enabled(h.device.type) and h.dtype != w.dtype and w.dtype != torch.int8:
            h = h.to(w.dtype)  # outside autocast, as T5's block does (e.g. an fp16 T5 keeps wo in fp32)
        return self.wo(h)


def _lean_feed_forward(module: nn.Module) -> None:
    from transformers.models.t5.modeling_t5 import T5DenseActDense

    for name, child in list(module.named_children()):
        if type(child) is T5DenseActDense:
            setattr(module, name, _DenseActDense(child))
        else:
            _lean_feed_forward(child)


ATTENTION = "sidkit_t5"


def _t5_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """T5 attention (transformers' attention-interface signature, registered with SDPA's mask
    function) whose attention-probability dropout runs on sidkit's native kernel in CPU
    training: T5's eager arithmetic (``softmax(q k^T * scaling + position_bias + mask)``), then
    FastDropout's mask, then ``@ v``. torch's SDPA draws that mask with ``bernoulli_`` on
    upcast copies. Anything else (evaluation and decoding, p = 0, GPUs) is transformers' SDPA
    function with the same arguments: exactly what stock T5 runs."""
    if _shared_keys(query, key):
        return _beams_attend_once(query, key, value, attention_mask, scaling, position_bias)
    if not (module.training and dropout > 0.0 and query.device.type == "cpu"):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        return ALL_ATTENTION_FUNCTIONS["sdpa"](  # type: ignore[no-any-return]
            module,
            query,
            key,
            value,
            attention_mask,
            scaling=scaling,
            dropout=dropout,
            position_bias=position_bias,
            **kwargs,
        )
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        weights = weights + position_bias
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None:
        # SDPA's mask function leaves the mask out where SDPA's is_causal flag covers it (as
        # transformers' sdpa_attention_forward decides): the upper-left causal mask then.
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else causal
        if q_len > 1 and causal:
            attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:  # an additive float mask
            weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    if weights.dtype in _FAST and weights.layout == torch.strided:
        weights = _Dropout.apply(weights, dropout, draw_seed())
    else:
        weights = nn.functional.dropout(weights, p=dropout, training=True)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _shared_keys(query: torch.Tensor, key: torch.Tensor) -> bool:
    """Whether this is a decoding step's cross-attention with one key/value row per user and
    ``beam`` query rows per user (see :meth:`TIGER._cached_step`)."""
    b, users = query.shape[0], key.shape[0]
    return query.shape[2] == 1 and users < b and b % users == 0


def _beams_attend_once(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    position_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, None]:
    """Cross-attention of B·beam one-token queries (B·beam, H, 1, d) over B users' encoder
    keys/values (B, H, T, d), beams b·beam .. b·beam + beam - 1 belonging to user b: each user's
    beams become the query positions of one attention over that user's keys (no mask between
    queries: cross-attention is not causal). The same arithmetic as attending each beam to its
    own copy of the keys, without the copies (beam x the encoder's keys and values per layer)."""
    users, heads, d = key.shape[0], query.shape[1], query.shape[-1]
    beam = query.shape[0] // users
    q = query.reshape(users, beam, heads, d).transpose(1, 2)  # (B, H, beam, d)
    bias = position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend
            mask = torch.zeros(attention_mask.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill(~attention_mask, torch.finfo(q.dtype).min)
        else:
            mask = attention_mask
        bias = mask if bias is None else bias + mask
    out = nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=bias, scale=scaling)
    return out.transpose(1, 2).reshape(users * beam, 1, heads, d), None


def use_sidkit_attention(t5: Any) -> bool:
    """Switches a transformers T5 model to :func:`_t5_attention` (registered as
    ``"sidkit_t5"`` with SDPA's mask function). Returns whether it did: transformers versions
    whose T5 does not go through the attention interface (it moved there during 5.x) keep
    their own attention, and the model is left as it is."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
        from transformers.models.t5 import modeling_t5
    except ImportError:
        return False
    if not hasattr(modeling_t5, "eager_attention_forward") or not hasattr(t5, "set_attn_implementation"):
        return False
    if t5.config._attn_implementation != "sdpa":  # e.g. eager asked for explicitly: keep it
        return False
    # The function reads each attention module's `is_causal` (as transformers' SDPA path does):
    # a T5 without it (another version) keeps its own attention rather than guess.
    attentions = [m for m in t5.modules() if isinstance(m, modeling_t5.T5Attention)]
    if not attentions or not all(isinstance(getattr(m, "is_causal", None), bool) for m in attentions):
        return False
    AttentionInterface.register(ATTENTION, _t5_attention)
    # Without a registered mask function transformers builds no mask at all for a custom name.
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    t5.set_attn_implementation(ATTENTION)
    return bool(t5.config._attn_implementation == ATTENTION)


def _per_beam(x: torch.Tensor, beam_width: int) -> torch.Tensor:
    """Each row of ``x`` repeated ``beam_width`` times in a row, as a contiguous tensor (rows
    ``b * beam_width + j``): ``x.repeat_interleave(beam_width, 0)`` by one strided copy
    (repeat_interleave gathers through an index, several times slower on CPU)."""
    return x.unsqueeze(1).expand(x.shape[0], beam_width, *x.shape[1:]).reshape(-1, *x.shape[1:])


class TIGER(nn.Module):
    """T5 over SID tokens. Defaults are the TIGER paper's: 4 + 4 layers, d_model 128, 6 heads
    of 64, feed-forward 1024, dropout 0.1.

    Args:
        table: the SID table (its sizes define the token map).
        user_buckets: hashed user-id tokens (0 = none; GRID found them to hurt).
        seed: seed of the weight initialisation (the global torch RNG is left untouched).
    """

    def __init__(
        self,
        table: SidTable,
        d_model: int = 128,
        num_layers: int = 4,
        num_heads: int = 6,
        d_kv: int = 64,
        d_ff: int = 1024,
        dropout: float = 0.1,
        user_buckets: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        self.table = table
        self.user_buckets = user_buckets = as_int(user_buckets, "user_buckets", 0)
        self.token_map = TokenMap(table.sizes, offset=2 + user_buckets)
        self.trie = Trie.from_table(table)
        config = T5Config(  # type: ignore[call-arg]
            vocab_size=self.token_map.vocab_size,
            d_model=d_model,
            d_kv=d_kv,
            d_ff=d_ff,
            num_layers=num_layers,
            num_decoder_layers=num_layers,
            num_heads=num_heads,
            dropout_rate=dropout,
            decoder_start_token_id=PAD,
            pad_token_id=PAD,
            eos_token_id=EOS,
            feed_forward_proj="relu",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.t5 = T5ForConditionalGeneration(config)
        use_fast_dropout(self.t5)  # dropout masks were 37% of a CPU training step
        _lean_feed_forward(self.t5)
        # attention-probability dropout on the native kernel too (False: this transformers' T5
        # keeps its own attention, only slower on CPU)
        self.sidkit_attention = use_sidkit_attention(self.t5)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target SID tokens (B, L) given inputs (B, T)."""
        return self.t5(input_ids=inputs, attention_mask=inputs != PAD, labels=targets).loss

    @torch.no_grad()
    @evaluates
    def recommend(
        self,
        inputs: Any,
        beam_width: int = 20,
        top_k: int = 10,
        batch_size: int | None = None,
        kv_cache: bool = True,
    ) -> np.ndarray:
        """Top-k item ids (B, top_k) for tokenised inputs (B, T), by constrained beam search
        (only valid SIDs, hence only real items); -1 pads rows with fewer items.

        ``batch_size``: users decoded together (default: 256 on a GPU; on a CPU about 1,024
        beams, ``1024 // beam_width`` users, which keeps the per-step tensors small enough to
        reuse memory instead of faulting fresh pages: on one thread 1.7x faster than 256 users
        at beam 20, on two within noise of it).
        With ``kv_cache`` (default) each decoding step feeds only the newest token and reuses
        the decoder's self- and cross-attention keys/values (the cross-attention ones computed
        once per user), the self-attention ones reordered to follow the beams' parents;
        ``kv_cache=False`` re-runs the decoder over the whole prefix (same result up to float
        rounding)."""
        from ..train import trim_left_padding

        device = next(self.parameters()).device
        arr = np.asarray(to_numpy(inputs, "inputs"))
        if arr.dtype.kind not in "iu":
            raise TypeError(f"inputs: expected integer token ids, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise ValueError(f"inputs: expected shape (B, T) with T >= 1, got {arr.shape}")
        vocab = self.t5.config.vocab_size
        if arr.size and (arr.min() < 0 or arr.max() >= vocab):
            bad = int(arr.min() if arr.min() < 0 else arr.max())
            raise ValueError(f"inputs: expected token ids in [0, {vocab}), got {bad}")
        arr = arr.astype(np.int64, copy=False)  # torch's embedding takes int64 (or int32) only
        beam_width, top_k = as_int(beam_width, "beam_width", 1), as_int(top_k, "top_k", 1)
        if batch_size is None:
            batch_size = 256 if device.type == "cuda" else max(1, 1024 // beam_width)
        batch_size = as_int(batch_size, "batch_size", 1)
        # Similar lengths batch together and each batch drops its all-padding columns.
        order = np.argsort((arr != PAD).sum(1), kind="stable")
        out = np.full((len(arr), top_k), -1, dtype=np.int64)
        for s in range(0, len(arr), batch_size):
            rows = order[s : s + batch_size]
            chunk = torch.as_tensor(trim_left_padding(arr[rows]), device=device)
            enc = self.t5.get_encoder()(input_ids=chunk, attention_mask=chunk != PAD).last_hidden_state
            if kv_cache:
                step = self._cached_step(enc, chunk != PAD, beam_width)
            else:
                step = self._full_step(_per_beam(enc, beam_width), _per_beam(chunk != PAD, beam_width))
            items, _, _ = generate(step, self.trie, len(chunk), beam_width, top_k, token_map=self.token_map)
            out[rows] = items
        return out

    def _full_step(self, enc: torch.Tensor, mask: torch.Tensor) -> Any:
        device = enc.device

        def step(tokens: np.ndarray, parents: np.ndarray) -> torch.Tensor:
            dec = torch.as_tensor(np.concatenate([np.zeros((len(tokens), 1), np.int64), tokens], 1), device=device)
            logits = self.t5(
                encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=dec, use_cache=False
            ).logits[:, -1]
            return torch.log_softmax(logits.float(), -1).cpu()

        return step

    def _cached_step(self, enc: torch.Tensor, mask: torch.Tensor, beam_width: int) -> Any:
        """The step function of a KV-cached decode. ``enc`` (B, T, D) is one encoder output per
        user, ``mask`` (B, T) its padding mask.

        A user's beams share everything at the first step (one live beam) and their
        cross-attention keys/values always. So the first step runs the decoder once per user,
        B rows instead of B·beam: it projects the cross-attention keys/values once per user
        (beam_width times less work than projecting each beam's copy). Its cache is then
        expanded to the beams with ``reorder_cache`` (an index that repeats each user's row).
        Later steps reorder only the decoder's self-attention keys/values along the beams'
        parents. A parent is always a beam of the same user (:class:`~sidkit.BeamSearch`; a
        dead beam is its own parent), so the cross-attention rows never need to move."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        device, users = enc.device, len(enc)
        # transformers renamed the argument and output `past_key_values` to `cache` (5.2x;
        # the old name goes in 5.40): use whichever this version's T5 takes.
        key = "cache" if "cache" in inspect.signature(self.t5.forward).parameters else "past_key_values"
        state: dict[str, Any] = {}

        def run(enc: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, cache: Any) -> torch.Tensor:
            o = self.t5(
                encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=last, use_cache=True, **{key: cache}
            )
            state["cache"] = getattr(o, key)
            return torch.log_softmax(o.logits[:, -1].float(), -1)

        def step(tokens: np.ndarray, parents: np.ndarray) -> torch.Tensor:
            if tokens.shape[1] == 0:
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
                start = torch.zeros((users, 1), dtype=torch.long, device=device)
                logp = run(enc, mask, start, cache)
                per_beam = torch.arange(users, device=device).repeat_interleave(beam_width)
                if self.t5.config._attn_implementation == ATTENTION:
                    # The cross-attention keys/values stay one row per user: sidkit's attention
                    # function lets each user's beams attend to them at once.
                    state["cache"].self_attention_cache.reorder_cache(per_beam)
                    state["enc"], state["mask"] = enc, mask
                else:  # stock attention needs a copy per beam
                    state["cache"].reorder_cache(per_beam)  # self- and cross-attention, B -> B·beam rows
                    state["enc"], state["mask"] = _per_beam(enc, beam_width), _per_beam(mask, beam_width)
                return _per_beam(logp, beam_width).cpu()
            cache = state["cache"]
            getattr(cache, "self_attention_cache", cache).reorder_cache(torch.as_tensor(parents, device=device))
            last = torch.as_tensor(np.ascontiguousarray(tokens[:, -1:]), device=device)
            return run(state["enc"], state["mask"], last, cache).cpu()

        return step
