"""RQ-VAE: training reduces the loss, uses its codebooks, and round-trips through state_dict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sidkit as sk
from conftest import flip_bit
from sidkit.data import synthetic_catalog

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained():
    x = synthetic_catalog(3000, 32, (16, 4, 4), seed=0)
    model = sk.RQVAE(32, latent_dim=16, hidden=(64, 32), levels=3, codebook_size=16, restart_threshold=0.001)
    history = model.fit(x, epochs=25, batch_size=256, verbose=False, seed=0)
    return x, model, history


def test_loss_falls_and_codes_are_used(trained):
    x, model, history = trained
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    codes = model.encode(x)
    assert codes.shape == (3000, 3) and codes.dtype == np.uint16
    for level in range(3):
        assert len(np.unique(codes[:, level])) > 0.5 * 16  # > 50% of each codebook in use
    assert sk.metrics.collisions(codes)["unique_sids"] > 100  # no collapse onto one SID


def test_encode_decode_and_state_dict_round_trip(trained):
    x, model, _ = trained
    codes = model.encode(x[:100])
    recon = model.decode(codes)
    assert recon.shape == (100, 32) and np.isfinite(recon).all()
    # The Rust assignment agrees with the torch quantizer used in training.
    with torch.no_grad():
        _, torch_codes, _ = model.quantize(model.encoder(torch.from_numpy(x[:100])))
    assert (torch_codes.numpy() == codes).mean() > 0.99
    clone = sk.RQVAE(32, latent_dim=16, hidden=(64, 32), levels=3, codebook_size=16)
    clone.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(clone.encode(x[:100]), codes)
    assert model.codebooks().sizes == (16, 16, 16) and model.codebooks().dim == 16


def test_tensors_in_tensors_out(trained):
    """embed/encode/decode take tensors (as Codebooks does) and give tensors back, equal to
    the numpy path's results."""
    x, model, _ = trained
    t = torch.from_numpy(x[:100])
    z, codes = model.embed(t), model.encode(t)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float32 and z.shape == (100, 16)
    np.testing.assert_array_equal(z.numpy(), model.embed(x[:100]))
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.int64
    np.testing.assert_array_equal(codes.numpy(), model.encode(x[:100]).astype(np.int64))
    recon = model.decode(codes)
    assert isinstance(recon, torch.Tensor) and recon.shape == (100, 32)
    np.testing.assert_array_equal(recon.numpy(), model.decode(model.encode(x[:100])))
    np.testing.assert_array_equal(model.embed(x[:2].tolist()), model.embed(x[:2]))  # lists too
    np.testing.assert_array_equal(model.embed(t.double()).numpy(), z.numpy())
    with pytest.raises(TypeError, match="x: expected a float array or torch tensor"):
        model.embed("not an array")
    with pytest.raises(TypeError, match="x: expected a real-valued tensor"):
        model.embed(torch.ones(2, 32, dtype=torch.bool))


def test_bad_input_and_collapse_warning():
    model = sk.RQVAE(4, latent_dim=2, hidden=(8,), levels=2, codebook_size=4)
    with pytest.raises(ValueError, match=r"x: expected shape \(N >= 1, 4\)"):
        model.fit(np.zeros((10, 3), np.float32), epochs=1, verbose=False)
    bad = np.zeros((10, 4), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite"):
        model.fit(bad, epochs=1, verbose=False)
    with pytest.warns(RuntimeWarning, match="codebook collapse"):
        model.fit(np.ones((64, 4), np.float32), epochs=2, batch_size=16, verbose=False)  # one distinct point


def test_import_sidkit_does_not_import_torch():
    code = "import sys, sidkit; assert 'torch' not in sys.modules; sidkit.RQVAE; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_star_import_without_torch():
    """`from sidkit import *` names RQVAE only where torch is installed (and imports no torch)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from sidkit import *\n"
        "assert 'RQVAE' not in dir() and 'Codebooks' in dir(), dir()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "from sidkit import *; import sys; assert RQVAE.__name__ == 'RQVAE'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_rqvae_is_seeded_and_leaves_the_global_rng_alone():
    x = synthetic_catalog(800, 16, (8, 4), seed=1)
    kw = dict(levels=2, codebook_size=8, latent_dim=8, hidden=(32,), epochs=4, batch_size=128)
    state = torch.random.get_rng_state()
    a = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded init: no global draw
    b = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    m1 = sk.train_rqvae(x, **kw, seed=5)
    torch.manual_seed(123)  # the global state must not matter
    m2 = sk.train_rqvae(torch.from_numpy(x), **kw, seed=5)
    np.testing.assert_array_equal(m1.encode(x), m2.encode(x))
    assert len(m1.history_) == 4 and m1.history_ == m2.history_ and not m1.training
    # The same as building and fitting by hand.
    by_hand = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=5)
    by_hand.fit(x, epochs=4, batch_size=128, seed=5, verbose=False)
    np.testing.assert_array_equal(by_hand.encode(x), m1.encode(x))
    assert m1.codebooks().to_numpy().shape == (2, 8, 8)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, D\)"):
        sk.train_rqvae(np.zeros(5, dtype=np.float32))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_load_round_trip(trained, tmp_path, suffix):
    x, model, _ = trained
    path = tmp_path / f"vae{suffix}"
    model.save(path)
    loaded = sk.RQVAE.load(path)
    assert not loaded.training and loaded.config == model.config
    assert loaded.hidden == (64, 32) and loaded.restart_threshold == 0.001
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu()), key
    codes = model.encode(x)
    np.testing.assert_array_equal(loaded.encode(x), codes)
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))
    assert loaded.codebooks() == model.codebooks()


def test_load_names_what_it_expected(tmp_path):
    cb = sk.RQKMeans(2, 4, iters=2, verbose=False).fit(synthetic_catalog(100, 8, seed=0))
    for name in ("cb.npz", "cb.safetensors"):
        cb.save(tmp_path / name)
        with pytest.raises(ValueError, match=r"sidkit.rqvae/2"):
            sk.RQVAE.load(tmp_path / name)
    np.save(tmp_path / "x.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"path: expected a sidkit RQ-VAE file"):
        sk.RQVAE.load(tmp_path / "x.npy")
    model = sk.RQVAE(8, latent_dim=2, hidden=(4,), levels=2, codebook_size=4)
    for name in ("vae.pt", "vae.safetensors"):
        model.save(tmp_path / name)
        with pytest.raises(ValueError, match=r"path: expected a sidkit codebooks file"):
            sk.Codebooks.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        sk.RQVAE.load(tmp_path / "missing.pt")


def test_fit_and_encode_cli_with_an_rqvae(tmp_path, capsys):
    from sidkit.cli import main

    x = synthetic_catalog(600, 16, (8, 4), seed=1)
    np.save(tmp_path / "x.npy", x)
    args = ["fit", str(tmp_path / "x.npy"), "--method", "rqvae", "--out", str(tmp_path / "vae.pt")]
    small = ["--levels", "2", "--codebook-size", "8", "--epochs", "3", "--latent-dim", "4", "--seed", "2", "--quiet"]
    assert main([*args, *small, "--codes", str(tmp_path / "codes.npy")]) == 0
    assert "RQVAE(2 x 8, latent 4, 3 epochs)" in capsys.readouterr().out
    vae = sk.RQVAE.load(tmp_path / "vae.pt")
    by_hand = sk.train_rqvae(x, 2, 8, 4, epochs=3, seed=2)
    for key, value in by_hand.state_dict().items():  # the CLI trains what the API trains for the seed
        assert torch.equal(vae.state_dict()[key], value), key
    codes = np.load(tmp_path / "codes.npy")
    np.testing.assert_array_equal(codes, vae.encode(x))
    enc = ["encode", str(tmp_path / "vae.pt"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.npy")]
    assert main([*enc, "--beam", "3", "--errors", str(tmp_path / "err.npy")]) == 0
    assert "(latent space)" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), vae.encode(x, beam=3))
    latents = vae.embed(x).astype(np.float64)
    recon = vae.codebooks().decode(np.load(tmp_path / "e.npy")).astype(np.float64)
    np.testing.assert_allclose(
        np.load(tmp_path / "err.npy")[:, -1], ((latents - recon) ** 2).sum(1), rtol=1e-3, atol=1e-4
    )
    # a sampled fit: trained on exactly the rows RQKMeans would draw for the seed, every row coded
    sampled = [*args[:-1], str(tmp_path / "s.pt"), *small, "--sample", "0.5", "--codes", str(tmp_path / "s.npy")]
    assert main(sampled) == 0
    assert "trained on 300 sampled rows" in capsys.readouterr().out
    rows = np.sort(np.random.default_rng(2).choice(600, size=300, replace=False))
    on_rows = sk.train_rqvae(x[rows], 2, 8, 4, epochs=3, seed=2)
    vae_s = sk.RQVAE.load(tmp_path / "s.pt")
    for key, value in on_rows.state_dict().items():
        assert torch.equal(vae_s.state_dict()[key], value), key
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), vae_s.encode(x))
    assert main([*args, *small, "--sample", "0"]) == 2
    assert "argument --sample: expected a finite number > 0, got 0" in capsys.readouterr().err
    assert main([*args, *small, "--iters", "5"]) == 2
    assert "--iters: expected only with --method rqkmeans or balanced, got --method rqvae" in capsys.readouterr().err
    np.save(tmp_path / "narrow.npy", x[:, :5])
    assert (
        main(["encode", str(tmp_path / "vae.pt"), str(tmp_path / "narrow.npy"), "--out", str(tmp_path / "n.npy")]) == 2
    )
    assert "x: expected shape (N, 16), got (600, 5)" in capsys.readouterr().err
    # a damaged file: the right format tag, a config that does not fit the weights
    blob = torch.load(tmp_path / "vae.pt", weights_only=True)
    blob["sidkit"] = blob["sidkit"].replace('"latent_dim": 4', '"latent_dim": 5')
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="is damaged"):
        sk.RQVAE.load(tmp_path / "bad.pt")
    state = torch.get_rng_state()
    sk.RQVAE.load(tmp_path / "vae.pt")
    assert torch.equal(torch.get_rng_state(), state)  # loading leaves the global RNG alone


def test_train_rqvae_sample():
    x = synthetic_catalog(500, 12, (8, 4), seed=3)
    rows = np.sort(np.random.default_rng(5).choice(500, size=200, replace=False))
    ref = sk.train_rqvae(x[rows], 2, 8, 4, epochs=2, seed=5)
    assert ref.sample_ == 200
    for sample in (200, 0.4):  # a count or a share; numpy or torch input
        for data in (x, torch.from_numpy(x)):
            vae = sk.train_rqvae(data, 2, 8, 4, epochs=2, seed=5, sample=sample)
            assert vae.sample_ == 200
            for key, value in ref.state_dict().items():
                assert torch.equal(vae.state_dict()[key], value), (sample, key)
    full = sk.train_rqvae(x, 2, 8, 4, epochs=1, seed=5, sample=1.0)
    assert full.sample_ == 500
    for bad in (0, -3, 0.0, 1.5, True, "half"):
        with pytest.raises(ValueError, match="sample: expected None, an int >= 1 or a float in"):
            sk.train_rqvae(x, 2, 8, 4, epochs=1, sample=bad)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_refuses_a_flipped_bit(trained, tmp_path, suffix):
    """Neither torch.load nor safetensors checks a checksum: the SHA-256 in the metadata does."""
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    _, model, _ = trained
    path = tmp_path / f"vae{suffix}"
    model.save(path)
    raw = path.read_bytes()
    at = raw.find(model.codebook.detach()[1, 3].numpy().tobytes())
    assert at > 0
    bad = flip_bit(path, at + 2, tmp_path / f"bad{suffix}")
    with pytest.raises(ValueError, match="path: .*(damaged|could not read)"):
        sk.RQVAE.load(bad)


def test_the_digest_seals_the_config_and_legacy_files_load(trained, tmp_path):
    import json

    from sidkit.rqvae import _state_digest

    _, model, _ = trained
    model.save(tmp_path / "vae.pt")
    blob = torch.load(tmp_path / "vae.pt", weights_only=True)
    meta = json.loads(blob["sidkit"])
    assert meta["format"] == "sidkit.rqvae/2"
    for key, value in (("beta", 0.5), ("restart_threshold", 1.0)):  # loads fine, but not what was saved
        assert key in meta["config"] and meta["config"][key] != value
        changed = {**meta, "config": {**meta["config"], key: value}}
        torch.save({**blob, "sidkit": json.dumps(changed)}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="is damaged: it does not match its SHA-256"):
            sk.RQVAE.load(tmp_path / "bad.pt")
    legacy = {"format": "sidkit.rqvae/1", "config": meta["config"], "sha256": _state_digest(blob["state_dict"])}
    torch.save({**blob, "sidkit": json.dumps(legacy)}, tmp_path / "old.pt")
    old = sk.RQVAE.load(tmp_path / "old.pt")
    assert old.config == model.config and old.codebooks() == model.codebooks()


def test_fit_leaves_the_callers_rng_and_graph_alone():
    x = torch.randn(200, 8, requires_grad=True)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    model = sk.RQVAE(8, latent_dim=4, hidden=(16,), levels=2, codebook_size=4, seed=0)
    model.fit(x, epochs=2, batch_size=64, verbose=False, seed=7, min_utilisation=0.0)
    assert torch.equal(torch.get_rng_state(), before)  # no reseeding of the global RNG
    assert x.grad is None  # the input was detached
    with pytest.raises(ValueError, match=r"x: expected shape \(N >= 1, 8\), got \(0, 8\)"):
        model.fit(np.zeros((0, 8), np.float32), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="seed: expected"):
        model.fit(x, epochs=1, verbose=False, seed=-1)


def test_restarted_codes_start_without_the_old_codes_adam_moments():
    """A dead code re-seeded from a residual would otherwise keep moving by its predecessor's
    momentum (exp_avg) and step size (exp_avg_sq); live codes keep theirs."""
    model = sk.RQVAE(8, latent_dim=4, hidden=(16,), levels=2, codebook_size=4, restart_threshold=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # some Adam state on every code
        opt.zero_grad()
        (model.codebook.sum() ** 2 + model(torch.randn(32, 8))["loss"]).backward()
        opt.step()
    state = opt.state[model.codebook]
    before = {m: state[m].clone() for m in ("exp_avg", "exp_avg_sq")}
    assert all(before[m].abs().min() > 0 for m in before)
    usage = torch.ones(2, 4)
    usage[0, 2] = 0  # code 2 of level 0 is dead
    old = model.codebook.detach().clone()
    assert model._restart_dead(usage, z, torch.Generator().manual_seed(1), opt) == 1
    assert not torch.equal(model.codebook[0, 2], old[0, 2])
    for m in before:
        assert not state[m][0, 2].any()
        keep = torch.ones(2, 4, dtype=torch.bool)
        keep[0, 2] = False
        assert torch.equal(state[m][keep], before[m][keep])


def test_fit_is_bit_identical_on_several_threads():
    """A codeword gather's backward must not accumulate in thread order (``level[idx]`` did:
    two fits with the same seed on 2 threads differed from the first epoch)."""
    x = synthetic_catalog(4096, 32, (64, 8), seed=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        states = []
        for _ in range(3):
            model = sk.RQVAE(32, latent_dim=16, hidden=(64,), levels=2, codebook_size=256, seed=0)
            model.fit(x, epochs=2, batch_size=4096, seed=0, verbose=False)
            states.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    for other in states[1:]:
        for name, value in states[0].items():
            assert torch.equal(value, other[name]), name


def test_fit_stops_on_a_non_finite_loss_and_save_refuses_non_finite_weights(tmp_path):
    x = synthetic_catalog(512, 16, (8, 4), seed=0)
    model = sk.RQVAE(16, latent_dim=8, hidden=(32,), levels=2, codebook_size=8, seed=0)
    with pytest.raises(FloatingPointError, match=r"RQVAE.fit: the loss is (nan|inf) at epoch \d+.*lr 1e\+30"):
        model.fit(x, epochs=3, lr=1e30, verbose=False)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())  # the step before it
    with torch.no_grad():
        model.codebook[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="RQVAE.save: weights codebook hold NaN or inf"):
        model.save(tmp_path / "vae.pt")
    assert not (tmp_path / "vae.pt").exists()


def test_default_initialisation_is_xavier():
    model = sk.RQVAE(64, latent_dim=32, hidden=(512, 256), seed=0)
    for layer in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:
        fan_in, fan_out = layer.in_features, layer.out_features
        std = float(layer.weight.detach().std())
        assert abs(std / (2.0 / (fan_in + fan_out)) ** 0.5 - 1) < 0.1, (fan_in, fan_out, std)
        assert not layer.bias.any()


def test_restart_threshold_and_beta_are_checked_and_history_keys_are_fixed():
    for kw, exc, msg in (
        ({"restart_threshold": -1.0}, ValueError, r"restart_threshold: expected a share in \[0, 1\)"),
        ({"restart_threshold": 2.0}, ValueError, r"restart_threshold: expected a share in \[0, 1\)"),
        ({"restart_threshold": float("nan")}, ValueError, "restart_threshold: expected a share"),
        ({"restart_threshold": "0.1"}, TypeError, "restart_threshold: expected a number"),
        ({"beta": -0.5}, ValueError, "beta: expected a finite number >= 0"),
        ({"beta": float("inf")}, ValueError, "beta: expected a finite number >= 0"),
    ):
        with pytest.raises(exc, match=msg):
            sk.RQVAE(8, latent_dim=4, hidden=(16,), levels=2, codebook_size=4, **kw)
    x = synthetic_catalog(256, 8, (4, 4), seed=0)
    for threshold in (0.0, 0.01):
        model = sk.RQVAE(8, latent_dim=4, hidden=(16,), levels=2, codebook_size=4, restart_threshold=threshold)
        history = model.fit(x, epochs=2, verbose=False)
        assert set(history[-1]) == {"loss", "recon", "vq", "utilisation_0", "utilisation_1", "restarted"}
