"""Collision resolution and the SID table: unique, stable semantic IDs, stored as Parquet.

``resolve(codes, method=...)`` turns raw RQ codes into a :class:`SidTable`:

- ``"suffix"`` (TIGER): one extra level numbering the items of each collision group 0, 1, 2, ...
  (by distance to the group's reconstruction when embeddings and codebooks are given, else by
  item id). The extra level's size is the largest group.
- ``"reassign"`` (fixed length; FORGE's KNN post-processing, LC-Rec's uniform mapping): keep the
  ``capacity`` items of each SID closest to its reconstruction and move every other item to the
  nearest last-level code under the same prefix with room, cheapest move first; an item whose
  ``candidates`` nearest codes are all full then takes, in row order, the cheaper of the
  nearest free code of its prefix past them and the nearest free code under the first other
  code of the level above (nearest first) with room.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _native
from ._arrays import (
    as_code_matrix,
    as_float_matrix,
    as_int,
    atomic_path,
    c_array,
    digest,
    level_sizes,
    require,
    to_int_numpy,
    to_numpy,
)
from .codebooks import Codebooks

FORMAT = "sidkit.sidtable/2"
#: Files written before the metadata was sealed with a SHA-256 (still read).
LEGACY_FORMAT = "sidkit.sidtable/1"
METHODS = (None, "suffix", "reassign")
_UNLIMITED = 2**63 - 1


def _check_metadata(meta: Any, where: str, source: str = "") -> None:
    """The ``sidkit`` metadata of a saved table: a dict of this format with its level sizes."""
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, LEGACY_FORMAT):
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{where}: expected format {FORMAT!r}, got {got!r}{source}")
    sizes, levels = meta.get("sizes"), meta.get("levels")
    if not isinstance(sizes, list) or not isinstance(levels, int) or len(sizes) != levels:
        raise ValueError(
            f"{where}: expected the level sizes ('sizes', a list of 'levels' ints) in the sidkit metadata, "
            f"got sizes={sizes!r}, levels={levels!r}{source}"
        )
    for key, kind in (("meta", dict), ("report", dict)):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise ValueError(f"{where}: expected {key!r} to be a JSON object, got {type(meta[key]).__name__}{source}")


def _table_digest(ids: np.ndarray, codes: np.ndarray, meta: Mapping[str, Any]) -> str:
    try:
        arrays = [np.asarray(ids, dtype="<i8"), np.asarray(codes, dtype="<u2")]
    except (ValueError, TypeError, OverflowError):  # unreadable arrays cannot match
        return ""
    return digest(arrays, meta)


def _json_safe(report: Mapping[str, Any]) -> dict[str, Any]:
    """A report as JSON: numpy scalars as Python numbers, arrays left out."""
    out: dict[str, Any] = {}
    for k, v in report.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
    return out


def _item_ids(item_ids: Any, n: int, name: str = "item_ids") -> np.ndarray:
    if item_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = to_int_numpy(item_ids, name)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {ids.dtype}")
    if ids.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match codes, got {ids.shape}")
    if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: expected values < 2**63, got {ids.max()}")
    if ids.dtype.kind == "i" and ids.size and ids.min() < 0:
        raise ValueError(f"{name}: expected ids >= 0 (-1 means 'no item' in results), got {ids.min()}")
    return c_array(ids, np.int64)


def _codes_u16(codes: Any, levels: int | None = None, name: str = "codes") -> np.ndarray:
    c = to_int_numpy(codes, name)
    if levels is None:
        if c.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array (N, L), got shape {c.shape}")
        levels = c.shape[1]
    c = as_code_matrix(c, levels, name)
    if c.dtype != np.uint16:
        if c.size and (c.min() < 0 or c.max() > 65535):
            bad = c.min() if c.min() < 0 else c.max()
            raise ValueError(f"{name}: expected codes in 0..65535, got {bad}")
        c = c.astype(np.uint16)
    return c


def _sizes(codes: np.ndarray, sizes: Any, codebooks: Codebooks | None) -> tuple[int, ...]:
    if sizes is None and codebooks is not None:
        sizes = codebooks.sizes
    if sizes is None:
        return tuple(int(m) + 1 for m in codes.max(0)) if len(codes) else (1,) * codes.shape[1]
    return level_sizes(sizes, "sizes", codes.shape[1])


def _quantization_cost(embeddings: Any, codebooks: Codebooks, codes: np.ndarray) -> np.ndarray:
    """Squared distance of each item's embedding to its reconstruction, (N,) float32."""
    x = as_float_matrix(embeddings, "embeddings", codebooks.dim)
    if len(x) != len(codes):
        raise ValueError(f"embeddings: expected {len(codes)} rows to match codes, got {len(x)}")
    if not (np.abs(x) <= 1e15).all():
        raise ValueError("embeddings: expected finite values within ±1e15, got NaN, inf or a larger value")
    diff = x - codebooks.decode(codes)
    return np.einsum("ij,ij->i", diff, diff, dtype=np.float64).astype(np.float32)


def resolve(
    codes: Any,
    method: str = "suffix",
    *,
    item_ids: Any = None,
    sizes: Any = None,
    embeddings: Any = None,
    codebooks: Codebooks | None = None,
    max_suffix: int | None = None,
    capacity: int = 1,
    order: str = "knn",
    candidates: int = 200,
    seed: int = 0,
) -> SidTable:
    """Makes SIDs unique (or at most ``capacity`` items per SID).

    Args:
        codes: (N, L) integer codes, e.g. from ``Codebooks.encode``.
        method: ``"suffix"`` (append a level numbering each collision group) or ``"reassign"``
            (fixed length: move colliding items to free last-level codes; needs embeddings
            and codebooks).
        item_ids: (N,) unique integer ids >= 0; default ``arange(N)``.
        sizes: codebook size per level; default ``codebooks.sizes`` or ``codes.max(0) + 1``.
        embeddings, codebooks: (N, D) embeddings and their codebooks. With them, items inside
            a group are ordered by distance to their reconstruction (closest first) instead of
            by item id, and ``reassign`` can measure move costs.
        max_suffix: ``"suffix"`` only: the largest size the suffix level may have, i.e. the
            largest collision group allowed (2: suffixes 0 and 1); a larger group raises, in
            ``SidTable.add`` too (the setting is kept in the table's ``report``).
        capacity: ``"reassign"`` only: items allowed per SID (FORGE uses 5).
        order: ``"reassign"``: ``"knn"`` (global greedy by added error) or ``"random"``.
        candidates: ``"reassign"``: nearest last-level codes each item tries in the
            cheapest-move-first pass (FORGE: 200); an item none of them has room for takes
            the cheaper of the rest of its prefix and the first other prefix with room.
        seed: seed of ``order="random"``.

    Returns:
        A :class:`SidTable`; its ``report`` says what was done: groups, colliding groups,
        largest group, items moved, mean added quantization error, unresolved items.
    """
    c = _codes_u16(codes)
    ids = None if item_ids is None else _item_ids(item_ids, len(c))
    # Limits past any N mean "no limit": the core takes them as 64-bit counts.
    if max_suffix is not None:
        max_suffix = min(as_int(max_suffix, "max_suffix", 1), _UNLIMITED)
    capacity = min(as_int(capacity, "capacity", 1), _UNLIMITED)
    candidates = min(as_int(candidates, "candidates", 1), _UNLIMITED)
    seed = as_int(seed, "seed", 0, 2**64 - 1)
    if order not in ("knn", "random"):
        raise ValueError(f"order: expected 'knn' or 'random', got {order!r}")
    if codebooks is not None and not isinstance(codebooks, Codebooks):
        raise TypeError(f"codebooks: expected a sidkit.Codebooks, got {type(codebooks).__name__}")
    k = _sizes(c, sizes, codebooks)
    if codebooks is not None and k != codebooks.sizes:
        raise ValueError(f"sizes: expected codebooks.sizes = {codebooks.sizes}, got {k}")
    if (embeddings is None) != (codebooks is None):
        raise ValueError("embeddings, codebooks: expected both or neither")
    if method == "suffix":
        cost = None if codebooks is None else _quantization_cost(embeddings, codebooks, c)
        try:
            out, groups, max_group, colliding = _native.suffix(c, list(k), ids, cost, max_suffix)
        except ValueError as e:
            if max_suffix is not None or not str(e).startswith("max_suffix:"):
                raise
            raise ValueError(  # the limit is the uint16 suffix level's, not an argument given
                f"codes: {str(e).split(', got ', 1)[-1]} share one SID, more than the 65536 values of the "
                "uint16 suffix level; use larger codebooks or more levels, or method='reassign'"
            ) from None
        report = {
            "method": "suffix",
            "items": len(c),
            "groups": groups,
            "colliding_groups": colliding,
            "max_group": max_group,
            "suffix_size": max(max_group, 1),
            "items_moved": 0,
            "mean_added_error": 0.0,
            "unresolved": 0,
        }
        if max_suffix is not None:  # kept for add(), which must respect it too
            report["max_suffix"] = max_suffix
        ids = np.arange(len(c), dtype=np.int64) if ids is None else ids
        return SidTable._trusted(ids, out, (*k, max(max_group, 1)), 1, "suffix", report)
    if method == "reassign":
        if codebooks is None:
            raise ValueError("embeddings, codebooks: method='reassign' needs both, to measure move costs")
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        x = as_float_matrix(embeddings, "embeddings", codebooks.dim)
        if len(x) != len(c):
            raise ValueError(f"embeddings: expected {len(c)} rows to match codes, got {len(x)}")
        ids = np.arange(len(c), dtype=np.int64) if ids is None else ids
        r = _native.reassign(codebooks.data, list(k), x, c, ids, capacity, candidates, order, seed)
        report = {**_reassign_report(r, len(c)), "candidates": candidates, "order": order, "seed": seed}
        if report["unresolved"]:
            stuck = ids[r["unresolved"][:5]].tolist()
            raise ValueError(
                f"codes: {report['unresolved']} items found no SID with room, neither under their own prefix "
                f"nor under the other codes of the level above (item ids {stuck}...); raise capacity, use "
                "larger codebooks, or use method='suffix'"
            )
        return SidTable._trusted(ids, r["codes"], k, capacity, "reassign", report)
    raise ValueError(f"method: expected 'suffix' or 'reassign', got {method!r}")


def _reassign_report(r: Mapping[str, Any], n: int) -> dict[str, Any]:
    moved = len(r["moved"])
    return {
        "method": "reassign",
        "items": n,
        "groups": r["groups"],
        "colliding_groups": r["colliding_groups"],
        "max_group": r["max_group"],
        "items_moved": moved,
        "mean_added_error": r["added_error"] / moved if moved else 0.0,
        "unresolved": len(r["unresolved"]),
        "unresolved_rows": r["unresolved"],
    }


def _sid_keys(codes: np.ndarray) -> np.ndarray:
    """One sortable, hashable scalar per code row: big-endian bytes as a void scalar."""
    be = np.ascontiguousarray(codes, dtype=">u2")
    return be.view(np.dtype((np.void, 2 * codes.shape[1]))).ravel()


class SidTable:
    """A bijection (or, with ``capacity > 1``, a C-to-1 map) between item ids and SIDs.

    Args:
        item_ids: (N,) unique integer ids >= 0 (-1 means "no item" in lookups).
        codes: (N, L) codes, each below its level's size.
        sizes: codebook size per level (default: ``codes.max(0) + 1``).
        capacity: items allowed per SID (1: every SID is unique).

    Attributes: ``item_ids`` (N,) int64, ``codes`` (N, L) uint16, ``sizes``, ``capacity``,
    ``method``, ``meta``, ``report`` (what ``resolve`` did; ``items`` counts the rows added
    since). Arrays are the table's own copies, read-only; all of it is saved.
    """

    def __init__(
        self,
        item_ids: Any,
        codes: Any,
        sizes: Any = None,
        *,
        capacity: int = 1,
        method: str | None = None,
        meta: Mapping[str, Any] | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        # Own copies: a caller's array (or the tensor it views) written later must not change
        # a validated table, and the caller's arrays stay writable.
        c = np.array(_codes_u16(codes), copy=True)
        ids = np.array(_item_ids(item_ids, len(c)), copy=True)
        k = _sizes(c, sizes, None)
        capacity = as_int(capacity, "capacity", 1)
        # Validates ranges and id uniqueness in Rust, and measures the largest SID group.
        _, _, max_group, _ = _native.group_ranks(c, list(k), ids, None)
        if max_group > capacity:
            raise ValueError(
                f"codes: expected at most {capacity} item(s) per SID, got a SID shared by {max_group} items; "
                "make them unique with sidkit.resolve(codes, ...) first"
            )
        for a in (c, ids):
            a.setflags(write=False)
        self.item_ids: np.ndarray = ids
        self.codes: np.ndarray = c
        self.sizes: tuple[int, ...] = k
        self.capacity = int(capacity)
        self.method = method
        self.meta: dict[str, Any] = dict(meta or {})
        self.report: dict[str, Any] = dict(report or {})
        self._by_id: np.ndarray | None = None
        self._by_sid: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def _trusted(
        cls,
        ids: np.ndarray,
        codes: np.ndarray,
        sizes: tuple[int, ...],
        capacity: int,
        method: str,
        report: dict[str, Any],
    ) -> SidTable:
        """A table from arrays the core just validated and resolved (skips re-checking them)."""
        table = cls.__new__(cls)
        ids = ids.copy()  # may be the caller's array; the codes are the core's new array
        for a in (codes, ids):
            a.setflags(write=False)
        table.item_ids, table.codes, table.sizes = ids, codes, tuple(sizes)
        table.capacity, table.method, table.meta, table.report = capacity, method, {}, report
        table._by_id = table._by_sid = None
        return table

    @property
    def levels(self) -> int:
        """Tokens per SID (the suffix level included)."""
        return len(self.sizes)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        for i, row in zip(self.item_ids.tolist(), self.codes.tolist(), strict=False):
            yield i, tuple(row)

    def __repr__(self) -> str:
        return f"SidTable({len(self):,} items, sizes={self.sizes}, capacity={self.capacity}, method={self.method!r})"

    def _id_index(self) -> np.ndarray:
        if self._by_id is None:
            self._by_id = np.argsort(self.item_ids, kind="stable")
        return self._by_id

    def _sid_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._by_sid is None:
            keys = _sid_keys(self.codes)
            order = np.argsort(keys, kind="stable")
            self._by_sid = (keys[order], order)
        return self._by_sid

    def rows(self, item_ids: Any) -> np.ndarray:
        """Row index of each item id (B,) int64; -1 for unknown ids."""
        q = to_int_numpy(item_ids, "item_ids")
        if q.dtype.kind not in "iu":
            raise TypeError(f"item_ids: expected an integer array, got dtype {q.dtype}")
        shape = q.shape
        q = q.ravel()
        # uint64 ids >= 2**63 are no int64 id: unknown, not wrapped to a negative one.
        beyond = q > np.iinfo(np.int64).max if q.dtype == np.uint64 else None
        q = q.astype(np.int64, copy=False)
        order = self._id_index()
        if not len(order):
            return np.full(shape, -1, dtype=np.int64)
        sorted_ids = self.item_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, q), len(order) - 1)
        rows = np.where(sorted_ids[pos] == q, order[pos], -1)
        if beyond is not None:
            rows[beyond] = -1
        return rows.reshape(shape)

    def sid(self, item_ids: Any) -> np.ndarray:
        """The (B, L) uint16 SIDs of (B,) item ids (ids of any shape are flattened to B);
        raises KeyError for unknown ids."""
        rows = self.rows(item_ids).ravel()
        if (rows < 0).any():
            missing = to_numpy(item_ids, "item_ids").ravel()[rows < 0][:5].tolist()
            raise KeyError(f"item_ids: not in the table: {missing}")
        return self.codes[rows]

    def items(self, codes: Any) -> np.ndarray:
        """Item ids of (B, L) SIDs: (B,) int64, -1 for unknown SIDs; with ``capacity > 1``,
        (B, capacity) with every item on the SID, padded with -1."""
        q = _codes_u16(codes, self.levels)
        sorted_keys, order = self._sid_index()
        keys = _sid_keys(q)
        lo = np.searchsorted(sorted_keys, keys, side="left")
        hi = np.searchsorted(sorted_keys, keys, side="right")
        if self.capacity == 1:
            if not len(order):
                return np.full(len(q), -1, dtype=np.int64)
            first = self.item_ids[order[np.minimum(lo, len(order) - 1)]]
            return np.where(hi > lo, first, -1)
        out = np.full((len(q), self.capacity), -1, dtype=np.int64)
        for slot in range(self.capacity):
            has = lo + slot < hi
            out[has, slot] = self.item_ids[order[lo[has] + slot]]
        return out

    def add(
        self,
        item_ids: Any,
        codes: Any,
        *,
        embeddings: Any = None,
        codebooks: Codebooks | None = None,
    ) -> SidTable:
        """Adds items, returning the grown table; every existing SID stays exactly as it was.

        ``codes`` are the new items' raw codes: for a ``"suffix"`` table, its levels without
        the suffix (a new item numbers after the items already in its group, and the suffix
        level grows when a group outgrows it); for a ``"reassign"`` table, all levels (a new
        item that lands on a full SID moves to a free code, which needs embeddings and
        codebooks). Adding an item id that already exists is an error.
        """
        base_levels = self.levels - 1 if self.method == "suffix" else self.levels
        c = _codes_u16(codes, base_levels)
        ids = _item_ids(item_ids, len(c))
        if (embeddings is None) != (codebooks is None):
            raise ValueError("embeddings, codebooks: expected both or neither")
        if codebooks is not None:
            if not isinstance(codebooks, Codebooks):
                raise TypeError(f"codebooks: expected a sidkit.Codebooks, got {type(codebooks).__name__}")
            if codebooks.sizes != self.sizes[:base_levels]:
                raise ValueError(
                    f"codebooks: expected sizes {self.sizes[:base_levels]} (the table's levels), got {codebooks.sizes}"
                )
        clash = np.intersect1d(ids, self.item_ids)
        if len(clash):
            raise ValueError(f"item_ids: expected new ids, got ids already in the table: {clash[:5].tolist()}")
        all_ids = np.concatenate([self.item_ids, ids])
        if self.method == "suffix":
            base = self.codes[:, :-1]
            k = self.sizes[:-1]
            cost = None if codebooks is None else _quantization_cost(embeddings, codebooks, c)
            rank, *_ = _native.group_ranks(c, list(k), ids, cost)
            # A new item numbers after every existing item of its group.
            existing_keys = np.sort(_sid_keys(base))
            new_keys = _sid_keys(c)
            already = np.searchsorted(existing_keys, new_keys, "right") - np.searchsorted(
                existing_keys, new_keys, "left"
            )
            suffix = already + rank.astype(np.int64)
            if suffix.size and suffix.max() > 65535:
                raise ValueError("codes: a collision group outgrew 65,536 items; use method='reassign'")
            limit = self.report.get("max_suffix")
            if limit is not None and suffix.size and suffix.max() >= int(limit):
                worst = int(np.argmax(suffix))
                raise ValueError(
                    f"codes: item id {int(ids[worst])} would take suffix {int(suffix[worst])}, past the "
                    f"table's max_suffix = {int(limit)} (its resolve setting); resolve again with a larger one"
                )
            new = np.hstack([c, suffix.astype(np.uint16)[:, None]])
            sizes = (*k, max(self.sizes[-1], int(suffix.max()) + 1 if suffix.size else 1))
            all_codes = np.concatenate([self.codes, new])
        elif self.method == "reassign":
            if codebooks is None or embeddings is None:
                raise ValueError("embeddings, codebooks: adding to a 'reassign' table needs both for the new items")
            x_new = as_float_matrix(embeddings, "embeddings", codebooks.dim)
            if len(x_new) != len(c):
                raise ValueError(f"embeddings: expected {len(c)} rows to match codes, got {len(x_new)}")
            bad = ~(np.abs(x_new) <= 1e15)  # NaN too; checked here so the index is the caller's
            if bad.any():
                at = np.unravel_index(int(np.argmax(bad)), x_new.shape)
                got = f"{float(x_new[at])!r} at {tuple(map(int, at))}"
                raise ValueError(f"embeddings: expected finite values within ±1e15, got {got}")
            # Existing rows are fixed: they are decoded back for a placeholder embedding.
            x = np.concatenate([codebooks.decode(self.codes), x_new])
            fixed = np.concatenate([np.ones(len(self), np.uint8), np.zeros(len(c), np.uint8)])
            all_in = np.concatenate([self.codes, c])
            # The settings the table was resolved with (FORGE's defaults for a table without them).
            rep = self.report
            candidates, order, seed = (
                int(rep.get("candidates", 200)),
                str(rep.get("order", "knn")),
                int(rep.get("seed", 0)),
            )
            r = _native.reassign(
                codebooks.data, list(self.sizes), x, all_in, all_ids, self.capacity, candidates, order, seed, fixed
            )
            if len(r["unresolved"]):
                raise ValueError(
                    f"codes: {len(r['unresolved'])} new items found no SID with room, neither under their own "
                    "prefix nor under the other codes of the level above"
                )
            sizes, all_codes = self.sizes, r["codes"]
        else:
            sizes, all_codes = self.sizes, np.concatenate([self.codes, c])
        report = {**self.report, "items": len(all_ids), "added": int(self.report.get("added", 0)) + len(ids)}
        return SidTable(
            all_ids, all_codes, sizes, capacity=self.capacity, method=self.method, meta=self.meta, report=report
        )

    # --- persistence -------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        meta = {
            "format": FORMAT,
            "levels": self.levels,
            "sizes": list(self.sizes),
            "capacity": self.capacity,
            "method": self.method,
            "sidkit_version": _native.__version__,
            "meta": self.meta,
            "report": _json_safe(self.report),
        }
        meta["sha256"] = _table_digest(self.item_ids, self.codes, meta)
        return meta

    @staticmethod
    def _check_digest(ids: np.ndarray, codes: np.ndarray, meta: dict[str, Any], where: str, source: str) -> None:
        """A saved table of the current format must match its SHA-256 (arrays and metadata):
        Parquet's page checksums do not cover the schema metadata that holds the level sizes."""
        if meta["format"] == FORMAT and meta.get("sha256") != _table_digest(ids, codes, meta):
            raise ValueError(f"{where}: a damaged {FORMAT!r} table: it does not match its SHA-256{source}")

    @classmethod
    def _from_metadata(cls, ids: np.ndarray, codes: np.ndarray, meta: dict[str, Any]) -> SidTable:
        return cls(
            ids,
            codes,
            meta["sizes"],
            capacity=meta.get("capacity", 1),
            method=meta.get("method"),
            meta=meta.get("meta"),
            report=meta.get("report"),
        )

    def to_arrow(self) -> Any:
        """A ``pyarrow.Table``: ``item_id`` int64 and ``sid`` fixed_size_list<uint16>[L] (both
        zero-copy views of this table's arrays), with the metadata under the ``sidkit`` key."""
        pa = require("pyarrow", "SidTable.to_arrow")

        sid = pa.FixedSizeListArray.from_arrays(pa.array(self.codes.ravel()), self.levels)
        schema = pa.schema(
            [pa.field("item_id", pa.int64()), pa.field("sid", sid.type)],
            metadata={"sidkit": json.dumps(self._metadata())},
        )
        return pa.Table.from_arrays([pa.array(self.item_ids), sid], schema=schema)

    @classmethod
    def from_arrow(cls, table: Any) -> SidTable:
        """Reads a table written by :meth:`to_arrow`: ``item_id`` and ``sid`` columns and the
        ``sidkit`` schema metadata (which holds the level sizes)."""
        return cls._from_arrow(table, verify=False)

    @classmethod
    def _from_arrow(cls, table: Any, verify: bool, source: str = "") -> SidTable:
        pa = require("pyarrow", "SidTable.from_arrow")

        names = set(table.column_names)
        for col in ("item_id", "sid"):
            if col not in names:
                raise ValueError(f"table: expected a column {col!r}, got columns {sorted(names)}")
        raw = (table.schema.metadata or {}).get(b"sidkit")
        if raw is None:
            raise ValueError("table: expected sidkit metadata (key 'sidkit') in the schema, found none")
        try:
            meta = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"table: the sidkit metadata is not valid JSON: {e}") from e
        _check_metadata(meta, "table")
        sid = table.column("sid").combine_chunks()
        if not pa.types.is_fixed_size_list(sid.type) or sid.type.list_size != meta["levels"]:
            raise ValueError(f"sid: expected fixed_size_list<uint16>[{meta['levels']}], got {sid.type}")
        if sid.null_count or sid.flatten().null_count:
            raise ValueError(f"sid: expected a SID in every row, got {sid.null_count or 'some'} missing")
        codes = sid.flatten().to_numpy(zero_copy_only=False).reshape(-1, meta["levels"])
        ids = table.column("item_id").to_numpy()
        if verify:
            cls._check_digest(ids, codes, meta, "path", source)
        return cls._from_metadata(ids, codes, meta)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the table atomically: ``.parquet`` as :meth:`to_parquet` (needs pyarrow),
        anything else as ``.npz`` with ``item_ids`` (N,) int64, ``codes`` (N, L) uint16 and the
        JSON metadata (``meta``), readable with plain ``numpy.load`` and no sidkit."""
        if Path(path).suffix.lower() == ".parquet":
            self.to_parquet(path)
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, item_ids=self.item_ids, codes=self.codes, meta=np.array(json.dumps(self._metadata())))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SidTable:
        """Reads a file written by :meth:`save` (``.parquet`` or ``.npz``)."""
        if Path(path).suffix.lower() == ".parquet":
            return cls.from_parquet(path)
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError(f"an .npz archive, found a single array of shape {np.shape(f)}")
            with f:  # zip CRCs catch a damaged member
                ids, codes, meta = f["item_ids"], f["codes"], json.loads(str(f["meta"]))
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged zip raises BadZipFile, EOFError, RuntimeError, ...
            raise ValueError(f"path: expected a sidkit SID table ({FORMAT}), could not read {path}: {e!r}") from e
        _check_metadata(meta, "path", f" in {path}")
        if codes.ndim != 2 or codes.shape[1] != meta.get("levels"):
            raise ValueError(f"codes: expected (N, {meta.get('levels')}) in {path}, got shape {codes.shape}")
        cls._check_digest(ids, codes, meta, "path", f" in {path}")
        return cls._from_metadata(ids, codes, meta)

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """Writes the table as Parquet (see :meth:`to_arrow` for the schema), atomically."""
        pq = require("pyarrow.parquet", "SidTable.to_parquet")

        with atomic_path(path) as tmp:  # page checksums: a damaged file fails to load
            pq.write_table(self.to_arrow(), tmp, write_page_checksum=True)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str]) -> SidTable:
        """Reads a table written by :meth:`to_parquet`."""
        pa, pq = require("pyarrow", "SidTable.from_parquet"), require("pyarrow.parquet", "SidTable.from_parquet")

        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"path: expected a Parquet file, could not read {path}: {e}") from e
        return cls._from_arrow(table, verify=True, source=f" in {path}")
