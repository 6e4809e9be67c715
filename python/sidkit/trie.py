"""The token map and the prefix trie of valid SIDs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _native
from ._arrays import as_int, atomic_path, c_array, level_sizes, to_int_numpy
from .collisions import SidTable, _codes_u16, _item_ids, _sizes

TRIE_FORMAT = "sidkit.trie/1"


class TokenMap:
    """The one mapping between (level, code) and model token ids.

    Token of code ``c`` at level ``l`` is ``offset + sum(sizes[:l]) + c``: the first
    ``offset`` ids are the model's special tokens (pad, eos, ...), then each level's codes.

    Args:
        sizes: codebook size per level (e.g. ``table.sizes``).
        offset: number of special tokens before the first SID token.
    """

    def __init__(self, sizes: Sequence[int], offset: int = 0) -> None:
        if isinstance(sizes, (set, frozenset, dict)):  # no order: which size is which level?
            raise TypeError(f"sizes: expected a sequence of ints (one per level), got a {type(sizes).__name__}")
        self.sizes = level_sizes(sizes)
        self.offset = as_int(offset, "offset", 0, 2**62)  # token ids stay int64
        self.starts = tuple(self.offset + int(s) for s in np.concatenate(([0], np.cumsum(self.sizes)[:-1])))

    @property
    def levels(self) -> int:
        """Number of levels mapped."""
        return len(self.sizes)

    @property
    def vocab_size(self) -> int:
        """Special tokens plus every level's codes."""
        return self.offset + sum(self.sizes)

    def to_tokens(self, codes: Any) -> np.ndarray:
        """(N, t) codes of the first t levels -> (N, t) int64 token ids."""
        c = to_int_numpy(codes, "codes")
        if c.dtype.kind not in "iu":
            raise TypeError(f"codes: expected integer codes, got dtype {c.dtype}")
        if c.ndim != 2 or c.shape[1] > self.levels:
            raise ValueError(f"codes: expected an (N, t <= {self.levels}) array, got shape {c.shape}")
        c = c.astype(np.int64)
        t = c.shape[1]
        if c.size and ((c < 0).any() or (c >= np.array(self.sizes[:t])).any()):
            raise ValueError(f"codes: expected codes below the level sizes {self.sizes[:t]}")
        return c + np.array(self.starts[:t], dtype=np.int64)

    def to_codes(self, tokens: Any) -> np.ndarray:
        """(N, t) token ids of the first t levels -> (N, t) uint16 codes; raises on a token
        that is not a code of its level."""
        tok = to_int_numpy(tokens, "tokens")
        if tok.dtype.kind not in "iu":
            raise TypeError(f"tokens: expected integer token ids, got dtype {tok.dtype}")
        if tok.ndim != 2 or tok.shape[1] > self.levels:
            raise ValueError(f"tokens: expected an (N, t <= {self.levels}) array, got shape {tok.shape}")
        t = tok.shape[1]
        c = tok.astype(np.int64) - np.array(self.starts[:t], dtype=np.int64)
        if c.size and ((c < 0).any() or (c >= np.array(self.sizes[:t])).any()):
            raise ValueError(
                f"tokens: expected level l's tokens in [starts[l], starts[l] + sizes[l]), starts {self.starts[:t]}"
            )
        return c.astype(np.uint16)

    def __repr__(self) -> str:
        return f"TokenMap(sizes={self.sizes}, offset={self.offset}, vocab_size={self.vocab_size})"


class Trie:
    """A compact prefix trie of valid SIDs, built in Rust (sorted CSR arrays per depth).

    ``Trie(codes, item_ids)`` or ``Trie(table)`` (= ``Trie.from_table(table)``). Node 0 is the
    root; every navigation call is batched and takes/returns int64 node ids, -1 meaning "no node".

    Args:
        codes: (N, L) integer SIDs, or a :class:`SidTable` (then no other argument).
        item_ids: (N,) int64; default ``arange(N)``.
        sizes: codebook size per level; default ``codes.max(0) + 1``.
        allow_duplicates: keep several items on one SID instead of raising.
    """

    def __init__(self, codes: Any, item_ids: Any = None, sizes: Any = None, allow_duplicates: bool = False) -> None:
        if not isinstance(allow_duplicates, (bool, np.bool_)):
            raise TypeError(f"allow_duplicates: expected a bool, got {type(allow_duplicates).__name__}")
        if isinstance(codes, SidTable):
            given = [n for n, v in (("item_ids", item_ids), ("sizes", sizes)) if v is not None]
            if given or allow_duplicates:
                raise ValueError(
                    f"{', '.join(given) or 'allow_duplicates'}: expected none with a SidTable (it holds its item ids, "
                    "sizes and capacity)"
                )
            codes, item_ids, sizes, allow_duplicates = codes.codes, codes.item_ids, codes.sizes, codes.capacity > 1
        c = _codes_u16(codes)
        ids = _item_ids(item_ids, len(c))
        k = _sizes(c, sizes, None)
        try:
            self._native = _native.Trie(c, list(k), ids, allow_duplicates)
        except ValueError as e:
            if "share a SID" in str(e):
                raise ValueError(f"{e}; sidkit.resolve(codes, ...) makes SIDs unique") from None
            raise

    @classmethod
    def from_table(cls, table: SidTable) -> Trie:
        """The trie of a :class:`SidTable`'s SIDs (all of its levels)."""
        if not isinstance(table, SidTable):
            raise TypeError(f"table: expected a sidkit.SidTable, got {type(table).__name__}")
        return cls(table)

    @property
    def depth(self) -> int:
        """Tokens per SID (levels of the trie)."""
        return self._native.depth

    @property
    def sizes(self) -> tuple[int, ...]:
        """Codebook size per level."""
        return tuple(self._native.sizes)

    @property
    def num_nodes(self) -> int:
        """Nodes of the trie, the root included."""
        return self._native.num_nodes

    @property
    def nbytes(self) -> int:
        """Memory held by the trie's arrays, in bytes."""
        return self._native.nbytes

    def __len__(self) -> int:
        """Number of distinct SIDs."""
        return self._native.num_leaves

    def __repr__(self) -> str:
        return f"Trie({len(self):,} SIDs, depth {self.depth}, {self.num_nodes:,} nodes)"

    # A trie is immutable: copies share it (``copy.deepcopy`` of a model that holds one, as
    # ``torch.optim.swa_utils.AveragedModel`` makes), and pickling rebuilds it from its SIDs.
    def __copy__(self) -> Trie:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Trie:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        codes, items = self.sids()
        return (type(self), (codes, items, list(self.sizes), self._native.num_items != len(self)))

    def sids(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (SID, item) pair of the trie: codes (M, L) uint16 in lexicographic order and
        item ids (M,) int64 (a SID with several items, under ``allow_duplicates``, repeats)."""
        nodes = np.zeros(1, dtype=np.int64)
        paths = np.zeros((1, 0), dtype=np.uint16)
        for _ in range(self.depth):
            offsets, codes, children = self.children(nodes)
            paths = np.concatenate([np.repeat(paths, np.diff(offsets), axis=0), codes[:, None]], 1)
            nodes = children
        offsets, items = self._native.leaf_items()
        return np.repeat(paths, np.diff(offsets), axis=0), items

    def save(self, path: str | Path) -> None:
        """Writes the trie's SIDs and item ids to ``path`` (.npz, atomically); :meth:`load`
        rebuilds the trie from them (about 0.1 s per million SIDs)."""
        codes, items = self.sids()
        dups = self._native.num_items != len(self)
        meta = {"format": TRIE_FORMAT, "sizes": list(self.sizes), "allow_duplicates": dups}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, codes=codes, item_ids=items, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> Trie:
        """A trie written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"codes", "item_ids", "meta"} - set(z.files)
                if missing:
                    raise ValueError(f"missing {sorted(missing)}")
                meta = json.loads(str(z["meta"]))
                codes, item_ids = z["codes"], z["item_ids"]
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged zip raises BadZipFile, EOFError, RuntimeError, ...
            # A .npy is no archive (TypeError/AttributeError), pickled or damaged data (ValueError).
            raise ValueError(f"path: {path} is not a readable {TRIE_FORMAT!r} file ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != TRIE_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else meta
            raise ValueError(f"path: expected format {TRIE_FORMAT!r}, got {got!r}")
        if "sizes" not in meta or "allow_duplicates" not in meta:
            raise ValueError(f"path: {path} is a damaged {TRIE_FORMAT!r} file (no sizes or allow_duplicates)")
        if not isinstance(meta["allow_duplicates"], bool):
            raise ValueError(
                f"path: {path} is a damaged {TRIE_FORMAT!r} file (allow_duplicates: expected true or false, "
                f"got {meta['allow_duplicates']!r})"
            )
        return cls(codes, item_ids, meta["sizes"], allow_duplicates=meta["allow_duplicates"])

    def lookup(self, codes: Any) -> np.ndarray:
        """Item id of each full SID (B, L): (B,) int64, -1 where the SID is not in the trie
        (under ``allow_duplicates``, the lowest of the SID's items; :meth:`items_of` lists all)."""
        c, bad = self._query(codes, exact=True)
        out = self._native.lookup(c)
        out[bad] = -1
        return out

    def items_of(self, sid: Any) -> np.ndarray:
        """Every item on one full SID (L,), ascending int64 (empty if the SID is not in the trie)."""
        c = to_int_numpy(sid, "sid")
        if c.ndim != 1:
            raise ValueError(f"sid: expected one SID of shape ({self.depth},), got shape {c.shape}")
        (node,) = self.lookup(c[None, :])  # checks dtype, length and range
        if node < 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.asarray(self._native.items_of(c.astype(np.int64).tolist()), dtype=np.int64))

    def contains(self, codes: Any) -> np.ndarray:
        """Whether each full SID (B, L) is in the trie: (B,) bool."""
        return self.lookup(codes) >= 0

    def walk(self, prefixes: Any) -> np.ndarray:
        """Node reached by each prefix (B, t), t <= depth: (B,) int64, -1 where invalid."""
        c, bad = self._query(prefixes, exact=False)
        out = self._native.walk(c)
        out[bad] = -1
        return out

    def children(self, node_ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Children of (B,) nodes as CSR: offsets (B + 1,) int64, codes uint16 and child node
        ids int64 (children of ``node_ids[i]`` are ``[offsets[i], offsets[i + 1])``)."""
        return self._native.children(self._nodes(node_ids))

    def child(self, node_ids: Any, codes: Any) -> np.ndarray:
        """The child of each node with the matching code: (B,) int64, -1 where none."""
        nodes = self._nodes(node_ids)
        c = to_int_numpy(codes, "codes")
        if c.dtype.kind not in "iu":
            raise TypeError(f"codes: expected integers, got dtype {c.dtype}")
        return self._native.child(nodes, c_array(c.ravel(), np.int64))

    def mask(self, node_ids: Any, vocab: int | None = None, token_map: TokenMap | None = None, out: Any = None) -> Any:
        """Allowed next tokens of (B,) nodes as a (B, V) bool mask.

        Without ``token_map``, columns are the codes of the next level (V = ``vocab`` or the
        largest level size). With one, columns are token ids (V = ``vocab``, at least
        ``token_map.vocab_size``, which is the default) and the nodes must all sit at one
        depth. ``out``: a (B, V) bool torch tensor to fill (on any device) instead of
        returning a new numpy array.
        """
        nodes = self._nodes(node_ids)
        offset = 0
        if token_map is not None:
            if not isinstance(token_map, TokenMap):
                raise TypeError(f"token_map: expected a sidkit.TokenMap, got {type(token_map).__name__}")
            if token_map.sizes != self.sizes:
                raise ValueError(f"token_map: expected sizes {self.sizes} (the trie's), got {token_map.sizes}")
            live = nodes[nodes >= 0]
            if len(live) and (live.max() >= self.num_nodes):
                raise ValueError(f"node_ids: expected node ids in [-1, {self.num_nodes}), got {int(live.max())}")
            depths = np.unique(np.searchsorted(self._depth_starts(), live, side="right") - 1)
            if len(depths) > 1:
                raise ValueError(
                    f"node_ids: expected nodes of one depth with a token_map, got depths {depths.tolist()}"
                )
            level = int(depths[0]) if len(depths) else 0
            offset = token_map.starts[min(level, token_map.levels - 1)]
            if vocab is None:
                vocab = token_map.vocab_size
            elif as_int(vocab, "vocab", 1) < token_map.vocab_size:
                raise ValueError(f"vocab: expected >= token_map.vocab_size = {token_map.vocab_size}, got {vocab}")
        vocab = max(self.sizes) if vocab is None else as_int(vocab, "vocab", 1)
        if out is not None:
            torch = _torch_out(out, (len(nodes), vocab))
            if out.device.type != "cpu":
                out.copy_(self.mask_torch(torch.from_numpy(nodes).to(out.device), vocab, offset))
                return out
        m = self._native.mask(nodes, vocab, offset)
        if out is None:
            return m
        out.copy_(torch.from_numpy(m))
        return out

    def mask_torch(self, node_ids: Any, vocab: int, offset: int = 0) -> Any:
        """The (B, V) bool mask of allowed next columns (``offset`` + child code) of (B,) node
        ids (a torch int64 tensor; -1 = none allowed), built on the tensor's device from the
        trie's CSR arrays, copied there once per device (for GPU logits: only the node ids
        cross the bus)."""
        import torch

        nodes = torch.as_tensor(node_ids)
        if nodes.dtype.is_floating_point or nodes.dtype.is_complex or nodes.dtype == torch.bool:
            raise TypeError(f"node_ids: expected integer node ids, got dtype {nodes.dtype}")
        nodes = nodes.long().ravel()
        vocab, offset = as_int(vocab, "vocab", 1), as_int(offset, "offset", 0)
        device = nodes.device
        offsets, codes = self._device_csr(device)
        if len(nodes):  # as mask(): an id that is no node is an error, not an empty row
            lo, hi = (int(v) for v in torch.aminmax(nodes))
            if lo < -1 or hi >= len(offsets) - 1:
                bad = lo if lo < -1 else hi
                raise ValueError(
                    f"node_ids: expected node ids in [-1, {len(offsets) - 1}) (-1 = none allowed), got {bad}"
                )
        valid = nodes >= 0
        safe = torch.where(valid, nodes, torch.zeros_like(nodes))
        start = offsets[safe]
        count = torch.where(valid, offsets[safe + 1] - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=device), count)
        first = torch.cumsum(count, 0) - count  # where each row's children begin in `rows`
        pos = start[rows] + torch.arange(len(rows), device=device) - first[rows]
        allowed = torch.zeros((len(nodes), vocab), dtype=torch.bool, device=device)
        cols = codes[pos] + offset
        if len(cols) and int(cols.max()) >= vocab:  # as mask(): a child beyond the columns is an error
            raise ValueError(f"vocab: expected more than offset + code = {int(cols.max())} tokens, got {vocab}")
        allowed[rows, cols] = True
        return allowed

    def _device_csr(self, device: Any) -> tuple[Any, Any]:
        import torch

        cache = self.__dict__.setdefault("_csr_by_device", {})
        key = str(device)
        if key not in cache:
            offsets, codes, _ = self.children(np.arange(self.num_nodes, dtype=np.int64))
            cache[key] = (
                torch.from_numpy(offsets.astype(np.int64)).to(device),
                torch.from_numpy(codes.astype(np.int64)).to(device),
            )
        return cache[key]

    def _depth_starts(self) -> np.ndarray:
        # Nodes are numbered depth by depth: a node's depth is where its id falls in these.
        if not hasattr(self, "_starts"):
            # Walk the leftmost path: the first node of each depth is the first child of the
            # first node of the depth above.
            starts, v = [0], np.array([0])
            for _ in range(self.depth):
                offsets, _, ids = self.children(v)
                starts.append(int(ids[0]) if len(ids) else starts[-1] + 1)
                v = ids[:1]
            self._starts = np.array(starts)
        return self._starts

    def _query(self, codes: Any, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        """Codes as uint16, and the rows holding a code no SID can have (negative, > 65535)."""
        c = to_int_numpy(codes, "codes" if exact else "prefixes")
        if c.ndim != 2:
            raise ValueError(f"{'codes' if exact else 'prefixes'}: expected a 2-D array (B, t), got shape {c.shape}")
        if exact and c.shape[1] != self.depth:
            raise ValueError(f"codes: expected shape (B, {self.depth}), got {c.shape}")
        if c.dtype.kind not in "iu":
            raise TypeError(f"{'codes' if exact else 'prefixes'}: expected integers, got dtype {c.dtype}")
        out_of_range = (c < 0) | (c > 65535)
        bad = np.asarray(out_of_range.any(1))
        c = np.where(out_of_range, 0, c)
        return c_array(c, np.uint16), bad

    def _nodes(self, node_ids: Any) -> np.ndarray:
        n = to_int_numpy(node_ids, "node_ids")
        if n.dtype.kind not in "iu":
            raise TypeError(f"node_ids: expected integers, got dtype {n.dtype}")
        if n.dtype.kind == "u" and n.dtype.itemsize == 8 and n.size and n.max() > np.iinfo(np.int64).max:
            # would wrap to a negative id, read as "no node"
            raise ValueError(f"node_ids: expected -1..{self.num_nodes - 1}, got {n.max()}")
        return c_array(n.ravel(), np.int64)


__all__ = ["TokenMap", "Trie"]


def _torch_out(out: Any, shape: tuple[int, int]) -> Any:
    """Checks ``out`` is a (B, V) bool torch tensor; returns the torch module."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a bool torch.Tensor, got {type(out).__name__} (without out: a numpy mask)")
    if out.dtype != torch.bool or tuple(out.shape) != shape:
        raise ValueError(f"out: expected a bool tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    if out.device.type == "meta":
        raise ValueError("out: expected a tensor with storage, got one on the meta device")
    if any(st == 0 and n > 1 for st, n in zip(out.stride(), out.shape, strict=True)):
        raise ValueError(f"out: expected a tensor whose elements do not overlap, got strides {tuple(out.stride())}")
    return torch
