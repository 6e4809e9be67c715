"""Collision resolution and the SID table, against numpy/pandas references and properties."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sidkit as sk
from hypothesis import given, settings
from hypothesis import strategies as st


def cumcount_reference(codes: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Number items inside groups of equal rows by ascending order_key (numpy only)."""
    order = np.lexsort((order_key, *codes.T[::-1]))
    sorted_codes = codes[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (sorted_codes[1:] != sorted_codes[:-1]).any(1)
    starts = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    out = np.empty(len(order), np.int64)
    out[order] = np.arange(len(order)) - starts
    return out


@pytest.fixture
def collided(rng):
    """Many items on few SIDs: (codes, item ids in shuffled order)."""
    codes = rng.integers(0, 4, size=(3000, 3)).astype(np.uint16)
    ids = rng.permutation(10_000)[:3000].astype(np.int64)
    return codes, ids


def test_suffix_numbers_like_cumcount(collided):
    codes, ids = collided
    table = sk.resolve(codes, item_ids=ids, sizes=(4, 4, 4))
    assert table.codes.shape == (3000, 4) and table.sizes[:3] == (4, 4, 4)
    np.testing.assert_array_equal(table.codes[:, :3], codes)
    np.testing.assert_array_equal(table.codes[:, 3], cumcount_reference(codes, ids))
    assert len(np.unique(table.codes, axis=0)) == 3000
    assert table.sizes[3] == table.report["max_group"] == table.codes[:, 3].max() + 1


def test_suffix_matches_pandas_groupby_cumcount(collided):
    pd = pytest.importorskip("pandas")
    codes, ids = collided
    df = pd.DataFrame({"a": codes[:, 0], "b": codes[:, 1], "c": codes[:, 2], "id": ids}).sort_values("id")
    df["suffix"] = df.groupby(["a", "b", "c"]).cumcount()
    want = df.sort_index()["suffix"].to_numpy()
    np.testing.assert_array_equal(sk.resolve(codes, item_ids=ids).codes[:, 3], want)


def test_suffix_orders_by_distance_with_embeddings(rng):
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    cb = sk.RQKMeans(2, 6, iters=5, verbose=False).fit(x)
    codes = cb.encode(x)
    table = sk.resolve(codes, embeddings=x, codebooks=cb)
    dist = ((x - cb.decode(codes)) ** 2).sum(1)
    np.testing.assert_array_equal(table.codes[:, 2], cumcount_reference(codes, dist))


def test_suffix_never_wraps_around():
    with pytest.raises(ValueError, match="codes: a group of 70000 items share one SID, more than the 65536 values"):
        sk.resolve(np.zeros((70_000, 2), np.uint16), sizes=(4, 4))


def test_max_suffix(collided):
    codes, ids = collided
    with pytest.raises(ValueError, match="max_suffix: expected every collision group to fit in 3"):
        sk.resolve(codes, item_ids=ids, max_suffix=3)


def test_max_suffix_holds_for_added_items_and_survives_save(tmp_path):
    # Two items on SID (1, 2), one on (0, 0): max_suffix 3 allows a third on (1, 2), not a fourth.
    codes = np.array([[1, 2], [0, 0], [1, 2]], np.uint16)
    table = sk.resolve(codes, sizes=(4, 4), item_ids=[10, 11, 12], max_suffix=3)
    assert table.report["max_suffix"] == 3 and table.sizes == (4, 4, 2)
    grown = table.add([13, 14], np.array([[1, 2], [0, 0]], np.uint16))
    assert grown.sid([13, 14]).tolist() == [[1, 2, 2], [0, 0, 1]]
    for suffix in (".npz", ".parquet"):
        grown.save(tmp_path / f"t{suffix}")
        loaded = sk.SidTable.load(tmp_path / f"t{suffix}")
        with pytest.raises(ValueError, match="item id 15 would take suffix 3, past the table's max_suffix = 3"):
            loaded.add([15], np.array([[1, 2]], np.uint16))
    # Without the setting, the suffix level grows.
    assert sk.resolve(codes, sizes=(4, 4)).add([5, 6], np.array([[1, 2]] * 2, np.uint16)).sizes == (4, 4, 4)


@pytest.fixture
def fitted(rng):
    x = rng.standard_normal((3000, 12)).astype(np.float32)
    cb = sk.RQKMeans(3, 32, iters=5, verbose=False).fit(x)
    return x, cb, cb.encode(x)


@pytest.mark.parametrize("capacity", [1, 2, 5])
def test_reassign_properties(fitted, capacity):
    x, cb, codes = fitted
    table = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=capacity)
    out = table.codes.astype(np.int64)
    _, counts = np.unique(out, axis=0, return_counts=True)
    assert counts.max() <= capacity
    # Items whose SID had room never move.
    _, inverse, group = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    roomy = group[inverse.ravel()] <= capacity
    np.testing.assert_array_equal(out[roomy], codes[roomy])
    moved = (out != codes).any(1)
    assert moved.sum() == table.report["items_moved"] and table.report["unresolved"] == 0
    # The closest `capacity` items of every group stay.
    dist = ((x - cb.decode(codes)) ** 2).sum(1)
    rank = cumcount_reference(codes.astype(np.int64), dist)
    assert not moved[rank < capacity].any()
    # Moves change the last level only (unless escalated to the level above).
    assert moved.any() or capacity > 1
    if moved.any():
        assert (out[moved, :2] == codes[moved, :2]).all(1).mean() > 0.9
        # The added error is the real increase in quantization error.
        new_dist = ((x - cb.decode(table.codes)) ** 2).sum(1)
        assert table.report["mean_added_error"] == pytest.approx((new_dist - dist)[moved].mean(), rel=1e-3)


def test_reassign_moves_to_nearest_free_code_hand_worked():
    # One prefix, last level codes at 0, 1, 2, 10 on a line; three items on code 0.
    cbs = [np.array([[0.0]], np.float32), np.array([[0.0], [1.0], [2.0], [10.0]], np.float32)]
    cb = sk.Codebooks(cbs)
    x = np.array([[0.1], [0.9], [-0.2]], np.float32)
    codes = np.zeros((3, 2), np.uint16)  # all forced onto (0, 0)
    table = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb)
    # Item 0 (0.1) is closest to code 0 and stays; 0.9 moves to 1 (cost 0.01); -0.2 then
    # finds 1 taken and goes to 2.
    np.testing.assert_array_equal(table.codes[:, 1], [0, 1, 2])


@pytest.mark.parametrize("capacity", [1, 2])
def test_reassign_knn_equals_the_sorted_pairs_greedy(capacity):
    """order='knn' is the global cheapest-move-first greedy: all (mover, candidate code) pairs
    of a prefix sorted by (added error, item id, code), each taken while its code has room.
    Integer data make every distance exact; crowded codes send movers deep into their lists."""
    rng = np.random.default_rng(7)
    k0, k1, per_prefix = 4, 32, 30 * capacity
    cb = sk.Codebooks(
        [rng.integers(-8, 9, (k0, 2)).astype(np.float32), rng.integers(-8, 9, (k1, 2)).astype(np.float32)]
    )
    n = k0 * per_prefix
    x = rng.integers(-8, 9, (n, 2)).astype(np.float32)
    codes = np.stack([np.repeat(np.arange(k0), per_prefix), rng.integers(0, 3, n)], 1).astype(np.uint16)
    ids = rng.permutation(n).astype(np.int64) + 100
    table = sk.resolve(codes, "reassign", item_ids=ids, embeddings=x, codebooks=cb, capacity=capacity)

    c0, c1 = cb.level(0).astype(np.float64), cb.level(1).astype(np.float64)
    resid = x - c0[codes[:, 0]]
    cost = ((resid - c1[codes[:, 1]]) ** 2).sum(1)
    want = codes.copy()
    for prefix in range(k0):
        rows = np.flatnonzero(codes[:, 0] == prefix)
        taken = np.zeros(k1, int)
        movers = []
        for r in sorted(rows, key=lambda r: (codes[r, 1], cost[r], ids[r])):  # keepers: best of each SID
            if taken[codes[r, 1]] < capacity:
                taken[codes[r, 1]] += 1
            else:
                movers.append(r)
        pairs = sorted((((resid[r] - c1[j]) ** 2).sum() - cost[r], ids[r], j, r) for r in movers for j in range(k1))
        placed = set()
        for _, _, j, r in pairs:
            if r not in placed and taken[j] < capacity:
                taken[j] += 1
                placed.add(r)
                want[r, 1] = j
        assert placed == set(movers)  # room for all: no escalation in this test
    np.testing.assert_array_equal(table.codes, want)
    deep = [(((resid[r] - c1) ** 2).sum(1) < ((resid[r] - c1[want[r, 1]]) ** 2).sum()).sum() for r in range(n)]
    assert max(deep) >= 8  # some item took a code past the 8 nearest (past the sorted head)


def test_reassign_escalates_to_the_level_above():
    cbs = [np.array([[0.0], [100.0]], np.float32), np.array([[0.0], [1.0]], np.float32)]
    cb = sk.Codebooks(cbs)
    x = np.array([[0.0], [1.0], [0.5]], np.float32)
    codes = np.array([[0, 0], [0, 1], [0, 0]], np.uint16)  # prefix 0 has 2 slots, 3 items
    table = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb)
    assert len(np.unique(table.codes, axis=0)) == 3
    assert table.codes[2, 0] == 1  # the third item went to the other prefix


def test_reassign_fills_its_own_prefix_before_escalating():
    # candidates=1: each mover's one candidate (code 0) is taken, yet its own prefix has free
    # codes; they come before a far prefix (added error ~0.05, not ~10,000).
    cb = sk.Codebooks([np.array([[0.0], [100.0]], np.float32), np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)])
    x = np.array([[0.0], [0.1], [0.2]], np.float32)
    codes = np.zeros((3, 2), np.uint16)
    for candidates in (1, 2, 200):
        table = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, candidates=candidates)
        assert (table.codes[:, 0] == 0).all() and len(np.unique(table.codes, axis=0)) == 3, candidates
        assert table.report["mean_added_error"] < 5, candidates
    # Row order in escalation: item 1 takes code 1, item 2 code 2.
    assert sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, candidates=1).codes.tolist() == [
        [0, 0],
        [0, 1],
        [0, 2],
    ]


def test_reassign_reports_impossible_cases(fitted):
    x, cb, _ = fitted
    codes = np.zeros((3000, 3), np.uint16)
    small = sk.Codebooks([cb.level(0)[:2], cb.level(1)[:2], cb.level(2)[:2]])
    with pytest.raises(ValueError, match="items found no SID with room"):
        sk.resolve(codes, "reassign", embeddings=x, codebooks=small)


def test_reassign_random_order_is_seeded(fitted):
    x, cb, codes = fitted
    a = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, order="random", seed=1)
    b = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, order="random", seed=1)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert len(np.unique(a.codes, axis=0)) == len(a)


@pytest.mark.parametrize("threads", [1, 2])
def test_resolution_is_thread_count_independent(fitted, threads):
    x, cb, codes = fitted
    sk.set_num_threads(1)
    want = [sk.resolve(codes).codes, sk.resolve(codes, "reassign", embeddings=x, codebooks=cb).codes]
    sk.set_num_threads(threads)
    got = [sk.resolve(codes).codes, sk.resolve(codes, "reassign", embeddings=x, codebooks=cb).codes]
    for g, w in zip(got, want, strict=False):
        np.testing.assert_array_equal(g, w)


def test_lookups_both_ways(collided):
    codes, ids = collided
    table = sk.resolve(codes, item_ids=ids)
    np.testing.assert_array_equal(table.sid(ids[::7]), table.codes[::7])
    np.testing.assert_array_equal(table.items(table.codes), ids)
    assert table.items(np.array([[3, 3, 3, 60000]])).tolist() == [-1]
    assert table.rows(np.array([-5, ids[3]])).tolist() == [-1, 3]
    with pytest.raises(KeyError, match="item_ids: not in the table"):
        table.sid([123456789])
    assert len(table) == 3000 and next(iter(table)) == (int(ids[0]), tuple(int(v) for v in table.codes[0]))


def test_capacity_tables_return_every_item(fitted):
    x, cb, codes = fitted
    table = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=3)
    found = table.items(table.codes)
    assert found.shape == (len(table), 3)
    assert all(i in row for i, row in zip(table.item_ids, found, strict=False))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.integers(0, 2**32 - 1))
def test_add_keeps_existing_sids(batches, seed):
    rng = np.random.default_rng(seed)
    n0 = 50
    codes = rng.integers(0, 3, size=(n0, 2))
    table = sk.resolve(codes, sizes=(3, 3))
    next_id = n0
    for b in batches:
        before = table.codes.copy()
        new_codes = rng.integers(0, 3, size=(b, 2))
        table = table.add(np.arange(next_id, next_id + b), new_codes)
        next_id += b
        np.testing.assert_array_equal(table.codes[: len(before)], before)
        assert len(np.unique(table.codes, axis=0)) == len(table)
        np.testing.assert_array_equal(table.codes[len(before) :, :2], new_codes)
        assert table.sizes[-1] == table.codes[:, -1].max() + 1


def test_add_to_reassign_table_keeps_existing_sids(fitted, rng):
    x, cb, codes = fitted
    table = sk.resolve(codes[:2000], "reassign", embeddings=x[:2000], codebooks=cb, item_ids=np.arange(2000))
    grown = table.add(np.arange(2000, 3000), codes[2000:], embeddings=x[2000:], codebooks=cb)
    np.testing.assert_array_equal(grown.codes[:2000], table.codes)
    assert len(np.unique(grown.codes, axis=0)) == 3000


def test_add_uses_the_tables_resolve_settings(rng):
    # Crowded SIDs (3000 items, 512 SIDs of capacity 8): new items compete for free codes, so
    # the move order decides who goes where.
    x = rng.standard_normal((3000, 12)).astype(np.float32)
    cb = sk.RQKMeans(3, 8, iters=5, verbose=False).fit(x)
    codes = cb.encode(x)
    base = sk.resolve(codes[:2000], "reassign", embeddings=x[:2000], codebooks=cb, capacity=8, candidates=50)
    assert {k: base.report[k] for k in ("candidates", "order", "seed")} == {"candidates": 50, "order": "knn", "seed": 0}
    new = {}
    for order, seed in (("knn", 0), ("random", 1), ("random", 2)):
        report = {**base.report, "order": order, "seed": seed}
        t = sk.SidTable(base.item_ids, base.codes, base.sizes, capacity=8, method="reassign", report=report)
        grown = t.add(np.arange(2000, 3000), codes[2000:], embeddings=x[2000:], codebooks=cb)
        np.testing.assert_array_equal(grown.codes[:2000], base.codes)
        assert np.unique(grown.codes, axis=0, return_counts=True)[1].max() <= 8
        new[(order, seed)] = grown.codes[2000:]
    # The same existing SIDs; the new items placed in the table's own move order and seed.
    assert not np.array_equal(new[("random", 1)], new[("random", 2)])
    assert not np.array_equal(new[("knn", 0)], new[("random", 1)])


def test_add_rejects_existing_ids(collided):
    codes, ids = collided
    table = sk.resolve(codes, item_ids=ids)
    with pytest.raises(ValueError, match="item_ids: expected new ids"):
        table.add(ids[:2], codes[:2])


def test_parquet_round_trip_and_plain_readers(collided, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    codes, ids = collided
    table = sk.resolve(codes, item_ids=ids)
    path = tmp_path / "sids.parquet"
    table.to_parquet(path)
    assert not list(tmp_path.glob(".*tmp"))
    back = sk.SidTable.from_parquet(path)
    np.testing.assert_array_equal(back.codes, table.codes)
    np.testing.assert_array_equal(back.item_ids, table.item_ids)
    assert back.sizes == table.sizes and back.method == "suffix"
    plain = pq.read_table(path)  # readable without sidkit
    assert plain.schema.field("sid").type == pa.list_(pa.uint16(), 4)
    assert plain.column("item_id").to_pylist()[:3] == ids[:3].tolist()


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_save_load_round_trip(collided, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    codes, ids = collided
    table = sk.resolve(codes, item_ids=ids)
    table.meta["source"] = "test"
    table.save(tmp_path / f"sids{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [f"sids{suffix}"]  # atomic: no temporary left
    back = sk.SidTable.load(tmp_path / f"sids{suffix}")
    np.testing.assert_array_equal(back.codes, table.codes)
    np.testing.assert_array_equal(back.item_ids, table.item_ids)
    assert (back.sizes, back.method, back.capacity, back.meta) == (table.sizes, "suffix", 1, {"source": "test"})
    np.testing.assert_array_equal(back.items(table.codes[:50]), ids[:50])
    if suffix == ".npz":  # readable with plain numpy
        with np.load(tmp_path / "sids.npz") as f:
            np.testing.assert_array_equal(f["codes"], table.codes)
            assert f["codes"].dtype == np.uint16 and f["item_ids"].dtype == np.int64


def test_save_load_keeps_capacity_and_rejects_foreign_npz(tmp_path):
    table = sk.SidTable([5, 6, 7], [[0, 1], [0, 1], [1, 0]], (2, 2), capacity=2, method="reassign")
    table.save(tmp_path / "t.npz")
    back = sk.SidTable.load(tmp_path / "t.npz")
    assert back.capacity == 2 and back.items([[0, 1]]).tolist() == [[5, 6]]
    np.savez(tmp_path / "a.npz", codes=np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError, match="path: expected a sidkit SID table"):
        sk.SidTable.load(tmp_path / "a.npz")
    np.savez(
        tmp_path / "b.npz", item_ids=np.arange(2), codes=np.zeros((2, 2), np.uint16), meta=np.array('{"format": "x"}')
    )
    with pytest.raises(ValueError, match="path: expected format"):
        sk.SidTable.load(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="path: expected a sidkit SID table"):
        sk.SidTable.load(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError):
        sk.SidTable.load(tmp_path / "missing.npz")
    np.save(tmp_path / "codes.npy", np.zeros((2, 2), np.uint16))  # one array, not a table
    with pytest.raises(ValueError, match="path: expected a sidkit SID table .* found a single array of shape"):
        sk.SidTable.load(tmp_path / "codes.npy")
    np.savez(
        tmp_path / "d.npz",
        item_ids=np.arange(2),
        codes=np.zeros((2, 2), np.uint16),
        meta=np.array('{"format": "sidkit.sidtable/1"}'),
    )
    with pytest.raises(ValueError, match=r"path: expected the level sizes \('sizes', a list"):
        sk.SidTable.load(tmp_path / "d.npz")


def test_foreign_parquet_files_are_rejected(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item_id": [1, 2]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="table: expected a column 'sid'"):
        sk.SidTable.from_parquet(tmp_path / "a.parquet")
    pq.write_table(pa.table({"item_id": [1], "sid": [[1, 2]]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="sidkit metadata"):
        sk.SidTable.from_parquet(tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="path: expected a Parquet file"):
        sk.SidTable.from_parquet(tmp_path / "c.parquet")


@pytest.mark.parametrize(
    "ids, codes, sizes, exc, msg",
    [
        ([1, 1], [[0, 0], [0, 1]], (2, 2), ValueError, "item_ids: expected unique item ids, got 1 more than once"),
        ([1, 2], [[0, 0], [0, 2]], (2, 2), ValueError, "codes: expected 0 <= code < 2 at level 1"),
        ([1, 2, 3], [[0, 0], [0, 1]], (2, 2), ValueError, r"item_ids: expected shape \(2,\)"),
        ([1, 2], [[0, -1], [0, 1]], (2, 2), ValueError, "codes: expected codes in 0..65535, got -1"),
        ([1, 2], [[0, 0], [0, 0]], (2, 2), ValueError, "at most 1 item"),
        ([1.5, 2], [[0, 0], [0, 1]], (2, 2), TypeError, "item_ids: expected an integer array"),
        ([1, 2], [[0, 0], [0, 1]], (2, 2, 2), ValueError, "sizes: expected 2 level sizes"),
    ],
)
def test_bad_tables(ids, codes, sizes, exc, msg):
    with pytest.raises(exc, match=msg):
        sk.SidTable(np.array(ids), np.array(codes), sizes)


def test_empty_and_bad_resolve_calls(fitted):
    x, cb, codes = fitted
    empty = sk.resolve(np.zeros((0, 3), np.uint16), sizes=(4, 4, 4))
    assert len(empty) == 0 and empty.codes.shape == (0, 4)
    with pytest.raises(ValueError, match="method: expected 'suffix' or 'reassign'"):
        sk.resolve(codes, "other")
    with pytest.raises(ValueError, match="needs both"):
        sk.resolve(codes, "reassign")
    with pytest.raises(ValueError, match="embeddings, codebooks: expected both or neither"):
        sk.resolve(codes, embeddings=x)
    with pytest.raises(ValueError, match="order: expected 'knn' or 'random'"):
        sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, order="zigzag")
    with pytest.raises(ValueError, match="embeddings: expected 3000 rows"):
        sk.resolve(codes, "reassign", embeddings=x[:10], codebooks=cb)


def test_tables_own_their_arrays_and_refuse_negative_ids():
    codes, ids = np.array([[0, 1], [1, 0]], np.uint16), np.array([1, 2])
    t = sk.SidTable(ids, codes, (2, 2))
    codes[1], ids[0] = [0, 1], 2  # the caller's arrays stay writable, and the table its own
    assert t.codes.tolist() == [[0, 1], [1, 0]] and t.item_ids.tolist() == [1, 2]
    torch = pytest.importorskip("torch")
    shared = torch.tensor([10, 20, 30])
    r = sk.resolve(np.zeros((3, 1), np.uint16), item_ids=shared)
    shared[0] = 20
    assert r.item_ids.tolist() == [10, 20, 30] and r.items(r.codes).tolist() == [10, 20, 30]
    for make in (
        lambda: sk.SidTable([1, -1], codes),
        lambda: sk.resolve(codes, item_ids=[-5, 1]),
        lambda: sk.Trie(codes, [0, -1]),
        lambda: t.add([-3], [[1, 1]]),
    ):
        with pytest.raises(ValueError, match="item_ids: expected ids >= 0 .*got -"):
            make()
    with pytest.raises(ValueError, match="method: expected one of \\(None, 'suffix', 'reassign'\\), got 'bogus'"):
        sk.SidTable([1, 2], codes, method="bogus")


def test_report_is_saved_and_counts_added_items(tmp_path):
    codes = np.array([[0, 1], [0, 1], [1, 0]])
    t = sk.resolve(codes)
    grown = t.add([7, 8], [[0, 1], [1, 1]])
    assert grown.report == {**t.report, "items": 5, "added": 2} and t.report["items"] == 3
    assert grown.add([9], [[1, 1]]).report["added"] == 3
    for name in ("t.npz", "t.parquet", "t.PARQUET"):
        grown.save(tmp_path / name)
        back = sk.SidTable.load(tmp_path / name)
        assert back.report == grown.report and back.method == "suffix"
        np.testing.assert_array_equal(back.codes, grown.codes)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "t.PARQUET").num_rows == 5  # a real Parquet file, any case
    mode = (tmp_path / "t.npz").stat().st_mode & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600


def test_damaged_files_fail_to_load_never_load_wrong(tmp_path):
    rng = np.random.default_rng(0)
    t = sk.resolve(rng.integers(0, 16, size=(300, 3)), item_ids=rng.permutation(10_000)[:300])
    for name in ("t.npz", "t.parquet"):
        path = tmp_path / name
        t.save(path)
        raw = path.read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(raw[: len(raw) // 2])
        with pytest.raises(ValueError, match="path: expected"):
            sk.SidTable.load(tmp_path / f"cut-{name}")
    # One flipped bit in every byte of a small table (a different bit per byte): the load fails
    # or gives the same table, level sizes, method and report included (Parquet's page checksums
    # do not cover the schema metadata; the SHA-256 in it does).
    small = sk.resolve(rng.integers(0, 4, size=(30, 2)), item_ids=rng.permutation(100)[:30], max_suffix=9)
    for name in ("s.npz", "s.parquet"):
        path = tmp_path / name
        small.save(path)
        raw = path.read_bytes()
        for pos in range(len(raw)):
            bad = bytearray(raw)
            bad[pos] ^= 1 << (pos % 8)
            (tmp_path / f"bad-{name}").write_bytes(bytes(bad))
            try:
                back = sk.SidTable.load(tmp_path / f"bad-{name}")
            except ValueError:
                continue
            # a flip that still loads touched no data (padding, an unused header byte)
            np.testing.assert_array_equal(back.codes, small.codes)
            np.testing.assert_array_equal(back.item_ids, small.item_ids)
            assert (back.sizes, back.capacity, back.method) == (small.sizes, small.capacity, small.method), pos
            assert (back.report, back.meta) == (small.report, small.meta), pos


def test_legacy_tables_load_and_sealed_ones_check_their_metadata(tmp_path):
    import json

    t = sk.resolve(np.array([[0, 1], [0, 1], [1, 0]]), max_suffix=5)
    t.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as f:
        ids, codes, meta = f["item_ids"], f["codes"], json.loads(str(f["meta"]))
    assert meta["format"] == "sidkit.sidtable/2" and len(meta["sha256"]) == 64
    changed = {**meta, "sizes": [2, 2, 5]}  # valid-looking, but not what was saved
    np.savez(tmp_path / "c.npz", item_ids=ids, codes=codes, meta=np.array(json.dumps(changed)))
    with pytest.raises(ValueError, match="a damaged 'sidkit.sidtable/2' table: it does not match its SHA-256"):
        sk.SidTable.load(tmp_path / "c.npz")
    legacy = {k: v for k, v in meta.items() if k != "sha256"} | {"format": "sidkit.sidtable/1"}
    np.savez(tmp_path / "l.npz", item_ids=ids, codes=codes, meta=np.array(json.dumps(legacy)))
    back = sk.SidTable.load(tmp_path / "l.npz")
    np.testing.assert_array_equal(back.codes, t.codes)
    assert back.sizes == t.sizes and back.report == t.report


def test_from_arrow_names_damaged_metadata():
    import json

    pytest.importorskip("pyarrow")
    table = sk.SidTable([1, 2], [[0, 1], [1, 0]], (2, 2)).to_arrow()
    meta = json.loads(table.schema.metadata[b"sidkit"])
    for broken in (
        {k: v for k, v in meta.items() if k != "sizes"},
        {**meta, "levels": None},
        [meta],
        {**meta, "report": [1]},
    ):
        bad = table.replace_schema_metadata({"sidkit": json.dumps(broken)})
        with pytest.raises(ValueError, match="table: expected"):
            sk.SidTable.from_arrow(bad)
