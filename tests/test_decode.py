"""The SID trie and constrained beam search, against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sidkit as sk
from hypothesis import given, settings
from hypothesis import strategies as st

SIZES = (4, 5, 3)


def random_sids(rng: np.random.Generator, n: int, sizes=SIZES) -> np.ndarray:
    every = np.array(list(itertools.product(*[range(k) for k in sizes])))
    return every[rng.choice(len(every), size=n, replace=False)]


def scorer(seed: int, sizes=SIZES):
    """Deterministic prefix-dependent log-probs, like a model: logp(code | prefix)."""

    def logp(prefix: tuple[int, ...], level: int) -> np.ndarray:
        r = np.random.default_rng([seed, level, *prefix])
        return np.log(r.dirichlet(np.ones(sizes[level]))).astype(np.float32)

    return logp


def exhaustive(sids: np.ndarray, ids: np.ndarray, logp) -> list[tuple[float, int]]:
    scored = []
    for row, item in zip(sids.tolist(), ids.tolist(), strict=True):
        s = sum(float(logp(tuple(row[:t]), t)[row[t]]) for t in range(len(row)))
        scored.append((s, item, tuple(row)))
    scored.sort(key=lambda e: (-e[0], e[2]))
    return [(s, i) for s, i, _ in scored]


def test_trie_navigation_matches_a_set(rng):
    sids = random_sids(rng, 25)
    ids = rng.permutation(1000)[:25]
    trie = sk.Trie(sids, ids, sizes=SIZES)
    assert len(trie) == 25 and trie.depth == 3
    every = np.array(list(itertools.product(*[range(k) for k in SIZES])))
    table = {tuple(r): i for r, i in zip(sids.tolist(), ids.tolist(), strict=True)}
    want = np.array([table.get(tuple(r), -1) for r in every.tolist()])
    np.testing.assert_array_equal(trie.lookup(every), want)
    np.testing.assert_array_equal(trie.contains(every), want >= 0)
    prefixes = np.array(list(itertools.product(range(4), range(5))))
    nodes = trie.walk(prefixes)
    valid = {tuple(r[:2]) for r in sids.tolist()}
    np.testing.assert_array_equal(nodes >= 0, [tuple(p) in valid for p in prefixes.tolist()])
    offsets, codes, _ = trie.children(nodes)
    for i, p in enumerate(prefixes.tolist()):
        kids = sorted(r[2] for r in sids.tolist() if r[:2] == p)
        assert codes[offsets[i] : offsets[i + 1]].tolist() == kids
    mask = trie.mask(nodes, vocab=3)
    for i, p in enumerate(prefixes.tolist()):
        assert np.flatnonzero(mask[i]).tolist() == sorted(r[2] for r in sids.tolist() if r[:2] == p)
    # child() agrees with walk() one level down.
    np.testing.assert_array_equal(trie.child(trie.walk(sids[:, :2]), sids[:, 2]), trie.walk(sids))
    assert trie.walk(np.zeros((2, 0), np.int64)).tolist() == [0, 0]
    assert trie.lookup(np.array([[0, -1, 0], [0, 0, 70000]])).tolist() == [-1, -1]


def test_trie_from_table_and_duplicates(rng):
    codes = np.array([[0, 1], [0, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"share a SID.*sidkit.resolve"):
        sk.Trie(codes)
    table = sk.resolve(codes)
    trie = sk.Trie.from_table(table)
    assert trie.depth == 3 and len(trie) == 3
    np.testing.assert_array_equal(trie.lookup(table.codes), table.item_ids)
    dup = sk.Trie(codes, [7, 5, 6], allow_duplicates=True)
    assert len(dup) == 2 and dup.lookup(np.array([[0, 1]])).tolist() == [5]
    assert dup.items_of([0, 1]).tolist() == [5, 7] and dup.items_of(np.array([1, 1])).tolist() == [6]
    assert dup.items_of([1, 0]).tolist() == [] and dup.items_of([-1, 70000]).dtype == np.int64
    with pytest.raises(ValueError, match=r"sid: expected one SID of shape \(2,\)"):
        dup.items_of([[0, 1]])
    with pytest.raises(ValueError, match=r"codes: expected shape \(B, 2\)"):
        dup.items_of([0])
    # Trie(table) is Trie.from_table(table); a table brings its own ids, sizes and capacity.
    same = sk.Trie(table)
    assert same.sizes == table.sizes and same.num_nodes == trie.num_nodes
    np.testing.assert_array_equal(same.lookup(table.codes), table.item_ids)
    with pytest.raises(ValueError, match="item_ids, sizes: expected none with a SidTable"):
        sk.Trie(table, [1, 2, 3], (2, 2, 2))
    with pytest.raises(TypeError, match="table: expected a sidkit.SidTable, got ndarray"):
        sk.Trie.from_table(codes)
    # A table with capacity 2: two items share SID (0, 0); each is its own result, same score.
    emb = np.eye(4, dtype=np.float32)
    cb = sk.Codebooks([emb[:2], emb[:2]])
    shared = sk.resolve(
        np.array([[0, 0], [0, 0], [0, 1], [1, 0]]), "reassign", embeddings=emb, codebooks=cb, capacity=2
    )
    assert shared.capacity == 2 and shared.codes.tolist() == [[0, 0], [0, 0], [0, 1], [1, 0]]
    logp = np.log(np.array([0.6, 0.4], np.float32))
    items, scores, sids = sk.generate(lambda tok, par: np.tile(logp, (len(par), 1)), sk.Trie(shared), 1, 3, top_k=4)
    assert items.tolist() == [[0, 1, 2, 3]] and sids[0].tolist() == [[0, 0], [0, 0], [0, 1], [1, 0]]
    np.testing.assert_allclose(scores[0], [2 * logp[0], 2 * logp[0], logp[0] + logp[1], logp[1] + logp[0]], rtol=1e-6)


def test_token_map():
    tm = sk.TokenMap((4, 5, 3), offset=2)
    assert tm.vocab_size == 14 and tm.starts == (2, 6, 11)
    codes = np.array([[3, 4, 2], [0, 0, 0]])
    tokens = tm.to_tokens(codes)
    assert tokens.tolist() == [[5, 10, 13], [2, 6, 11]]
    np.testing.assert_array_equal(tm.to_codes(tokens), codes)
    with pytest.raises(ValueError, match="tokens"):
        tm.to_codes(np.array([[6]]))  # a level-1 token at level 0
    with pytest.raises(ValueError, match="codes"):
        tm.to_tokens(np.array([[4]]))
    with pytest.raises(TypeError, match="codes: expected integer codes, got dtype float64"):
        tm.to_tokens(np.array([[1.0]]))
    with pytest.raises(TypeError, match="tokens: expected integer token ids, got dtype float32"):
        tm.to_codes(np.array([[3.0]], np.float32))
    with pytest.raises(
        ValueError, match="offset: expected an int in \\[0, 4611686018427387904\\], got 1180591620717411303424"
    ):
        sk.TokenMap((4, 5, 3), offset=2**70)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**31), st.sampled_from([1, 2, 7]))
def test_beam_search_exact_when_wide_and_always_valid(n, seed, batch):
    rng = np.random.default_rng(seed)
    sids = random_sids(rng, n)
    ids = rng.permutation(10**6)[:n]
    trie = sk.Trie(sids, ids, sizes=SIZES)
    valid = {tuple(r) for r in sids.tolist()}
    for beam in (1, 4, n):

        def step(tokens, parents, beam=beam):
            rows = []
            for q, prefix in enumerate(tokens.tolist()):
                rows.append(scorer(seed + q // beam)(tuple(prefix), tokens.shape[1]))
            return np.stack(rows)

        top_k = min(beam, 5)
        items, scores, got = sk.generate(step, trie, batch, beam, top_k=top_k)
        for b in range(batch):
            ref = exhaustive(sids, ids, scorer(seed + b))
            live = items[b] >= 0
            assert live.sum() == min(top_k, n, beam)
            assert all(tuple(s) in valid for s in got[b][live].tolist())
            assert len(set(items[b][live].tolist())) == live.sum()  # no duplicates
            np.testing.assert_array_equal(trie.lookup(got[b][live]), items[b][live])
            if beam >= n:  # exhaustive: exactly the best top_k
                np.testing.assert_allclose(scores[b][live], [s for s, _ in ref[:top_k]], rtol=1e-5, atol=1e-5)


def test_token_map_path_matches_code_path(rng):
    sids = random_sids(rng, 30)
    trie = sk.Trie(sids, sizes=SIZES)
    tm = sk.TokenMap(SIZES, offset=3)

    def by_code(tokens, parents):
        return np.stack([scorer(1)(tuple(p), tokens.shape[1]) for p in tokens.tolist()])

    def by_token(tokens, parents):
        level = tokens.shape[1]
        codes = tm.to_codes(tokens) if level else tokens
        out = np.full((len(tokens), tm.vocab_size), -np.inf, np.float32)
        out[:, tm.starts[level] : tm.starts[level] + SIZES[level]] = by_code(codes, parents)
        return out

    a = sk.generate(by_code, trie, 1, 6)
    b = sk.generate(by_token, trie, 1, 6, token_map=tm)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_generate_with_a_tiny_torch_model(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    sids = random_sids(rng, 40)
    trie = sk.Trie(sids, sizes=SIZES)
    tm = sk.TokenMap(SIZES, offset=1)
    emb = torch.nn.Embedding(tm.vocab_size, 16)
    rnn = torch.nn.GRU(16, 16, batch_first=True)
    head = torch.nn.Linear(16, tm.vocab_size)

    @torch.no_grad()
    def step(tokens, parents):
        x = torch.as_tensor(np.concatenate([np.zeros((len(tokens), 1), np.int64), tokens], 1))  # BOS = 0
        h, _ = rnn(emb(x))
        return torch.log_softmax(head(h[:, -1]), -1)

    items, scores, got = sk.generate(step, trie, 4, 5, token_map=tm)
    assert (items >= 0).all() and np.isfinite(scores).all()
    assert trie.contains(got.reshape(-1, 3)).all()
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_mask_fills_a_torch_tensor(rng):
    torch = pytest.importorskip("torch")
    trie = sk.Trie(random_sids(rng, 20), sizes=SIZES)
    tm = sk.TokenMap(SIZES, offset=2)
    nodes = trie.walk(np.array([[0], [1], [3]]))
    out = torch.zeros((3, tm.vocab_size), dtype=torch.bool)
    trie.mask(nodes, token_map=tm, out=out)
    want = trie.mask(nodes, vocab=5)
    np.testing.assert_array_equal(out.numpy()[:, tm.starts[1] : tm.starts[1] + 5], want)
    assert not out.numpy()[:, : tm.starts[1]].any()


def test_device_side_mask_matches_the_rust_mask(rng):
    """The torch-built mask (what runs on a GPU) equals the Rust one, node for node; checked on
    CPU tensors here, and on CUDA when one is present."""
    torch = pytest.importorskip("torch")
    trie = sk.Trie(random_sids(rng, 40), sizes=SIZES)
    nodes = np.concatenate([np.arange(trie.num_nodes), [-1]])
    want = trie._native.mask(nodes, 9, 2)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        got = trie.mask_torch(torch.from_numpy(nodes).to(device), 9, 2)
        assert got.device.type == device
        np.testing.assert_array_equal(got.cpu().numpy(), want)
        for bad in (trie.num_nodes, -2):  # as the Rust mask: an id that is no node is an error
            with pytest.raises(
                ValueError, match=rf"node_ids: expected node ids in \[-1, {trie.num_nodes}\).*got {bad}"
            ):
                trie.mask_torch(torch.tensor([0, bad], device=device), 9, 2)
            with pytest.raises(ValueError, match="node_ids"):
                trie.mask([0, bad], vocab=9)
    # `out` on a non-CPU device takes the device path; a CPU tensor the Rust one.
    out = torch.zeros((3, 9), dtype=torch.bool)
    trie.mask(nodes[:3], vocab=9, out=out)
    np.testing.assert_array_equal(out.numpy(), trie.mask(nodes[:3], vocab=9))


@pytest.mark.parametrize("threads", [1, 2])
def test_beam_search_thread_count_independent(rng, threads):
    sids = random_sids(rng, 50)
    trie = sk.Trie(sids, sizes=SIZES)

    def step(tokens, parents):
        return np.stack([scorer(q % 7)(tuple(p), tokens.shape[1]) for q, p in enumerate(tokens.tolist())])

    sk.set_num_threads(1)
    want = sk.generate(step, trie, 8, 4)
    sk.set_num_threads(threads)
    got = sk.generate(step, trie, 8, 4)
    for x, y in zip(want, got, strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_decoding_calls(rng):
    trie = sk.Trie(random_sids(rng, 10), sizes=SIZES)
    with pytest.raises(ValueError, match="beam_width: expected an int >= 1"):
        sk.BeamSearch(trie, 2, 0)
    with pytest.raises(ValueError, match="token_map: expected sizes"):
        sk.BeamSearch(trie, 1, 2, token_map=sk.TokenMap((4, 4, 4)))
    search = sk.BeamSearch(trie, 2, 3)
    with pytest.raises(ValueError, match=r"logp: expected shape \(6, 4\) at level 0, got \(5, 4\)"):
        search.step(np.zeros((5, 4), np.float32))
    with pytest.raises(TypeError, match="logp: expected floating-point"):
        search.step(np.zeros((6, 4), np.int64))
    with pytest.raises(ValueError, match="finish"):
        search.finish()
    for level in range(3):
        search.step(np.full((6, SIZES[level]), np.nan if level == 0 else 0.0, np.float32))
    with pytest.raises(ValueError, match="step: expected at most 3 steps"):
        search.step(np.zeros((6, 3), np.float32))
    items, scores = search.finish()
    assert (items == -1).all() and np.isneginf(scores).all()  # NaN = -inf: nothing was valid
    with pytest.raises(ValueError, match="node_ids: expected node ids in"):
        trie.children([10**6])
    with pytest.raises(ValueError, match="prefixes: expected at most 3 codes"):
        trie.walk(np.zeros((1, 4), np.int64))
    with pytest.raises(ValueError, match=r"codes: expected shape \(B, 3\)"):
        trie.lookup(np.zeros((1, 2), np.int64))


def test_prefix_scorer_decodes_the_exact_top_items(rng):
    from sidkit.retrieval import PrefixScorer

    sids = random_sids(rng, 50)
    table = sk.SidTable(np.arange(50), sids, SIZES)
    scores = rng.standard_normal((3, 50)) * 3
    scorer = PrefixScorer(table, scores)
    beam = 50

    def step(prefixes, parents):
        return scorer.logp(np.repeat(np.arange(3), beam), prefixes)

    items, logp, _ = sk.generate(step, sk.Trie.from_table(table), 3, beam, top_k=10)
    np.testing.assert_array_equal(items, np.argsort(-scores, axis=1, kind="stable")[:, :10])
    # The SID's log-prob is its item's softmax log-probability.
    soft = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    np.testing.assert_allclose(logp, np.take_along_axis(soft, items, 1), rtol=1e-4, atol=1e-4)


def test_trie_save_load_round_trip(rng, tmp_path):
    codes = random_sids(rng, 40)
    ids = rng.permutation(1000)[:40].astype(np.int64)
    trie = sk.Trie(codes, ids, sizes=SIZES)
    got_codes, got_ids = trie.sids()
    order = np.lexsort(codes.T[::-1])
    np.testing.assert_array_equal(got_codes, codes[order])
    np.testing.assert_array_equal(got_ids, ids[order])
    trie.save(tmp_path / "t.npz")
    back = sk.Trie.load(tmp_path / "t.npz")
    assert (back.depth, back.sizes, len(back), back.num_nodes) == (trie.depth, trie.sizes, 40, trie.num_nodes)
    np.testing.assert_array_equal(back.lookup(codes), ids)
    # Duplicates survive a round trip.
    dup = sk.Trie(np.concatenate([codes[:3], codes[:1]]), [1, 2, 3, 4], sizes=SIZES, allow_duplicates=True)
    dup.save(tmp_path / "d.npz")
    c, i = sk.Trie.load(tmp_path / "d.npz").sids()
    assert sorted(i.tolist()) == [1, 2, 3, 4] and len(c) == 4
    # Many items per SID: every (SID, item) pair, SIDs in lexicographic order, items in id order.
    many = rng.integers(0, 3, (500, 3)).astype(np.uint16)
    shuffled = rng.permutation(5000)[:500].astype(np.int64)
    for many_ids in (shuffled, np.sort(shuffled)):  # ascending ids take the build's radix-sort path
        got_codes, got_ids = sk.Trie(many, many_ids, sizes=[3, 3, 3], allow_duplicates=True).sids()
        order = np.lexsort((many_ids, *many.T[::-1]))
        np.testing.assert_array_equal(got_codes, many[order])
        np.testing.assert_array_equal(got_ids, many_ids[order])
    np.savez(tmp_path / "bad.npz", codes=codes)
    with pytest.raises(ValueError, match="is not a readable .sidkit.trie/1. file .missing"):
        sk.Trie.load(tmp_path / "bad.npz")


def test_trie_pickles_and_copies_share_it(rng):
    import copy
    import pickle

    codes = random_sids(rng, 40)
    ids = rng.permutation(1000)[:40].astype(np.int64)
    for trie in (
        sk.Trie(codes, ids, sizes=SIZES),
        sk.Trie(np.concatenate([codes[:3], codes[:1]]), [1, 2, 3, 4], sizes=SIZES, allow_duplicates=True),
    ):
        back = pickle.loads(pickle.dumps(trie))
        assert back is not trie
        assert (back.depth, back.sizes, len(back), back.num_nodes) == (
            trie.depth,
            trie.sizes,
            len(trie),
            trie.num_nodes,
        )
        for a, b in zip(back.sids(), trie.sids(), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(back.lookup(codes), trie.lookup(codes))
        # Immutable: copies (a deep copy of a model holding it) share the one trie.
        assert copy.copy(trie) is trie and copy.deepcopy({"t": trie})["t"] is trie


def test_beam_search_over_a_wider_vocabulary_and_infinities(rng):
    trie = sk.Trie(random_sids(rng, 30), sizes=SIZES)
    tm = sk.TokenMap(SIZES, offset=2)
    narrow = sk.BeamSearch(trie, 2, 3, token_map=tm)
    wide = sk.BeamSearch(trie, 2, 3, token_map=tm)
    for _ in range(3):
        lp = np.log(rng.dirichlet(np.ones(tm.vocab_size), size=6)).astype(np.float32)
        pad = np.zeros((6, 5), np.float32)  # columns past the SID tokens, better than any: never read
        for x, y in zip(narrow.step(lp), wide.step(np.concatenate([lp, pad], 1)), strict=True):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(narrow.finish(), wide.finish(), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"logp: expected shape \(6, >= 14\) at level 0, got \(6, 13\)"):
        sk.BeamSearch(trie, 2, 3, token_map=tm).step(np.zeros((6, 13), np.float32))
    with pytest.raises(TypeError, match="token_map: expected a sidkit.TokenMap or None, got tuple"):
        sk.BeamSearch(trie, 1, 1, token_map=SIZES)

    # +inf would rank beams by their index; refused, given or from a float64 past float32's
    # range, and the search stays where it was.
    search = sk.BeamSearch(trie, 1, 2)
    for bad in (np.full((2, 4), np.inf, np.float32), np.full((2, 4), 1e300)):
        with pytest.raises(ValueError, match="logp: expected log-probabilities that are finite or -inf"):
            search.step(bad)
        assert search.step_index == 0
    search.step(np.zeros((2, 4), np.float32))
    assert search.step_index == 1
    huge = sk.BeamSearch(trie, 1, 1)
    huge.step(np.full((1, 4), 3e38, np.float32))
    with pytest.raises(ValueError, match="a sum that overflows float32"):
        huge.step(np.full((1, 5), 3e38, np.float32))
