"""Bad input gets a ValueError/TypeError naming the argument, never a panic or a wrong answer."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import sidkit as sk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@pytest.fixture
def cb():
    return sk.Codebooks(np.random.default_rng(0).standard_normal((3, 8, 4)).astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e20])
def test_non_finite_x(cb, bad):
    x = np.zeros((5, 4), np.float32)
    x[3, 1] = bad
    with pytest.raises(ValueError, match=r"x: expected finite values.* at flat index 13"):
        cb.encode(x)


def test_nan_in_float64_is_not_downcast_silently(cb):
    x = np.zeros((5, 4))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite"):
        cb.encode(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_codebooks(bad):
    c = np.zeros((2, 3, 4), np.float32)
    c[1, 2, 0] = bad
    with pytest.raises(ValueError, match="codebooks: expected finite"):
        sk.Codebooks(c)


@pytest.mark.parametrize(
    "x, exc, msg",
    [
        (np.zeros((5,), np.float32), ValueError, r"x: expected a 2-D array \(N, 4\), got shape \(5,\)"),
        (np.zeros((5, 4, 1), np.float32), ValueError, "x: expected a 2-D array"),
        (np.zeros((5, 3), np.float32), ValueError, r"x: expected shape \(N, 4\), got \(5, 3\)"),
        (np.zeros((5, 4), np.int32), TypeError, "x: expected a floating-point array.*int32"),
        (np.zeros((5, 4), bool), TypeError, "x: expected a floating-point array"),
        ("not an array", TypeError, "x: expected a numpy array or torch tensor, got str"),
    ],
)
def test_bad_x(cb, x, exc, msg):
    with pytest.raises(exc, match=msg):
        cb.encode(x)


@pytest.mark.parametrize(
    "beam, exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), (5000, ValueError)]
)
def test_bad_beam(cb, beam, exc):
    with pytest.raises(exc, match="beam"):
        cb.encode(np.zeros((2, 4), np.float32), beam=beam)


@pytest.mark.parametrize(
    "codebooks, msg",
    [
        (np.zeros((0, 4, 3), np.float32), "at least one level"),
        ([], "at least one level"),
        (np.zeros((2, 0, 3), np.float32), "1 <= K <= 65536.*K = 0"),
        (np.zeros((1, 65537, 1), np.float32), "K = 65537"),
        (np.zeros((2, 3, 0), np.float32), "D >= 1"),
        (np.zeros((4, 3), np.float32), r"3-D array \(L, K, D\)"),
        ([np.zeros((3, 2), np.float32), np.zeros((3, 5), np.float32)], "one dimension D"),
    ],
)
def test_bad_codebooks(codebooks, msg):
    with pytest.raises(ValueError, match=msg):
        sk.Codebooks(codebooks)


def test_codebooks_of_integers_is_a_type_error():
    with pytest.raises(TypeError, match=r"codebooks\[0\]: expected a floating-point"):
        sk.Codebooks(np.zeros((2, 3, 4), np.int64))


@pytest.mark.parametrize(
    "codes, exc, msg",
    [
        (np.array([[0, 0, 8]], np.uint16), ValueError, r"codes: expected 0 <= code < 8 at level 2"),
        (np.array([[0, -1, 0]], np.int64), ValueError, "codes: expected 0 <= code < 8 at level 1"),
        (np.array([[0, 0, 2**40]], np.int64), ValueError, "codes: expected 0 <= code < 8"),
        (np.array([[0, 0, 2**63 + 5]], np.uint64), ValueError, "codes"),
        (np.zeros((2, 2), np.uint16), ValueError, r"codes: expected shape \(N, 3\), got \(2, 2\)"),
        (np.zeros((3,), np.uint16), ValueError, r"codes: expected shape \(N, 3\)"),
        (np.zeros((2, 3), np.float32), TypeError, "codes: expected an integer array"),
    ],
)
def test_bad_codes(cb, codes, exc, msg):
    with pytest.raises(exc, match=msg):
        cb.decode(codes)


PROPERTY_CB = sk.Codebooks(np.random.default_rng(1).standard_normal((3, 8, 4)).astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint16]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    ),
    beam=st.integers(-2, 6),
)
def test_any_array_gives_codes_or_a_clear_error(x, beam):
    """Property: for any array, encode returns valid codes or raises ValueError/TypeError."""
    cb = PROPERTY_CB
    try:
        codes, errors = cb.encode(x, beam=beam, return_errors=True)
    except (ValueError, TypeError) as e:
        assert str(e).split(":")[0] in {"x", "beam"}
        return
    assert x.dtype.kind == "f" and x.ndim == 2 and x.shape[1] == 4 and beam >= 1
    assert np.isfinite(x).all()
    assert codes.shape == (x.shape[0], 3) and codes.dtype == np.uint16 and (codes < 8).all()
    recon = cb.decode(codes)
    np.testing.assert_allclose(errors[:, -1], ((x.astype(np.float64) - recon) ** 2).sum(1), rtol=1e-3, atol=1e-3)


# --- sizes from the caller: errors before any allocation, never an abort or a panic ----------


@pytest.fixture
def small_trie():
    return sk.Trie(np.array([[0, 1], [0, 2], [1, 2], [2, 0]], np.uint16))


def test_huge_sizes_are_errors_not_aborts(small_trie):
    tr = small_trie
    with pytest.raises(MemoryError, match="vocab: could not allocate"):
        tr.mask([0], vocab=2 * 10**12)  # 2 TB: refused by the allocator, not an abort
    with pytest.raises(ValueError, match="vocab: expected an output that fits in memory"):
        tr.mask([0, 0], vocab=2**62)
    for batch, beam in [(10**6, 10**6), (2**32, 2**32), (10**10, 10**10)]:
        with pytest.raises(ValueError, match="beam_width: expected batch_size \\* beam_width < 2\\^32 - 1"):
            sk.BeamSearch(tr, batch, beam)
    with pytest.raises(ValueError, match="batch_size: expected an int < 2\\*\\*63"):
        sk.BeamSearch(tr, 2**64, 1)
    b = sk.BeamSearch(tr, 1, 2)
    b.step(np.zeros((2, 3), np.float32))
    b.step(np.zeros((2, 3), np.float32))
    with pytest.raises(MemoryError, match="top_k: could not allocate"):
        b.finish(10**12)
    with pytest.raises(ValueError, match="top_k: expected an output that fits in memory"):
        b.finish(2**62)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="top_k: expected an int >= 1"):
            b.finish(bad)
    for bad in (1.5, True):
        with pytest.raises(TypeError, match="top_k: expected an int, got"):
            b.finish(bad)
    with pytest.raises(TypeError, match="batch_size: expected an int, got float 2.0"):
        sk.BeamSearch(tr, 2.0, 1)
    items, scores = b.finish(3)  # more slots than beams: padded
    assert items.shape == (1, 3) and items[0, 2] == -1 and scores[0, 2] == -np.inf


@pytest.mark.parametrize("bad", [0, 65537, 2**40, -1])
def test_level_sizes_fit_uint16_everywhere(bad):
    codes = np.array([[0, 1], [1, 0]])
    msg = "sizes: expected 1 <= K <= 65536 per level"
    for make in (
        lambda: sk.resolve(codes, sizes=[bad, 3]),
        lambda: sk.SidTable([1, 2], codes, sizes=[bad, 3]),
        lambda: sk.Trie(codes, sizes=[bad, 3]),
        lambda: sk.TokenMap([bad, 3]),
        lambda: sk.metrics.report(np.ones((2, 3), np.float32), codes, sizes=[bad, 3]),
    ):
        with pytest.raises(ValueError, match=msg):
            make()
    with pytest.raises(TypeError, match="sizes: expected int level sizes, got 2.5"):
        sk.TokenMap([2.5])
    assert sk.TokenMap([65536]).to_tokens([[65535]]).tolist() == [[65535]]  # the largest level is fine


def test_trie_mask_checks_its_token_map_and_out(small_trie):
    torch = pytest.importorskip("torch")
    tr = small_trie  # sizes (3, 3)
    with pytest.raises(ValueError, match=r"token_map: expected sizes \(3, 3\) \(the trie's\), got \(2, 2\)"):
        tr.mask([0], token_map=sk.TokenMap([2, 2]))
    with pytest.raises(TypeError, match="out: expected a bool torch.Tensor, got ndarray"):
        tr.mask([0], out=np.zeros((1, 3), bool))
    with pytest.raises(ValueError, match=r"out: expected a bool tensor of shape \(1, 3\)"):
        tr.mask([0], out=torch.zeros((1, 3)))
    out = torch.zeros((2, 3), dtype=torch.bool)
    tr.mask([0, 1], out=out)
    assert out.tolist() == [[True, True, True], [False, True, True]]  # root: 0, 1, 2; node 1 (prefix 0): 1, 2
    with pytest.raises(ValueError, match="vocab: expected more than offset \\+ code = 2 tokens, got 2"):
        tr.mask_torch(torch.tensor([0]), 2)  # as mask(): a child code beyond the columns is an error
    with pytest.raises(TypeError, match="node_ids: expected integer node ids"):
        tr.mask_torch(torch.tensor([0.7]), 3)
    with pytest.raises(ValueError, match="offset: expected >= 0, got -1"):
        tr.mask_torch(torch.tensor([0]), 3, -1)
    np.testing.assert_array_equal(tr.mask_torch(torch.tensor([0, -1, 1]), 3).numpy(), tr.mask([0, -1, 1], vocab=3))
    tm = sk.TokenMap(tr.sizes, offset=2)  # 8 tokens; a model's vocabulary may hold more
    assert tr.mask([0], token_map=tm).shape == (1, 8)
    wide = tr.mask([0], vocab=12, token_map=tm)
    assert wide.shape == (1, 12) and wide.nonzero()[1].tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="vocab: expected >= token_map.vocab_size = 8, got 7"):
        tr.mask([0], vocab=7, token_map=tm)
    with pytest.raises(ValueError, match=r"node_ids: expected node ids in \[-1, 8\), got 8"):
        tr.mask([8], token_map=tm)
    with pytest.raises(
        ValueError, match=r"node_ids: expected nodes of one depth with a token_map, got depths \[0, 1\]"
    ):
        tr.mask([0, 1], token_map=tm)
    with pytest.raises(TypeError, match="prefixes: expected integers, got dtype float64"):
        tr.walk(np.zeros((1, 1)))


def test_sid_table_ids_beyond_int64_and_empty_lists():
    t = sk.SidTable([10, 20, 30, 2**62], np.array([[0, 1], [0, 2], [1, 2], [2, 0]], np.uint16))
    # 2**64 - 1 as uint64 is no item: not wrapped to the id -1
    np.testing.assert_array_equal(t.rows(np.array([2**64 - 1, 10, 30], np.uint64)), [-1, 0, 2])
    with pytest.raises(KeyError):
        t.sid(np.array([2**64 - 1], np.uint64))
    assert t.rows([]).shape == (0,) and t.sid([]).shape == (0, 2)
    assert len(sk.SidTable([], np.zeros((0, 2), np.uint16), sizes=[2, 2])) == 0


def test_resolve_scalar_arguments():
    codes = np.array([[0, 1], [0, 1], [1, 0]])
    emb = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    cb = sk.Codebooks(np.random.default_rng(1).standard_normal((2, 2, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="max_suffix: expected >= 1, got -1"):
        sk.resolve(codes, max_suffix=-1)
    with pytest.raises(TypeError, match="capacity: expected an int, got float 1.5"):
        sk.resolve(codes, "reassign", embeddings=emb, codebooks=cb, capacity=1.5)
    with pytest.raises(ValueError, match="candidates: expected >= 1, got 0"):
        sk.resolve(codes, "reassign", embeddings=emb, codebooks=cb, candidates=0)
    with pytest.raises(ValueError, match="seed: expected"):
        sk.resolve(codes, "reassign", embeddings=emb, codebooks=cb, order="random", seed=-1)
    with pytest.raises(TypeError, match="codebooks: expected a sidkit.Codebooks, got ndarray"):
        sk.resolve(codes, embeddings=emb, codebooks=cb.data)
    bad = emb.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="embeddings: expected finite values"):
        sk.resolve(codes, embeddings=bad, codebooks=cb)


def test_codebooks_beyond_1e15_and_damaged_files(tmp_path):
    with pytest.raises(ValueError, match="codebooks: expected values within ±1e15"):
        sk.Codebooks(np.full((1, 2, 3), 1e30, np.float32))
    cb = sk.Codebooks(np.random.default_rng(0).standard_normal((3, 8, 4)).astype(np.float32))
    cb.save(tmp_path / "cb.npz")
    with np.load(tmp_path / "cb.npz") as z:
        arrays = dict(z)
    for sizes in ([8, 8, 4], [8, 16], [], [[8, 8, 8]], [8, 8, 8.5]):
        np.savez(tmp_path / "bad.npz", **{**arrays, "sizes": np.array(sizes)})
        with pytest.raises(ValueError, match="is a damaged 'sidkit.codebooks/2' file"):
            sk.Codebooks.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **{**arrays, "meta": np.array("[1]")})
    with pytest.raises(ValueError, match="path: expected format"):
        sk.Codebooks.load(tmp_path / "bad.npz")
    assert sk.Codebooks.load(tmp_path / "cb.npz") == cb


def test_trie_load_wraps_every_failure(tmp_path, small_trie):
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    for path in (tmp_path / "arr.npy", tmp_path / "junk.npz", tmp_path):
        with pytest.raises(ValueError, match="is not a readable 'sidkit.trie/1' file"):
            sk.Trie.load(path)
    small_trie.save(tmp_path / "t.npz")
    assert sk.Trie.load(tmp_path / "t.npz").sids()[0].tolist() == small_trie.sids()[0].tolist()


def test_max_history_and_k_must_be_positive():
    from sidkit.data import leave_one_out, most_popular

    seqs = [np.arange(1, 8), np.arange(10, 13)]
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"max_history: expected >= 1, got {bad}"):
            leave_one_out(seqs, bad)
        with pytest.raises(ValueError, match=f"k: expected >= 1, got {bad}"):
            most_popular(seqs, bad)
    assert [h.tolist() for h in leave_one_out(seqs, 2).valid_history] == [[4, 5], [10]]


def test_report_validates_its_inputs():
    from sidkit.metrics import report

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    cb = sk.RQKMeans(2, 4, iters=3, seed=0, verbose=False).fit(x)
    codes = cb.encode(x)
    nan = x.copy()
    nan[3, 1] = np.nan
    cases = [
        (lambda: report(nan, codes, cb), ValueError, "x: expected finite values"),
        (lambda: report(x, codes.astype(float) + 0.7, cb), TypeError, "codes: expected an integer array"),
        (lambda: report(x, codes.astype(np.int64) * 3, sizes=[4, 4]), ValueError, "codes: expected 0 <= code < 4"),
        (lambda: report(x, codes, sizes=[4]), ValueError, "sizes: expected 2 level sizes to match codes, got 1"),
        (lambda: report(x, codes, cb, k=0), ValueError, "k: expected >= 1, got 0"),
        (lambda: report(x, codes, cb, k=50), ValueError, "k: expected at most N - 1 = 49 neighbours, got 50"),
        (lambda: report(x, codes, cb, sample=0), ValueError, "sample: expected >= 1, got 0"),
        (lambda: report(x[:, :3], codes, cb), ValueError, "codebooks: expected 2 levels of dimension 3"),
        (lambda: report(x, codes[:, :1], cb), ValueError, "codebooks: expected 1 levels of dimension 4"),
        (lambda: report(np.zeros((0, 4), np.float32), np.zeros((0, 2), np.uint16)), ValueError, "codes: expected at"),
        (lambda: report(x, codes, sequences=[np.array([0, 1, 50])]), ValueError, "sequences: expected 0-based item"),
        (lambda: report(x, codes, sequences=[np.array([-1, 2])]), ValueError, "got -1 in sequence 0"),
    ]
    for call, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call()
    assert report(x, codes, cb, k=49)["neighbour_recall@49"] <= 1.0


def test_logits_processor_arguments(small_trie):
    torch = pytest.importorskip("torch")
    from sidkit.hf import SidLogitsProcessor

    tm = sk.TokenMap(small_trie.sizes, offset=2)  # SID tokens 2..7
    for bad in (2, 7):
        with pytest.raises(ValueError, match="eos_token_id: expected a token outside the SID tokens \\[2, 8\\)"):
            SidLogitsProcessor(small_trie, tm, eos_token_id=bad)
    with pytest.raises(ValueError, match="eos_token_id: expected >= 0, got -1"):
        SidLogitsProcessor(small_trie, tm, eos_token_id=-1)
    p = SidLogitsProcessor(small_trie, tm, start=1, eos_token_id=9)
    with pytest.raises(ValueError, match="eos_token_id: expected < the 8 score columns, got 9"):
        p(torch.zeros((1, 3), dtype=torch.long), torch.zeros((1, 8)))
    with pytest.raises(TypeError, match="input_ids, scores: expected torch tensors"):
        p(np.zeros((1, 1), np.int64), torch.zeros((1, 10)))
    with pytest.raises(ValueError, match="input_ids, scores: expected \\(B, T\\) and \\(B, V\\)"):
        p(torch.zeros((2, 1), dtype=torch.long), torch.zeros((1, 10)))
    done = p(torch.tensor([[0, 2, 6]]), torch.zeros((1, 10)))  # a full SID: only eos stays
    assert torch.isfinite(done).nonzero().tolist() == [[0, 9]]

    free = SidLogitsProcessor(small_trie, tm, start=1)  # no eos
    scores = torch.randn((1, 10))
    assert torch.equal(free(torch.tensor([[0, 2, 6]]), scores), scores)  # a full SID: the model's scores stand
    both = SidLogitsProcessor(small_trie, tm, start=1, eos_token_id=[1, 9])  # a generation_config list
    assert torch.isfinite(both(torch.tensor([[0, 2, 6]]), torch.zeros((1, 10)))).nonzero()[:, 1].tolist() == [1, 9]
    with pytest.raises(ValueError, match="eos_token_id: expected a token outside the SID tokens \\[2, 8\\), got 3"):
        SidLogitsProcessor(small_trie, tm, eos_token_id=[1, 3])
    with pytest.raises(ValueError, match="eos_token_id: expected a token id or a non-empty list"):
        SidLogitsProcessor(small_trie, tm, eos_token_id=[])
    late = SidLogitsProcessor(small_trie, tm, start=5)
    with pytest.raises(ValueError, match="input_ids: expected at least start = 5 columns .*, got 2"):
        late(torch.zeros((1, 2), dtype=torch.long), torch.zeros((1, 8)))
    root = late(torch.zeros((1, 5), dtype=torch.long), torch.zeros((1, 8)))  # the SID starts now
    assert torch.isfinite(root).nonzero()[:, 1].tolist() == [2, 3, 4]
    with pytest.raises(TypeError, match="input_ids: expected integer token ids, got dtype torch.float32"):
        free(torch.zeros((1, 2)), torch.zeros((1, 8)))


def test_set_num_threads_range():
    before = sk.get_num_threads()
    for bad, exc in ((0, ValueError), (-1, ValueError), (2**64, ValueError), (4097, ValueError), (2.0, TypeError)):
        with pytest.raises(exc, match="n: expected"):
            sk.set_num_threads(bad)
    assert sk.get_num_threads() == before
    from sidkit import _native

    for bad in (0, 4097, 10**9):  # the native call too: a count no pool can start is refused
        with pytest.raises(ValueError, match="n: expected 1..4096 threads"):
            _native.set_num_threads(bad)
    assert sk.get_num_threads() == before


def test_num_threads_environment_variable():
    import subprocess

    code = "import sidkit; print(sidkit.get_num_threads())"
    for value, want in (("3", "3"), ("abc", '"abc"'), ("0", '"0"'), ("5000", '"5000"'), ("-2", '"-2"')):
        env = {**os.environ, "SIDKIT_NUM_THREADS": value}
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        if value == "3":
            assert r.returncode == 0 and r.stdout.strip() == "3", r.stderr
        else:  # refused at once, never a pool of thousands of threads
            assert r.returncode == 1
            assert f"ValueError: SIDKIT_NUM_THREADS: expected an integer in 1..4096, got {want}" in r.stderr


def test_sid_table_add_checks_embeddings_and_codebooks():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 4)).astype(np.float32)
    cb = sk.RQKMeans(2, 4, iters=3, seed=0, verbose=False).fit(emb)
    table = sk.resolve(cb.encode(emb[:30]), item_ids=np.arange(30))
    new_codes = cb.encode(emb[30:])
    with pytest.raises(ValueError, match="embeddings, codebooks: expected both or neither"):
        table.add(np.arange(30, 40), new_codes, embeddings=emb[30:])  # was silently ignored
    small = sk.Codebooks(cb.data[:6].reshape(2, 3, 4))
    with pytest.raises(ValueError, match=r"codebooks: expected sizes \(4, 4\) \(the table's levels\), got \(3, 3\)"):
        table.add(np.arange(30, 40), new_codes, embeddings=emb[30:], codebooks=small)
    grown = table.add(np.arange(30, 40), new_codes, embeddings=emb[30:], codebooks=cb)
    np.testing.assert_array_equal(grown.codes[:30], table.codes)  # existing SIDs unchanged


def test_tiger_recommend_and_rqvae_fit_arguments():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sidkit.models.tiger import TIGER

    table = sk.SidTable([1, 2, 3], [[0, 1], [1, 0], [1, 1]], (2, 2))
    model = TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=16)
    vocab = model.t5.config.vocab_size
    good = np.array([[0, 2, 5], [0, 0, 3]])
    for bad, exc, msg in (
        (np.array([[0, vocab]]), ValueError, f"inputs: expected token ids in \\[0, {vocab}\\), got {vocab}"),
        (np.array([[0, -1]]), ValueError, "got -1"),
        (good.astype(float), TypeError, "inputs: expected integer token ids"),
        (good[0], ValueError, "inputs: expected shape \\(B, T\\)"),
        (np.zeros((2, 0), np.int64), ValueError, "inputs: expected shape \\(B, T\\) with T >= 1, got \\(2, 0\\)"),
    ):
        with pytest.raises(exc, match=msg):
            model.recommend(bad, beam_width=2, top_k=2)
    # Any integer dtype decodes as int64 does (torch's embedding takes int64/int32 only).
    want = model.recommend(good, beam_width=4, top_k=3)
    for dtype in (np.int16, np.uint8, np.uint16, np.uint32, np.uint64, np.int32):
        np.testing.assert_array_equal(model.recommend(good.astype(dtype), beam_width=4, top_k=3), want)
    with pytest.raises(ValueError, match="batch_size: expected >= 1, got 0"):
        model.recommend(good, beam_width=2, top_k=2, batch_size=0)
    assert model.recommend(torch.as_tensor(good), beam_width=4, top_k=3).shape == (2, 3)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    vae = sk.RQVAE(8, 4, (16,), 2, 4)
    for kwargs, msg in (({"batch_size": 0}, "batch_size: expected >= 1, got 0"), ({"epochs": -1}, "epochs: expected")):
        with pytest.raises(ValueError, match=msg):
            vae.fit(x, verbose=False, **kwargs)


def test_sid_table_from_arrow_names_a_missing_sid():
    pa = pytest.importorskip("pyarrow")
    t = sk.SidTable([1, 2, 3], [[0, 1], [1, 0], [1, 1]], (2, 2)).to_arrow()
    sid = t.column("sid").combine_chunks()
    holed = pa.FixedSizeListArray.from_arrays(sid.values, 2, mask=pa.array([False, True, False]))
    with pytest.raises(ValueError, match="sid: expected a SID in every row, got 1 missing"):
        sk.SidTable.from_arrow(t.set_column(t.column_names.index("sid"), "sid", holed))


def test_no_columns_and_float64_beyond_float32_are_named(cb):
    with pytest.raises(ValueError, match=r"x: expected at least one column \(D >= 1\), got shape \(10, 0\)"):
        sk.RQKMeans(levels=2, codebook_size=4).fit(np.zeros((10, 0), np.float32))
    x = np.zeros((5, 4))
    x[2, 3] = -1e300  # finite in float64, inf after the float32 cast: the message shows the input
    with pytest.raises(ValueError, match=r"x: expected finite values within ±1e15, got -1e\+300 at \(2, 3\)"):
        cb.encode(x)
    with pytest.raises(ValueError, match="x: expected finite values within ±1e15, got -1e"):
        sk.RQKMeans(levels=2, codebook_size=4).fit(x)
    x[2, 3] = 1e14  # in range: cast as before
    assert cb.encode(x).shape == (5, 3)


def test_bad_devices_are_named_before_any_work():
    torch = pytest.importorskip("torch")
    from sidkit.train import fit

    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    bad = ["bogus", "cuda:x", 1.5]
    if not torch.cuda.is_available():
        bad.append("cuda")
    for device in bad:
        with pytest.raises(ValueError, match=r"device: (expected a torch device|.* requested but torch sees)"):
            sk.RQKMeans(levels=2, codebook_size=4).fit(x, device=device)
        with pytest.raises(ValueError, match="device: "):
            sk.train_rqvae(x, levels=2, codebook_size=4, epochs=1, device=device, verbose=False)
        with pytest.raises(ValueError, match="device: "):
            fit(torch.nn.Linear(2, 2), None, epochs=1, device=device, verbose=False)


def test_sasrec_recommend_names_bad_inputs():
    torch = pytest.importorskip("torch")
    from sidkit.models import SASRec

    m = SASRec(5, max_len=4, d_model=8, num_layers=1, num_heads=2, dropout=0.0, seed=0)
    good = np.array([[0, 1, 2], [3, 4, 5]])
    for bad, exc, msg in (
        (np.array([[0, 6]]), ValueError, r"inputs: expected item ids in \[0, 5\] \(0 = padding\), got 6"),
        (np.array([[-1, 2]]), ValueError, "got -1"),
        (good.astype(float), TypeError, "inputs: expected integer item ids, got dtype float64"),
        (good[0], ValueError, r"inputs: expected shape \(B, T\) with T >= 1"),
        ("1 2", TypeError, "inputs: expected a numpy array or torch tensor"),
    ):
        for call in (m.recommend, m.scores):
            with pytest.raises(exc, match=msg):
                call(bad)
    with pytest.raises(ValueError, match="top_k: expected >= 1, got 0"):
        m.recommend(good, top_k=0)
    # A list longer than the catalog is padded with -1; any integer dtype ranks as int64 does.
    top = m.recommend(torch.as_tensor(good), top_k=7)
    assert top.shape == (2, 7) and (top[:, 5:] == -1).all() and sorted(top[0, :5]) == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(m.recommend(good.astype(np.uint8), top_k=7), top)
    # A history wider than max_len (4) keeps its last 4 columns, as the examples do.
    wide = np.array([[5, 4, 0, 1, 2, 3]])
    np.testing.assert_array_equal(m.recommend(wide, top_k=5), m.recommend(wide[:, -4:], top_k=5))


def test_outputs_too_large_are_errors_not_aborts():
    """A caller-sized output that cannot fit is a MemoryError naming the argument (the process
    used to abort); beam search over codebooks whose product tables would not fit is refused."""
    cb = sk.Codebooks([np.full((1, 10_000_000), 0.5, np.float32)])
    with pytest.raises(MemoryError, match="codes: could not allocate"):
        cb.decode(np.zeros((100_000, 1), np.uint16))  # 4 TB of output
    k = 65536
    big = sk.Codebooks([(np.arange(k) % 97).astype(np.float32).reshape(-1, 1)] * 2)
    with pytest.raises(ValueError, match=r"beam: expected 1 \(greedy\) for these codebooks"):
        big.encode(np.ones((2, 1), np.float32), beam=2)
    assert big.encode(np.ones((2, 1), np.float32)).shape == (2, 2)


def test_native_calls_with_caller_sized_or_aliased_buffers_are_errors():
    """Zero-width prefixes of a huge row count, outputs K times their input, outputs that share
    memory with another argument, bool bytes other than 0/1 and mismatched shapes: each is a
    clear error or a right answer, never a panic, an abort or undefined behaviour."""
    from sidkit import _native

    t = _native.Trie(np.array([[0, 1], [1, 0]], np.uint16), [2, 2], np.array([5, 6]))
    with pytest.raises((MemoryError, ValueError), match="prefixes"):
        t.walk(np.zeros((2**61, 0), np.uint16))  # was a PanicException (capacity overflow)
    assert t.walk(np.zeros((3, 0), np.uint16)).tolist() == [0, 0, 0]  # the root
    one = _native.Trie(np.arange(65536, dtype=np.uint16)[:, None], [65536], np.arange(65536))
    with pytest.raises((MemoryError, ValueError), match="node_ids"):
        one.children(np.zeros(2**18, np.int64))  # 2**34 outputs (170 GB) from 2 MB of input
    offsets, codes, ids = one.children(np.zeros(2, np.int64))
    assert offsets.tolist() == [0, 65536, 131072] and codes[65535] == 65535 and ids[0] == 1

    rng = np.random.default_rng(0)
    xb = bytearray(rng.standard_normal(16).astype(np.float32).tobytes())
    x = np.frombuffer(xb, np.float32).reshape(8, 2)
    cents = x[:3].copy()
    # Arrays over one Python buffer have different numpy bases: numpy's borrow check misses them.
    buf = bytearray(32)
    labels, err = np.frombuffer(buf, np.uint32), np.frombuffer(buf, np.float32)
    with pytest.raises(ValueError, match="labels: expected an array that shares no memory with err"):
        _native.assign_bounded(cents, x, labels, err, np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="err: expected an array that shares no memory with x"):
        _native.assign_bounded(
            cents, x, np.zeros(8, np.uint32), np.frombuffer(xb, np.float32, 8), np.zeros(8, np.float32)
        )
    searched = _native.assign_bounded(
        cents, x, np.zeros(8, np.uint32), np.zeros(8, np.float32), np.zeros(8, np.float32)
    )
    assert searched == 8
    # subtract_centroids writes x in place: it must not alias the centroids, and bad labels,
    # shapes, dtypes and strides are errors before anything is written.
    r = rng.standard_normal((6, 2)).astype(np.float32)
    before = r.copy()
    with pytest.raises(TypeError, match="already borrowed"):  # numpy's own borrow check
        _native.subtract_centroids(r, r[:3], np.zeros(6, np.uint32))
    rb = bytearray(48)
    with pytest.raises(ValueError, match="x: expected an array that shares no memory with centroids"):
        _native.subtract_centroids(
            np.frombuffer(rb, np.float32).reshape(6, 2),
            np.frombuffer(rb, np.float32, 6).reshape(3, 2),
            np.zeros(6, np.uint32),
        )
    with pytest.raises(ValueError, match=r"labels: expected values in 0\.\.3, got 3"):
        _native.subtract_centroids(r, cents, np.array([0, 1, 2, 3, 0, 0], np.uint32))
    with pytest.raises(ValueError, match=r"x: expected \(5, 2\)"):
        _native.subtract_centroids(r, cents, np.zeros(5, np.uint32))
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2\)"):
        _native.subtract_centroids(r.reshape(3, 4), cents, np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        _native.subtract_centroids(np.asfortranarray(r), cents, np.zeros(6, np.uint32))
    # A Fortran-ordered input is contiguous too, but read as C order it would be transposed:
    # it was silently misread (means of the wrong values) before the C-order check.
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        _native.centroid_means(np.asfortranarray(r), np.zeros(6, np.uint32), 1)
    with pytest.raises(ValueError, match="centroids: expected a C-contiguous array"):
        _native.subtract_centroids(r, np.asfortranarray(cents), np.zeros(6, np.uint32))
    # rust-numpy's dtype error ("type mismatch: from=float64, to=float32") does not name the
    # argument; PyO3 attaches it as a PEP 678 note, which every traceback prints.
    for args, name in (
        ((r.astype(np.float64), cents, np.zeros(6, np.uint32)), "x"),
        ((r, cents.astype(np.float64), np.zeros(6, np.uint32)), "centroids"),
        ((r, cents, np.zeros(6, np.int64)), "labels"),
    ):
        with pytest.raises(TypeError, match="float64|int64") as err:
            _native.subtract_centroids(*args)
        assert f"while processing '{name}'" in getattr(err.value, "__notes__", [])
    np.testing.assert_array_equal(r, before)
    lab = np.array([2, 0, 1, 1, 0, 2], np.uint32)
    _native.subtract_centroids(r, cents, lab)
    np.testing.assert_array_equal(r, before - cents[lab])  # one f32 subtraction per value

    cb = sk.Codebooks([np.array([[0.0], [1.0], [2.0]], np.float32)])
    codes = np.zeros((4, 1), np.uint16)
    xs = np.array([[0.0], [0.1], [0.2], [0.3]], np.float32)
    ids = np.arange(4, dtype=np.int64)
    for byte in (1, 2, 255):  # any non-zero byte means "fixed"
        fixed = np.array([0, 0, 0, byte], np.uint8)
        r = _native.reassign(cb.data, [3], xs, codes, ids, 1, 200, "knn", 0, fixed)
        assert r["codes"][3, 0] == 0 and len(r["unresolved"]) == 1  # the fixed item keeps code 0
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 1\)"):
        _native.reassign(cb.data, [3], xs.reshape(2, 2), codes, ids)
    with pytest.raises(ValueError, match=r"codes: expected shape \(4, 1\)"):
        _native.reassign(cb.data, [3], xs, np.zeros((2, 2), np.uint16), ids)


def _misaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` at an odd byte offset of its buffer (not aligned)."""
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, a.dtype, a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


def test_misaligned_contiguous_arrays_are_copied_not_refused():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    cb = sk.RQKMeans(2, 8, iters=3, seed=0, verbose=False).fit(x)
    codes = cb.encode(x)
    np.testing.assert_array_equal(cb.encode(_misaligned(x)), codes)
    np.testing.assert_array_equal(cb.encode(_misaligned(x), beam=3), cb.encode(x, beam=3))
    np.testing.assert_array_equal(cb.decode(_misaligned(codes)), cb.decode(codes))
    np.testing.assert_array_equal(cb.decode(_misaligned(codes.astype(np.int64))), cb.decode(codes))
    assert sk.RQKMeans(2, 8, iters=3, seed=0, verbose=False).fit(_misaligned(x)) == cb
    ids = np.arange(300, dtype=np.int64) + 7
    t = sk.resolve(codes, item_ids=ids)
    t2 = sk.resolve(_misaligned(codes), item_ids=_misaligned(ids))
    np.testing.assert_array_equal(t2.codes, t.codes)
    r = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=5)
    r2 = sk.resolve(_misaligned(codes), "reassign", embeddings=_misaligned(x), codebooks=cb, capacity=5)
    np.testing.assert_array_equal(r2.codes, r.codes)
    trie = sk.Trie(_misaligned(t.codes), _misaligned(t.item_ids))
    np.testing.assert_array_equal(trie.lookup(_misaligned(t.codes.astype(np.int64))), t.item_ids)
    nodes = trie.walk(t.codes[:5, :1])
    np.testing.assert_array_equal(
        trie.child(_misaligned(nodes), _misaligned(t.codes[:5, 1].astype(np.int64))), trie.walk(t.codes[:5, :2])
    )
    search = sk.BeamSearch(trie, 2, 4)
    logp = np.log(np.full((8, trie.sizes[0]), 1 / trie.sizes[0], np.float32))
    codes0, parents = search.step(_misaligned(logp))
    assert (codes0 < trie.sizes[0]).all() and parents.dtype == np.int64


def test_uint64_node_ids_beyond_int64_are_refused(small_trie):
    for call in (small_trie.children, lambda n: small_trie.mask(n)):
        with pytest.raises(ValueError, match=r"node_ids: expected -1\.\."):
            call(np.array([2**64 - 1], np.uint64))
    assert small_trie.children(np.array([0], np.uint64))[0].tolist() == small_trie.children([0])[0].tolist()


def test_resolve_limits_beyond_64_bits_mean_no_limit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 3)).astype(np.float32)
    cb = sk.RQKMeans(1, 4, iters=3, seed=0, verbose=False).fit(x)
    codes = cb.encode(x)
    t = sk.resolve(codes, max_suffix=2**64)
    np.testing.assert_array_equal(t.codes, sk.resolve(codes).codes)
    big = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=2**64, candidates=2**70)
    np.testing.assert_array_equal(
        big.codes, sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=60).codes
    )


def test_beam_score_sums_that_overflow_to_minus_inf_are_errors():
    trie = sk.Trie(np.array([[0, 1], [1, 0]]))
    search = sk.BeamSearch(trie, 1, 2)
    search.step(np.array([[-3e38, -3e38], [-3e38, -3e38]], np.float32))
    with pytest.raises(ValueError, match="logp: .*a sum that overflows float32 to -inf at row 0, column 1"):
        search.step(np.array([[-3e38, -3e38], [-3e38, -3e38]], np.float32))
    search = sk.BeamSearch(trie, 1, 2)  # -inf given (a masked code) is no overflow
    search.step(np.array([[-1.0, -np.inf], [-1.0, -np.inf]], np.float32))
    search.step(np.array([[-np.inf, -1.0], [-np.inf, -1.0]], np.float32))
    items, scores = search.finish()
    assert items.tolist() == [[0, -1]] and scores[0, 0] == -2.0


def test_fit_names_residuals_beyond_the_core_limit():
    rng = np.random.default_rng(0)
    x = (np.sign(rng.standard_normal((64, 6))) * 7e14).astype(np.float32)  # within ±1e15
    with pytest.raises(ValueError, match=r"x: its level-1 residuals .* go beyond ±1e15.*scale x down"):
        sk.RQKMeans(2, 4, iters=3, seed=0, verbose=False).fit(x)
    sk.RQKMeans(2, 4, iters=3, seed=0, verbose=False).fit(x / 7e14)


def test_small_argument_checks_name_their_argument():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    cb = sk.RQKMeans(2, 4, iters=3, seed=0, verbose=False).fit(x)
    codes = cb.encode(x)
    with pytest.raises(TypeError, match="allow_duplicates: expected a bool, got int"):
        sk.Trie(codes, allow_duplicates=1)
    with pytest.raises(ValueError, match="order: expected 'knn' or 'random', got None"):
        sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=5, order=None)
    with pytest.raises(TypeError, match="sizes: expected a sequence of ints"):
        sk.TokenMap({3, 4})
    with pytest.raises(ValueError, match="seed: expected an int in"):
        sk.kmeans(x, 4, seed=-1)
    from sidkit.metrics import report

    with pytest.raises(ValueError, match="seed: expected an int in"):
        report(x, codes, seed=-1)
    # Empty lists are empty integer queries, not float64 arrays.
    table = sk.resolve(codes, "reassign", embeddings=x, codebooks=cb, capacity=5)
    trie = sk.Trie(table)
    assert trie.mask([]).shape == (0, trie.sizes[0]) and trie.children([])[0].tolist() == [0]
    with pytest.raises(ValueError, match=r"codes: expected an \(N, t <= 2\) array, got shape \(0,\)"):
        sk.TokenMap((4, 4)).to_tokens([])  # a shape error, not "got dtype float64"
    with pytest.raises(ValueError, match=r"codes: expected shape \(N, 2\), got \(0,\)"):
        table.items([])
    assert table.rows([]).shape == (0,) and sk.TokenMap((4, 4)).to_codes([[]]).shape == (1, 0)


def test_add_suffix_limit_and_mask_out_messages():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    cb = sk.RQKMeans(2, 4, iters=3, seed=0, verbose=False).fit(x)
    table = sk.resolve(cb.encode(x), "reassign", embeddings=x, codebooks=cb, capacity=5)
    bad = x[:2].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"embeddings: expected finite values within ±1e15, got nan at \(1, 2\)"):
        table.add([100, 101], cb.encode(x[:2]), embeddings=bad, codebooks=cb)  # the caller's index, not +40 rows
    with pytest.raises(ValueError, match="codes: a group of 70000 items share one SID, more than the 65536 values"):
        sk.resolve(np.zeros((70000, 1), np.uint16))
    with pytest.raises(ValueError, match="max_suffix: expected every collision group to fit in 3"):
        sk.resolve(np.zeros((5, 1), np.uint16), max_suffix=3)  # a limit given is named as such
    trie = sk.Trie(table)
    tm = sk.TokenMap(trie.sizes, offset=2)
    nodes = np.zeros(3, np.int64)
    expanded = torch.zeros(1, tm.vocab_size, dtype=torch.bool).expand(3, -1)
    with pytest.raises(ValueError, match=r"out: expected a tensor whose elements do not overlap, got strides \(0, 1\)"):
        trie.mask(nodes, token_map=tm, out=expanded)
    with pytest.raises(ValueError, match="out: expected a tensor with storage, got one on the meta device"):
        trie.mask(nodes, token_map=tm, out=torch.zeros(3, tm.vocab_size, dtype=torch.bool, device="meta"))
    wide = torch.zeros(3, 2 * tm.vocab_size, dtype=torch.bool)[:, ::2]  # strided, no overlap: fine
    assert trie.mask(nodes, token_map=tm, out=wide).equal(torch.from_numpy(trie.mask(nodes, token_map=tm)))


def test_native_index_arrays_are_safe_from_aliasing_and_concurrent_writes():
    """Index arrays (labels, codes) are copied before the core runs without the GIL: a labels
    view of `x`'s own memory, or another thread rewriting labels, can no longer index past K
    (both were a Rust panic: PanicException)."""
    import threading

    from sidkit import _native

    buf = bytearray(8000)
    x = np.frombuffer(buf, np.float32, offset=400)[:900].reshape(900, 1)  # two views of one buffer
    labels = np.frombuffer(buf, np.uint32)[:900]
    labels[:] = 0
    _native.subtract_centroids(x, np.array([[1.0]], np.float32), labels)
    assert (x[:100] == -1.0).all()  # labels as they were when the call began: all 0
    xs = np.random.default_rng(0).standard_normal((50_000, 4)).astype(np.float32)
    lab = np.zeros(50_000, np.uint32)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            lab[:] = 4_000_000_000
            lab[:] = 0

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(100):  # each call sees a valid copy (means) or a bad one (ValueError)
            try:
                means, counts = _native.centroid_means(xs, lab, 2)
                assert counts.sum() == 50_000
            except ValueError as e:
                assert "labels: expected values in 0..2" in str(e)
    finally:
        stop.set()
        t.join()
    # k-means' centroids are named as such, not "codebooks".
    with pytest.raises(ValueError, match="centroids: expected 1 <= codebook size"):
        _native.balanced_assign(np.zeros((0, 3), np.float32), np.zeros((4, 3), np.float32))
    z = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="centroids: expected finite values, got NaN"):
        _native.assign_bounded(
            np.full((2, 3), np.nan, np.float32), np.zeros((4, 3), np.float32), np.zeros(4, np.uint32), z, z.copy()
        )
