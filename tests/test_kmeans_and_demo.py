"""RQ-KMeans codebook learning (basic), the data loader and the demo command."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import sidkit as sk
from sidkit.cli import main
from sidkit.data import item_embeddings, load_amazon, synthetic_catalog
from sidkit.metrics import collisions


def test_kmeans_objective_never_increases(rng):
    x = synthetic_catalog(3000, 16, (20, 4), seed=1)
    _, labels, history = sk.kmeans(x, 40, iters=15, seed=0)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(history, history[1:], strict=False))
    assert len(np.unique(labels)) == 40  # no dead cluster left


def test_kmeans_recovers_separated_clusters(rng):
    centres = rng.standard_normal((8, 10)) * 20
    truth = np.repeat(np.arange(8), 100)
    x = (centres[truth] + rng.standard_normal((800, 10))).astype(np.float32)
    _, labels, _ = sk.kmeans(x, 8, iters=20, seed=0)
    # Each found cluster is exactly one true cluster (a perfect partition up to relabelling).
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=False))
    assert len(pairs) == 8


def test_rq_kmeans_fits_and_is_deterministic():
    x = synthetic_catalog(4000, 32, (16, 4, 4), seed=2)
    a = sk.RQKMeans(levels=3, codebook_size=16, iters=10, seed=7, verbose=False).fit(x)
    b = sk.RQKMeans(levels=3, codebook_size=16, iters=10, seed=7, verbose=False).fit(x)
    assert a == b and a.sizes == (16, 16, 16) and a.method == "rq-kmeans"
    _, errors = a.encode(x, return_errors=True)
    # Each level explains more of the signal on hierarchical data.
    per_level = errors.sum(0)
    assert per_level[0] < (x.astype(np.float64) ** 2).sum() and np.all(np.diff(per_level) < 0)


def test_rq_kmeans_rejects_too_few_points():
    with pytest.raises(ValueError, match="x: expected at least codebook_size = 256 rows, got 10"):
        sk.RQKMeans(codebook_size=256, verbose=False).fit(np.zeros((10, 4), np.float32))
    with pytest.raises(ValueError, match="levels"):
        sk.RQKMeans(levels=0)


def test_collision_stats_hand_worked():
    codes = np.array([[0, 1], [0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    s = collisions(codes)
    assert s == {"items": 6, "unique_sids": 3, "collision_rate": 5 / 6, "max_group": 3, "mean_group": 2.0}


def test_load_amazon_counts(amazon_dir):
    ds = load_amazon(amazon_dir, "Beauty")
    assert len(ds.sequences) == 22363 and ds.num_items == 12101 and ds.num_interactions == 198502
    assert ds.item_texts is not None and "OPI" in ds.item_texts[1]
    emb = item_embeddings(ds, 32)
    assert emb.shape == (12101, 32) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_array_equal(emb, item_embeddings(ds, 32))


def test_demo_synthetic(capsys):
    assert main(["demo", "--items", "3000", "--codebook-size", "32", "--iters", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "unique SIDs" in out and "largest collision group" in out


def test_demo_real_data(amazon_dir, capsys, tmp_path):
    args = ["demo", "--data", str(amazon_dir), "--iters", "5", "--quiet", "--save", str(tmp_path), "--no-train"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "12,101 items" in out and "22,363 users" in out
    assert "valid SIDs 100.0%" in out and "embedding hit rate@30" in out
    codes = np.load(tmp_path / "codes.npy")
    cb = sk.Codebooks.load(tmp_path / "codebooks.npz")
    assert codes.shape == (12101, 3)
    # The saved codebooks reproduce the saved codes from the same (deterministic) embeddings.
    emb = item_embeddings(load_amazon(amazon_dir), 64, seed=0)
    np.testing.assert_array_equal(cb.encode(emb), codes)
    table = sk.SidTable.load(tmp_path / "sids.npz")  # the resolved SIDs: the codes + a suffix, unique
    np.testing.assert_array_equal(table.codes[:, :3], codes)
    assert len(np.unique(table.codes, axis=0)) == 12101


def test_demo_reports_missing_data(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path), "--quiet"]) == 2
    assert "Beauty.txt" in capsys.readouterr().err


def test_resolve_cli_round_trip(tmp_path, capsys):
    x = synthetic_catalog(3000, 16, (8, 4), seed=3)
    cb = sk.RQKMeans(2, 8, iters=5, verbose=False).fit(x)
    codes = cb.encode(x)
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "x.npy", x)
    cb.save(tmp_path / "cb.npz")
    out = tmp_path / "sids.parquet"
    assert main(["resolve", str(tmp_path / "codes.npy"), "--out", str(out)]) == 0
    assert "colliding_groups" in capsys.readouterr().out
    table = sk.SidTable.from_parquet(out)
    np.testing.assert_array_equal(table.codes[:, :2], codes)
    args = ["resolve", str(out), "--out", str(tmp_path / "r.parquet"), "--method", "reassign"]
    assert main([*args, "--embeddings", str(tmp_path / "x.npy"), "--codebooks", str(tmp_path / "cb.npz")]) == 2
    assert "sizes: expected 3 level sizes" in capsys.readouterr().err  # the table has 3 levels, cb 2
    assert (
        main(["resolve", str(tmp_path / "codes.npy"), "--out", str(tmp_path / "r.parquet"), "--method", "reassign"])
        == 2
    )
    assert "--embeddings, --codebooks" in capsys.readouterr().err
    # A flag of the other method is refused, not ignored.
    c_ = str(tmp_path / "codes.npy")
    for flags, msg in (
        (["--capacity", "2"], "--capacity: not a setting of --method suffix"),
        (["--order", "random"], "--order: not a setting of --method suffix"),
        (["--method", "reassign", "--max-suffix", "3"], "--max-suffix: not a setting of --method reassign"),
        (["--codebooks", str(tmp_path / "cb.npz")], "--embeddings, --codebooks: expected both"),
    ):
        assert main(["resolve", c_, "--out", str(tmp_path / "f.npz"), *flags]) == 2
        assert msg in capsys.readouterr().err
    both = ["--embeddings", str(tmp_path / "x.npy"), "--codebooks", str(tmp_path / "cb.npz")]
    assert (
        main(["resolve", c_, "--out", str(tmp_path / "f.npz"), "--method", "reassign", "--capacity", "5000", *both])
        == 0
    )
    assert sk.SidTable.load(tmp_path / "f.npz").capacity == 5000


def test_cli_reports_import_errors_sidkit_raises(tmp_path, capsys, monkeypatch):
    """An ImportError sidkit raises itself (e.g. no text model installed) is a one-line error."""
    import sidkit.cli

    def no_text_model(args):
        raise ImportError("text_embeddings needs sentence-transformers: pip install '.[text]'")

    monkeypatch.setattr(sidkit.cli, "bench_cmd", no_text_model)
    assert main(["bench", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == "sidkit bench: error: text_embeddings needs sentence-transformers: pip install '.[text]'\n"


def test_cli_names_the_extra_of_a_missing_dependency(tmp_path, capsys, monkeypatch):
    """Without pyarrow, writing Parquet is a one-line error naming the `io` extra, not a traceback."""
    np.save(tmp_path / "codes.npy", np.array([[0, 1], [0, 1], [2, 3]], np.uint16))
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ModuleNotFoundError
    assert main(["resolve", str(tmp_path / "codes.npy"), "--out", str(tmp_path / "s.parquet")]) == 2
    err = capsys.readouterr().err
    assert "sidkit resolve: error: this needs pyarrow, from sidkit's 'io' extra" in err
    assert "pip install '.[io]'" in err and "Traceback" not in err
    assert not (tmp_path / "s.parquet").exists()
    assert main(["resolve", str(tmp_path / "codes.npy"), "--out", str(tmp_path / "s.npz")]) == 0  # npz needs none
    table = sk.SidTable.load(tmp_path / "s.npz")  # a real .npz SID table, readable back by the CLI
    np.testing.assert_array_equal(table.codes, [[0, 1, 0], [0, 1, 1], [2, 3, 0]])
    assert main(["resolve", str(tmp_path / "s.npz"), "--out", str(tmp_path / "t.NPZ")]) == 0
    np.testing.assert_array_equal(sk.SidTable.load(tmp_path / "t.NPZ").codes[:, :3], table.codes)
    assert main(["resolve", str(tmp_path / "t.NPZ"), "--out", str(tmp_path / "u.npz")]) == 0  # any case
    assert main(["resolve", str(tmp_path / "codes.npy"), "--out", str(tmp_path / "sids")]) == 2
    assert "--out: expected a .npz or .parquet path for the SID table" in capsys.readouterr().err


def test_library_names_the_extra_of_a_missing_dependency(tmp_path, monkeypatch):
    """Without safetensors / pyarrow, the library's error names the `io` extra and writes nothing."""
    cb = sk.Codebooks([np.eye(3, dtype=np.float32)])
    table = sk.resolve(np.array([[0], [0], [1]], np.uint16))
    for mod in ("safetensors", "pyarrow"):
        for name in [m for m in sys.modules if m == mod or m.startswith(mod + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, mod, None)
    io = r"from sidkit's 'io' extra \(pip install '\.\[io\]' in a sidkit checkout, or pip install pyarrow safetensors\)"
    for call, what in (
        (lambda: cb.save(tmp_path / "cb.safetensors"), "Codebooks.save to .safetensors needs safetensors"),
        (lambda: sk.Codebooks.load(tmp_path / "cb.safetensors"), "Codebooks.load of .safetensors needs safetensors"),
        (lambda: table.save(tmp_path / "t.parquet"), "SidTable.to_parquet needs pyarrow"),
        (lambda: sk.SidTable.load(tmp_path / "t.parquet"), "SidTable.from_parquet needs pyarrow"),
        (lambda: table.to_arrow(), "SidTable.to_arrow needs pyarrow"),
    ):
        with pytest.raises(ModuleNotFoundError, match=what + ", " + io):
            call()
    assert not list(tmp_path.iterdir())
    cb.save(tmp_path / "cb.npz")  # .npz needs neither
    np.testing.assert_array_equal(sk.Codebooks.load(tmp_path / "cb.npz").data, cb.data)


def _greedy_rq_numpy(x, centres):
    """Independent reference: nearest codeword per level on the residual, float64."""
    r = x.astype(np.float64).copy()
    codes = []
    for c in centres:
        c = c.astype(np.float64)
        d = (r**2).sum(1)[:, None] - 2 * r @ c.T + (c**2).sum(1)[None, :]
        j = d.argmin(1)
        codes.append(j)
        r -= c[j]
    return np.stack(codes, 1), r


def test_fit_and_encode_cli(tmp_path, capsys):
    x = synthetic_catalog(3000, 16, (8, 4), seed=3)
    np.save(tmp_path / "x.npy", x)
    cb_path, codes_path = tmp_path / "cb.npz", tmp_path / "codes.npy"
    args = ["fit", str(tmp_path / "x.npy"), "--out", str(cb_path), "--codes", str(codes_path)]
    assert main([*args, "--levels", "2", "--codebook-size", "8", "--iters", "5", "--seed", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    cb = sk.Codebooks.load(cb_path)
    api = sk.RQKMeans(2, 8, iters=5, seed=4, verbose=False)
    assert cb == api.fit(x)  # the same codebooks as the Python API with the same seed
    codes = np.load(codes_path)
    assert codes.dtype == np.uint16 and codes.shape == (3000, 2)
    np.testing.assert_array_equal(codes, api.codes_)
    assert cb.levels == 2 and cb.meta["iters"] == 5
    ref_codes, ref_residual = _greedy_rq_numpy(x, [cb.level(0), cb.level(1)])
    np.testing.assert_array_equal(codes, ref_codes)  # plain RQ-KMeans: the fit's codes are the nearest codewords
    rel = (ref_residual**2).sum() / (x.astype(np.float64) ** 2).sum()
    assert f"relative reconstruction error {rel:.4f}" in out
    assert f"unique SIDs {len(np.unique(codes, axis=0)):,}" in out

    enc = ["encode", str(cb_path), str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.npy")]
    assert main([*enc, "--errors", str(tmp_path / "err.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), ref_codes)
    np.testing.assert_allclose(np.load(tmp_path / "err.npy")[:, -1], (ref_residual**2).sum(1), rtol=1e-3, atol=1e-3)
    assert main([*enc, "--beam", "4"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), cb.encode(x, beam=4))
    capsys.readouterr()

    # balanced, sampled fit into safetensors: every row coded, level-0 clusters of the fitted rows equal-sized
    bal = ["fit", str(tmp_path / "x.npy"), "--out", str(tmp_path / "b.safetensors"), "--method", "balanced"]
    assert main([*bal, "--codebook-size", "8", "--codes", str(codes_path), "--quiet"]) == 0
    assert sk.Codebooks.load(tmp_path / "b.safetensors").method == "balanced-rq-kmeans"
    counts = np.bincount(np.load(codes_path)[:, 0], minlength=8)
    assert counts.min() >= 3000 // 8 and counts.max() <= -(-3000 // 8)
    sampled = ["fit", str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.npz"), "--codes", str(tmp_path / "s.bin")]
    assert main([*sampled, "--codebook-size", "8", "--sample", "0.5", "--quiet"]) == 0
    assert sk.Codebooks.load(tmp_path / "s.npz").meta["sample"] == 1500  # fitted on half the rows
    assert np.load(tmp_path / "s.bin").shape == (3000, 1 + 2)  # every row coded, written to exactly that path
    capsys.readouterr()

    # bad input: exit status 2 and the argument named
    np.save(tmp_path / "ints.npy", codes)
    assert main(["fit", str(tmp_path / "ints.npy"), "--out", str(tmp_path / "y.npz")]) == 2
    assert "embeddings: expected a (N, D) float array, got uint16 (3000, 2)" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz"), "--sample", "2.5"]) == 2
    assert "--sample: expected a row count" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz"), "--codebook-size", "5000"]) == 2
    assert "x: expected at least codebook_size = 5000 rows, got 3000" in capsys.readouterr().err
    x_nan = x.copy()
    x_nan[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", x_nan)
    assert main(["encode", str(cb_path), str(tmp_path / "nan.npy"), "--out", str(tmp_path / "y.npy")]) == 2
    assert "x: expected finite values" in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", np.zeros((4, 5), np.float32))
    assert main(["encode", str(cb_path), str(tmp_path / "wide.npy"), "--out", str(tmp_path / "y.npy")]) == 2
    assert "x: expected shape (N, 16), got (4, 5)" in capsys.readouterr().err
    assert main(["encode", str(cb_path), str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), "--beam", "0"]) == 2
    assert "beam: expected an int >= 1, got 0" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "x.npy"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]) == 2
    assert (
        "codebooks: expected a codebooks file (sidkit fit, Codebooks.save) or an RQ-VAE file" in capsys.readouterr().err
    )
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "y.npz").exists()
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "dir.npy").mkdir()
    for bad in ("empty.npy", "dir.npy"):
        assert main(["fit", str(tmp_path / bad), "--out", str(tmp_path / "y.npz")]) == 2
        assert "embeddings: expected a .npy file of (N, D) float embeddings, could not read" in capsys.readouterr().err
    fit = ["fit", str(tmp_path / "x.npy"), "--codebook-size", "8"]
    assert main([*fit, "--out", str(tmp_path / "y.npz"), "--device", "bogus"]) == 2
    assert "--device: expected a torch device" in capsys.readouterr().err
    assert main([*fit, "--out", str(tmp_path / "y.npz"), "--epochs", "3"]) == 2
    assert "--epochs: expected only with --method rqvae, got --method rqkmeans" in capsys.readouterr().err
    assert main([*fit, "--out", str(tmp_path / "no" / "such" / "cb.npz")]) == 2
    assert "--out: the folder of" in capsys.readouterr().err
    assert main([*fit, "--out", str(tmp_path / "y.npz"), "--codes", str(tmp_path / "no" / "c.npy")]) == 2
    assert "--codes: the folder of" in capsys.readouterr().err
    assert not (tmp_path / "y.npz").exists()  # checked before fitting: nothing written


@pytest.mark.parametrize("k", [7, 100])  # 100 > the 64 kept candidates: exercises the fallback scan
def test_balanced_rq_kmeans_cluster_sizes(k):
    x = synthetic_catalog(2003, 8, (4, 2), seed=4)  # few tight clusters: plain k-means is unbalanced
    model = sk.RQKMeans(levels=2, codebook_size=k, iters=5, seed=0, verbose=False, balanced=True)
    cb = model.fit(x)
    assert cb.method == "balanced-rq-kmeans" and model.codes_.shape == (2003, 2)
    for level in range(2):
        counts = np.bincount(model.codes_[:, level], minlength=k)
        assert counts.min() == 2003 // k and counts.max() == -(-2003 // k)
    # The balanced codes reconstruct worse than nearest-codeword encoding, but not absurdly.
    x64 = x.astype(np.float64)
    balanced_err = ((x64 - cb.decode(model.codes_)) ** 2).sum()
    nearest_err = ((x64 - cb.decode(cb.encode(x))) ** 2).sum()
    assert nearest_err <= balanced_err < 10 * nearest_err + 1e-6
    again = sk.RQKMeans(levels=2, codebook_size=k, iters=5, seed=0, verbose=False, balanced=True)
    assert again.fit(x) == cb
    np.testing.assert_array_equal(again.codes_, model.codes_)


def test_balanced_assign_matches_a_slow_greedy(rng):
    from sidkit import _native

    x = rng.standard_normal((60, 3)).astype(np.float32)
    c = rng.standard_normal((7, 3)).astype(np.float32)
    labels, _ = _native.balanced_assign(c, x)
    d = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1).astype(np.float32)
    pairs = sorted((d[i, j], i, j) for i in range(60) for j in range(7))
    want, load, big = np.full(60, -1), np.zeros(7, int), 60 % 7
    for _, i, j in pairs:
        if want[i] >= 0:
            continue
        if load[j] < 60 // 7 or (load[j] == 60 // 7 and big > 0):
            big -= load[j] == 60 // 7
            load[j] += 1
            want[i] = j
    np.testing.assert_array_equal(labels, want)


def test_metrics_cli(tmp_path, capsys):
    x = synthetic_catalog(2000, 16, (8, 4), seed=5)
    cb = sk.RQKMeans(2, 16, iters=5, verbose=False).fit(x)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "codes.npy", cb.encode(x))
    cb.save(tmp_path / "cb.npz")
    assert (
        main(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "codes.npy"), "--codebooks", str(tmp_path / "cb.npz")])
        == 0
    )
    out = capsys.readouterr().out
    assert "collision rate, prefix depth 2" in out and "relative_error" in out and "level 1 perplexity" in out
    # A SID table pairs rows with embeddings by item id (0..N-1 or 1..N), not by its row order.
    codes = cb.encode(x)
    n = len(codes)
    for ids in (np.arange(n)[::-1], np.arange(1, n + 1)[::-1]):
        sk.SidTable(ids, codes[ids - ids.min()], (16, 16), capacity=n).save(tmp_path / "t.npz")
        assert (
            main(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "t.npz"), "--codebooks", str(tmp_path / "cb.npz")])
            == 0
        )
        assert capsys.readouterr().out == out
    # A suffix-resolved table with --codebooks: the codebook metrics read the codebooks' levels
    # (the raw codes' collisions), and a first line says so and gives the table's own.
    from sidkit.metrics import collisions

    sk.resolve(codes, "suffix").save(tmp_path / "suffixed.npz")
    argv = ["metrics", str(tmp_path / "x.npy"), str(tmp_path / "suffixed.npz"), "--codebooks", str(tmp_path / "cb.npz")]
    assert main(argv) == 0
    first, rest = capsys.readouterr().out.split("\n", 1)
    raw = collisions(codes.astype(np.int64))
    assert raw["collision_rate"] > 0
    assert first == (
        f"metrics of levels 0..1 (the codebooks' levels; the table's level 2.. is its collision suffix): "
        f"the full table has {n:,} SIDs for {n:,} items, collision rate 0.0000"
    )
    assert f"{'collisions.collision_rate':<34}{raw['collision_rate']:>12.4f}" in rest
    sk.SidTable(np.arange(5, n + 5), codes, (16, 16), capacity=n).save(tmp_path / "t.npz")
    assert main(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "t.npz")]) == 2
    assert "the SID table's item ids must be 0..N-1 or 1..N" in capsys.readouterr().err


def test_metrics_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    x = synthetic_catalog(1500, 8, (8, 4), seed=5)
    cb = sk.RQKMeans(2, 8, iters=3, verbose=False).fit(x)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "codes.npy", cb.encode(x))
    png = tmp_path / "report.png"
    assert main(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "codes.npy"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    from sidkit.metrics import plot_report

    with pytest.raises(ValueError, match="sizes: expected 2 values"):
        plot_report(np.zeros((4, 2), np.int64), [8], tmp_path / "bad.png")


def test_cli_bad_arguments_exit_2_with_the_argument_named(tmp_path, capsys):
    x = synthetic_catalog(300, 8, (8, 4), seed=0)
    np.save(tmp_path / "x.npy", x)
    cb = sk.RQKMeans(2, 8, iters=3, seed=0, verbose=False).fit(x)
    cb.save(tmp_path / "cb.npz")
    np.save(tmp_path / "codes.npy", cb.encode(x))
    np.save(tmp_path / "codes1d.npy", cb.encode(x)[:, 0])
    np.save(tmp_path / "nan.npy", np.full((300, 8), np.nan, np.float32))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "d").mkdir()
    x_, c_, cbf, d = (str(tmp_path / n) for n in ("x.npy", "codes.npy", "cb.npz", "d"))
    cases = [
        (["fit", x_, "--out", str(tmp_path / "o.npz"), "--threads", "-1"], "argument --threads: expected an int >= 0"),
        (
            ["fit", x_, "--out", str(tmp_path / "o.npz"), "--sample", "inf"],
            "argument --sample: expected a finite number",
        ),
        (["fit", x_, "--out", d], f"--out: {d} is a directory, expected a file path"),
        (["fit", x_, "--out", str(tmp_path / "o.npz"), "--codes", d], "--codes: "),
        (["encode", cbf, x_, "--out", str(tmp_path / "e.npy"), "--errors", d], "--errors: "),
        (["encode", cbf, x_, "--out", str(tmp_path / "e.npy"), "--beam", "0"], "argument --beam: expected an int >= 1"),
        (["resolve", c_, "--out", d], "--out: "),
        (["resolve", c_, "--out", str(tmp_path / "t.parquet"), "--max-suffix", "-1"], "argument --max-suffix"),
        (["resolve", str(tmp_path / "empty.npy"), "--out", str(tmp_path / "t.parquet")], "codes: expected a .npy file"),
        (
            ["resolve", d, "--out", str(tmp_path / "t.parquet")],
            f"codes: expected a .npy file of (N, L) integer codes, got the directory {d}",
        ),
        (["metrics", str(tmp_path / "empty.npy"), c_], "embeddings: expected a .npy file"),
        (["metrics", d, c_], "embeddings: expected a .npy file"),
        (["metrics", x_, c_, "--codebooks", cbf, "--k", "0"], "argument --k: expected an int >= 1, got 0"),
        (["metrics", x_, str(tmp_path / "codes1d.npy"), "--codebooks", cbf], "codes: expected (N, L) integer codes"),
        (["metrics", x_, str(tmp_path / "missing.parquet")], "codes: "),
        (["metrics", str(tmp_path / "nan.npy"), c_], "x: expected finite values"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()  # outputs are checked before the fit, nothing half-written
    assert main(["--help"]) == 0
