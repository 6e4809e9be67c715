"""RQ assignment, decoding and persistence, checked against brute-force numpy references."""

from __future__ import annotations

import itertools
import multiprocessing as mp

import numpy as np
import pytest
import sidkit as sk
from conftest import clustered, flip_bit, greedy_reference


def residual_norm(cb: np.ndarray, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    r = x.astype(np.float64)
    for l in range(codes.shape[1]):
        r = r - cb[l].astype(np.float64)[codes[:, l].astype(np.int64)]
    return (r**2).sum(1)


@pytest.mark.parametrize("d", [3, 64, 768])
@pytest.mark.parametrize("k", [1, 7, 256])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_greedy_matches_brute_force(rng, d, k, kind):
    n = 211
    if kind == "random":
        x = rng.standard_normal((n, d)).astype(np.float32)
        cbs = rng.standard_normal((3, k, d)).astype(np.float32)
    else:
        x = clustered(rng, n, d)
        cbs = np.stack([clustered(rng, k, d, scale=s) for s in (3.0, 0.3, 0.03)])
    codes, errors = sk.Codebooks(cbs).encode(x, return_errors=True)
    assert codes.dtype == np.uint16 and codes.shape == (n, 3)
    ref_codes, _ = greedy_reference(cbs, x)
    # Level 0 sees the same input in both: any difference must be an exact float32 tie.
    x64 = x.astype(np.float64)
    got = ((x64 - cbs[0][codes[:, 0]].astype(np.float64)) ** 2).sum(1)
    want = ((x64 - cbs[0][ref_codes[:, 0]].astype(np.float64)) ** 2).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    same_rows = codes[:, 0] == ref_codes[:, 0]
    assert same_rows.mean() > 0.95
    # Where a row's path matches the reference on every level the codes are identical...
    full = (codes.astype(np.int64) == ref_codes).all(1)
    assert full.mean() > 0.9
    # ...and the reported errors are the exact residual norms of the chosen codes.
    np.testing.assert_allclose(errors[:, -1], residual_norm(cbs, x, codes), rtol=1e-4, atol=1e-4)


def test_greedy_is_level_by_level_nearest(rng):
    """Every level's code is the nearest codeword to the residual left by the chosen codes."""
    d, k = 32, 50
    x = clustered(rng, 501, d)
    cbs = np.stack([clustered(rng, k, d, scale=s) for s in (3.0, 0.5, 0.1)])
    codes = sk.Codebooks(cbs).encode(x)
    r = x.astype(np.float64)
    for l in range(3):
        dist = ((r[:, None, :] - cbs[l].astype(np.float64)[None]) ** 2).sum(-1)
        chosen = dist[np.arange(len(r)), codes[:, l]]
        np.testing.assert_allclose(chosen, dist.min(1), rtol=1e-6, atol=1e-9)
        r = r - cbs[l].astype(np.float64)[codes[:, l]]


@pytest.mark.parametrize("beam", [2, 5, 16])
def test_beam_never_worse_than_greedy(rng, beam):
    x = rng.standard_normal((301, 24)).astype(np.float32)
    cbs = rng.standard_normal((3, 16, 24)).astype(np.float32)
    cb = sk.Codebooks(cbs)
    g = residual_norm(cbs, x, cb.encode(x))
    b_codes, b_err = cb.encode(x, beam=beam, return_errors=True)
    b = residual_norm(cbs, x, b_codes)
    assert np.all(b <= g * (1 + 1e-6) + 1e-9)
    assert b.mean() < g.mean()  # and it does find better codes on random data
    np.testing.assert_allclose(b_err[:, -1], b, rtol=1e-4, atol=1e-5)


def test_beam_is_exhaustive_when_wide(rng):
    k, levels, d = 4, 3, 5
    x = rng.standard_normal((97, d)).astype(np.float32)
    cbs = rng.standard_normal((levels, k, d)).astype(np.float32)
    codes = sk.Codebooks(cbs).encode(x, beam=k ** (levels - 1))
    all_codes = np.array(list(itertools.product(range(k), repeat=levels)))
    recon = cbs[0][all_codes[:, 0]] + cbs[1][all_codes[:, 1]] + cbs[2][all_codes[:, 2]]
    best = ((x.astype(np.float64)[:, None] - recon[None].astype(np.float64)) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(residual_norm(cbs, x, codes), best, rtol=1e-6, atol=1e-9)


def test_ragged_levels_and_decode(rng):
    d = 12
    levels = [rng.standard_normal((k, d)).astype(np.float32) for k in (9, 3, 20)]
    cb = sk.Codebooks(levels)
    assert cb.sizes == (9, 3, 20) and cb.levels == 3 and cb.dim == d
    x = rng.standard_normal((64, d)).astype(np.float32)
    codes = cb.encode(x, beam=3)
    assert (codes.max(0) < np.array([9, 3, 20])).all()
    want = sum(levels[l][codes[:, l]] for l in range(3))
    np.testing.assert_array_equal(cb.decode(codes), want)
    np.testing.assert_array_equal(cb.decode(codes.astype(np.int64)), want)
    np.testing.assert_array_equal(cb.decode(codes.astype(np.int32)), want)
    with pytest.raises(ValueError, match="to_numpy"):
        cb.to_numpy()


def test_input_layouts_and_dtypes_give_same_codes(rng):
    cbs = rng.standard_normal((2, 16, 8)).astype(np.float32)
    cb = sk.Codebooks(cbs)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    want = cb.encode(x)
    np.testing.assert_array_equal(cb.encode(np.asfortranarray(x)), want)
    strided = np.zeros((80, 16), dtype=np.float32)
    strided[::2, ::2] = x
    np.testing.assert_array_equal(cb.encode(strided[::2, ::2]), want)
    np.testing.assert_array_equal(cb.encode(x.astype(np.float64)), want)
    np.testing.assert_array_equal(sk.Codebooks(cbs.astype(np.float64)).encode(x), want)


def test_torch_tensors_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    cbs = rng.standard_normal((2, 16, 8)).astype(np.float32)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    cb = sk.Codebooks(torch.from_numpy(cbs))
    codes, errors = cb.encode(torch.from_numpy(x), return_errors=True)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.int64
    assert isinstance(errors, torch.Tensor) and errors.dtype == torch.float32
    np.testing.assert_array_equal(codes.numpy(), cb.encode(x))
    recon = cb.decode(codes)
    assert isinstance(recon, torch.Tensor)
    np.testing.assert_array_equal(recon.numpy(), cb.decode(codes.numpy()))
    np.testing.assert_array_equal(cb.encode(torch.from_numpy(x).double()).numpy(), codes.numpy())


def test_empty_input(rng):
    cb = sk.Codebooks(rng.standard_normal((3, 4, 6)).astype(np.float32))
    codes, errors = cb.encode(np.zeros((0, 6), np.float32), beam=2, return_errors=True)
    assert codes.shape == (0, 3) and codes.dtype == np.uint16 and errors.shape == (0, 3)
    assert cb.decode(codes).shape == (0, 6)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("beam", [1, 4])
def test_same_codes_for_any_thread_count(rng, threads, beam):
    x = clustered(rng, 3001, 48)
    cb = sk.Codebooks(np.stack([clustered(rng, 64, 48, scale=s) for s in (3.0, 0.3)]))
    sk.set_num_threads(1)
    want = cb.encode(x, beam=beam, return_errors=True)
    sk.set_num_threads(threads)
    assert sk.get_num_threads() == threads
    got = cb.encode(x, beam=beam, return_errors=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def _encode_in_child(queue):  # pragma: no cover - runs in a forked child
    rng = np.random.default_rng(0)
    cb = sk.Codebooks(rng.standard_normal((2, 32, 16)).astype(np.float32))
    queue.put(cb.encode(rng.standard_normal((5000, 16)).astype(np.float32)).sum())


def test_fork_after_pool_started_does_not_deadlock(rng):
    """torch DataLoader workers fork: the child must not reuse the parent's rayon threads."""
    sk.set_num_threads(2)
    cb = sk.Codebooks(rng.standard_normal((2, 32, 16)).astype(np.float32))
    cb.encode(rng.standard_normal((5000, 16)).astype(np.float32))  # parent's pool is running
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("encode in a forked child deadlocked")
    assert child.exitcode == 0
    assert queue.get(timeout=5) > 0


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_round_trip_readable_without_sidkit(rng, tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    levels = [rng.standard_normal((k, 5)).astype(np.float32) for k in (4, 7)]
    cb = sk.Codebooks(levels, method="rq-kmeans", meta={"seed": 3})
    path = tmp_path / f"cb{suffix}"
    cb.save(path)
    back = sk.Codebooks.load(path)
    assert back == cb and back.method == "rq-kmeans" and back.meta == {"seed": 3}
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
    if suffix == ".npz":
        with np.load(path) as f:  # plain numpy, no pickle
            np.testing.assert_array_equal(f["codebooks"], np.concatenate(levels))
            np.testing.assert_array_equal(f["sizes"], [4, 7])


def test_load_rejects_foreign_files(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="codebooks"):
        sk.Codebooks.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="path"):
        sk.Codebooks.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        sk.Codebooks.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_load_refuses_a_flipped_bit_and_bad_metadata(rng, tmp_path, suffix):
    """safetensors has no checksum of its own: the SHA-256 in the metadata catches a flipped
    bit in the arrays (npz's zip CRC catches it there too)."""
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    cb = sk.Codebooks([rng.standard_normal((64, 8)).astype(np.float32)] * 2)
    path = tmp_path / f"cb{suffix}"
    cb.save(path)
    raw = path.read_bytes()
    at = raw.find(cb.data[5].tobytes()) if suffix == ".safetensors" else len(raw) // 2
    assert at > 0
    bad = flip_bit(path, at + 1, tmp_path / f"bad{suffix}")
    with pytest.raises(ValueError, match="path: .*(damaged|could not read)"):
        sk.Codebooks.load(bad)
    if suffix == ".npz":
        import json

        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays["meta"]))
        for broken in ({**meta, "levels": 5}, {**meta, "method": 123}):
            np.savez(tmp_path / "meta.npz", **{**arrays, "meta": np.array(json.dumps(broken))})
            with pytest.raises(ValueError, match="path: .* is a damaged"):
                sk.Codebooks.load(tmp_path / "meta.npz")
        # The digest seals the metadata too: a valid-looking change is still an error.
        np.savez(tmp_path / "meta.npz", **{**arrays, "meta": np.array(json.dumps({**meta, "method": "rp-kmeans"}))})
        with pytest.raises(ValueError, match="is a damaged 'sidkit.codebooks/2' file: it does not match its SHA-256"):
            sk.Codebooks.load(tmp_path / "meta.npz")
        np.savez(tmp_path / "meta.npz", **{**arrays, "meta": np.array(json.dumps({**meta, "sha256": None}))})
        with pytest.raises(ValueError, match="does not match its SHA-256"):
            sk.Codebooks.load(tmp_path / "meta.npz")
        # Legacy files (format /1): no digest, or one over the arrays only; both load.
        from sidkit.codebooks import _digest

        old = {k: v for k, v in meta.items() if k != "sha256"} | {"format": "sidkit.codebooks/1"}
        np.savez(tmp_path / "old.npz", **{**arrays, "meta": np.array(json.dumps(old))})
        assert sk.Codebooks.load(tmp_path / "old.npz") == cb
        old["sha256"] = _digest(arrays["codebooks"], arrays["sizes"])
        np.savez(tmp_path / "old.npz", **{**arrays, "meta": np.array(json.dumps(old))})
        assert sk.Codebooks.load(tmp_path / "old.npz") == cb
        np.savez(
            tmp_path / "old.npz", **{**arrays, "codebooks": arrays["codebooks"] + 1, "meta": np.array(json.dumps(old))}
        )
        with pytest.raises(ValueError, match="'sidkit.codebooks/1' file: its arrays do not match"):
            sk.Codebooks.load(tmp_path / "old.npz")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_codebooks_file_with_any_bit_flipped_fails_or_loads_unchanged(rng, tmp_path, suffix):
    """One flipped bit anywhere (a different bit in each byte): a ValueError, or the same codebooks,
    method and meta, never other values."""
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    cb = sk.Codebooks([rng.standard_normal((6, 3)).astype(np.float32)] * 2, method="rq-kmeans", meta={"seed": 3})
    path = tmp_path / f"cb{suffix}"
    cb.save(path)
    for at in range(path.stat().st_size):
        bad = flip_bit(path, at, tmp_path / f"bad{suffix}", bit=at % 8)
        try:
            got = sk.Codebooks.load(bad)
        except ValueError:
            continue
        assert got == cb and got.method == cb.method and got.meta == cb.meta, f"byte {at}"


def test_beam_beyond_the_limit_is_a_value_error(rng):
    cb = sk.Codebooks([rng.standard_normal((4, 3)).astype(np.float32)] * 2)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    for beam in (4097, 2**64, np.uint64(2**63)):
        with pytest.raises(ValueError, match="beam: expected 1 <= beam <= 4096"):
            cb.encode(x, beam=beam)
    np.testing.assert_array_equal(cb.encode(x, beam=4096), cb.encode(x, beam=16))  # 16 paths: all of them
