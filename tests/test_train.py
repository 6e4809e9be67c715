"""The training loop's resumable state: pausing on a time limit and resuming, any number of
times, ends bit-identical to one uninterrupted run; a state from another run is refused."""

from __future__ import annotations

import numpy as np
import pytest
import sidkit as sk
from sidkit.data import leave_one_out

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sidkit.models.tiger import TIGER, make_examples, sliding_window  # noqa: E402
from sidkit.train import Paused, fit  # noqa: E402


def chains(users=120, n_chains=8, length=8, seed=0):
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        c, start = rng.integers(n_chains), rng.integers(0, length - 5)
        n = rng.integers(4, length - start + 1)
        seqs.append(c * length + start + np.arange(n) + 1)
    emb = rng.normal(size=(n_chains * length, 8)).astype(np.float32)
    emb += np.repeat(rng.normal(size=(n_chains, 8)) * 3, length, axis=0).astype(np.float32)
    return seqs, emb


@pytest.fixture(scope="module")
def setup():
    seqs, emb = chains()
    table = sk.resolve(sk.RQKMeans(2, 4, iters=5, seed=0, verbose=False).fit(emb).encode(emb))
    split = leave_one_out(seqs)
    tm = TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32).token_map
    hist, tgt = sliding_window(split.train)
    train = make_examples(hist, tgt, table, tm)
    valid = make_examples(split.valid_history, split.valid_target, table, tm)
    return table, train, valid


def new_model(table, seed=0):
    # Dropout on: the resumed run must also continue the dropout RNG stream.
    return TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32, dropout=0.2, seed=seed)


KW = {"epochs": 4, "batch_size": 16, "lr": 3e-3, "patience": 10, "beam_width": 4, "verbose": False, "seed": 5}


def without_seconds(history):
    assert all(row["seconds"] >= 0 for row in history)
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_pausing_every_epoch_and_resuming_is_bit_identical(setup, tmp_path):
    table, train, valid = setup
    whole = new_model(table)
    h_whole = fit(whole, train, valid, state=tmp_path / "whole.pt", **KW)
    assert len(h_whole) == 4
    # One epoch per call (time_limit 0), each call on a freshly built model: the first from
    # the same init as the whole run, the later ones differently seeded (their init is replaced).
    pauses, state = [], tmp_path / "parts.pt"
    while True:
        model = new_model(table, seed=7 * len(pauses))
        try:
            h_parts = fit(model, train, valid, state=state, time_limit=0, **KW)
            break
        except Paused as e:
            pauses.append(e.epochs_done)
            assert e.state == str(state)
    assert pauses == [1, 2, 3]
    assert without_seconds(h_parts) == without_seconds(h_whole)
    assert_same_weights(model, whole)  # the best epoch's weights, restored in both
    np.testing.assert_array_equal(
        model.recommend(valid.inputs, beam_width=4, top_k=5), whole.recommend(valid.inputs, beam_width=4, top_k=5)
    )
    # The last epoch's optimizer and RNG states match as well: the whole saved states agree.
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    b = torch.load(state, weights_only=True)
    assert a["done"] and b["done"] and a["best"] == b["best"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["torch_rng"], b["torch_rng"]) and torch.equal(a["generator"], b["generator"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, sa in a["optimizer"]["state"].items():
        for k, v in sa.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)


def test_a_long_enough_time_limit_does_not_pause(setup, tmp_path):
    table, train, valid = setup
    h = fit(new_model(table), train, valid, state=tmp_path / "s.pt", time_limit=1e6, **KW)
    assert len(h) == 4


def test_a_finished_state_restores_the_best_weights_without_training(setup, tmp_path):
    table, train, valid = setup
    first = new_model(table)
    h = fit(first, train, valid, state=tmp_path / "s.pt", **KW)
    again = new_model(table, seed=9)

    def no_training(*a, **k):
        raise AssertionError("a finished run must not train again")

    again.forward = no_training
    assert fit(again, train, valid, state=tmp_path / "s.pt", **KW) == h
    assert_same_weights(again, first)


def test_early_stopping_survives_a_resume(setup, tmp_path):
    """The patience counter is part of the state: a resumed run stops where a whole one stops."""
    table, train, valid = setup
    kw = {**KW, "epochs": 12, "patience": 1, "lr": 3e-2}
    whole = fit(new_model(table), train, valid, **kw)
    assert len(whole) < 12  # it did stop early
    calls, state = 0, tmp_path / "s.pt"
    while True:
        calls += 1
        try:
            parts = fit(new_model(table), train, valid, state=state, time_limit=0, **kw)
            break
        except Paused:
            pass
    assert without_seconds(parts) == without_seconds(whole) and calls == len(whole)


def test_a_state_from_another_run_is_refused(setup, tmp_path):
    table, train, valid = setup
    state = tmp_path / "s.pt"
    with pytest.raises(Paused):
        fit(new_model(table), train, valid, state=state, time_limit=0, **KW)
    with pytest.raises(ValueError, match=r"differs in lr \(0.003 there, 0.01 here\)"):
        fit(new_model(table), train, valid, state=state, **{**KW, "lr": 1e-2})
    with pytest.raises(ValueError, match="differs in epochs"):
        fit(new_model(table), train, valid, state=state, **{**KW, "epochs": 5})
    fewer = type(train)(
        **{**vars(train), "inputs": train.inputs[:-1], "targets": train.targets[:-1], "items": train.items[:-1]}
    )
    with pytest.raises(ValueError, match="differs in train"):
        fit(new_model(table), fewer, valid, state=state, **KW)
    wider = TIGER(table, d_model=24, num_layers=1, num_heads=2, d_kv=8, d_ff=32)
    with pytest.raises(ValueError, match="differs in (model, )?parameters"):
        fit(wider, train, valid, state=state, **KW)
    (tmp_path / "junk.pt").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="not a readable sidkit training state"):
        fit(new_model(table), train, valid, state=tmp_path / "junk.pt", **KW)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a sidkit training state"):
        fit(new_model(table), train, valid, state=tmp_path / "other.pt", **KW)
    with pytest.raises(ValueError, match="time_limit: needs a state path"):
        fit(new_model(table), train, valid, time_limit=10, **KW)
    with pytest.raises(ValueError, match="time_limit: expected seconds >= 0"):
        fit(new_model(table), train, valid, state=tmp_path / "n.pt", time_limit=-1, **KW)


def test_a_resume_may_raise_the_patience(setup, tmp_path):
    """Patience is when to give up, not what an epoch computes: a resume may change it, and the
    run then trains the epochs early stopping would have cut, each identical to an uninterrupted
    run with the larger patience."""
    table, train, valid = setup
    kw = {**KW, "epochs": 12, "patience": 1, "lr": 3e-2}
    short = fit(new_model(table), train, valid, **kw)
    assert len(short) < 12  # patience 1 stops early
    long = fit(new_model(table), train, valid, **{**kw, "patience": 100})
    assert len(long) == 12
    state = tmp_path / "s.pt"
    with pytest.raises(Paused):  # one epoch under patience 1, then the rest under patience 100
        fit(new_model(table), train, valid, state=state, time_limit=0, **kw)
    resumed = fit(new_model(table), train, valid, state=state, **{**kw, "patience": 100})
    assert without_seconds(resumed) == without_seconds(long)
    # A run that early stopping already ended (its state says so) goes on too.
    stopped = tmp_path / "stopped.pt"
    assert without_seconds(fit(new_model(table), train, valid, state=stopped, **kw)) == without_seconds(short)
    assert without_seconds(fit(new_model(table), train, valid, state=stopped, **kw)) == without_seconds(short)
    again = fit(new_model(table), train, valid, state=stopped, **{**kw, "patience": 100})
    assert without_seconds(again) == without_seconds(long)
    # A state written when patience was still fingerprinted resumes too.
    saved = torch.load(state, weights_only=True)
    saved["fingerprint"]["patience"] = 1
    torch.save(saved, state)
    assert without_seconds(fit(new_model(table), train, valid, state=state, **kw)) == without_seconds(long)


def recording(model):
    """The model, recording the weights each training forward pass sees (the weights after
    the previous optimizer step)."""
    orig, seen = model.forward, []

    def forward(*a, **k):
        if model.training:
            seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return orig(*a, **k)

    model.forward = forward
    return model, seen


def ema_reference(weights, decay):
    """The exponential moving average of a list of weight dicts with the documented warm-up:
    the first is taken as is, then e = d * e + (1 - d) * w (torch.lerp, as AveragedModel's EMA
    does it) with d = min(decay, (1 + n) / (10 + n)) at the update after n."""
    avg = {k: v.clone() for k, v in weights[0].items()}
    for n, w in enumerate(weights[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        avg = {k: torch.lerp(avg[k], w[k], 1 - d) for k in avg}
    return avg


def test_ema_averages_every_step_and_leaves_training_unchanged(setup):
    table, train, valid = setup
    kw = {**KW, "epochs": 2}
    plain, seen = recording(new_model(table))
    h_plain = fit(plain, train, None, **kw)
    steps = len(seen)
    assert steps == 2 * -(-len(train.inputs) // 16)
    # Weights after step s: what step s + 1's forward saw, and the final model for the last.
    after = seen[1:] + [{n: p.detach().clone() for n, p in plain.named_parameters()}]
    averaged, seen_ema = recording(new_model(table))
    h_ema = fit(averaged, train, None, ema=0.9, **kw)
    # Training itself is unchanged: the same losses and the same weights at every step.
    assert without_seconds(h_ema) == without_seconds(h_plain)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(seen, seen_ema, strict=True) for k in a)
    # Without validation the model ends with the average of all steps' weights.
    want = ema_reference(after, 0.9)
    got = dict(averaged.named_parameters())
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(got["t5.shared.weight"], plain.t5.shared.weight)


def test_ema_validates_and_restores_the_averaged_weights(setup, tmp_path):
    from sidkit.metrics import ranking_metrics

    table, train, valid = setup
    model, seen = recording(new_model(table))
    h = fit(model, train, valid, ema=0.95, checkpoint=str(tmp_path / "best.pt"), **KW)
    # Training is unchanged by the average (previous test): a plain run gives the last
    # step's weights, which no forward pass saw.
    plain = new_model(table)
    fit(plain, train, None, **KW)
    after = seen[1:] + [{n: p.detach().clone() for n, p in plain.named_parameters()}]
    per_epoch = len(seen) // KW["epochs"]

    def scores(weights):
        m = new_model(table)
        m.load_state_dict({**m.state_dict(), **weights})
        return ranking_metrics(m.recommend(valid.inputs, beam_width=4, top_k=10), valid.items, ks=(5, 10))

    averages = [ema_reference(after[: (e + 1) * per_epoch], 0.95) for e in range(len(h))]
    # Every epoch's validation scored the average, not the raw weights (which score otherwise).
    assert [scores(a) for a in averages] == [
        {k: v for k, v in row.items() if k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")} for row in h
    ]
    assert any(scores(after[(e + 1) * per_epoch - 1]) != scores(averages[e]) for e in range(len(h)))
    # The best epoch's average is restored, and the checkpoint holds it.
    best = max(range(len(h)), key=lambda e: (h[e]["recall@10"], -e))
    got = dict(model.named_parameters())
    for k, v in averages[best].items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7)
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_ema_survives_pausing_and_resuming_bit_identically(setup, tmp_path):
    table, train, valid = setup
    whole = new_model(table)
    h_whole = fit(whole, train, valid, ema=0.95, state=tmp_path / "whole.pt", **KW)
    state, calls = tmp_path / "parts.pt", 0
    while True:  # the first call from the same init as the whole run, later ones from others (replaced)
        model = new_model(table, seed=3 * calls)
        calls += 1
        try:
            h_parts = fit(model, train, valid, ema=0.95, state=state, time_limit=0, **KW)
            break
        except Paused:
            pass
    assert without_seconds(h_parts) == without_seconds(h_whole)
    assert_same_weights(model, whole)
    a, b = (torch.load(p, weights_only=True)["ema"] for p in (tmp_path / "whole.pt", state))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(b["n_averaged"]) == KW["epochs"] * -(-len(train.inputs) // KW["batch_size"])  # every step
    assert model.training is False  # fit returns the model in eval mode
    # A state is bound to its decay: another one (or none) is another run.
    with pytest.raises(ValueError, match=r"differs in ema \(0.95 there, 0.9 here\)"):
        fit(new_model(table), train, valid, ema=0.9, state=state, **KW)
    with pytest.raises(ValueError, match=r"differs in ema \(0.95 there, 0.0 here\)"):
        fit(new_model(table), train, valid, state=state, **KW)
    # Off, it leaves no trace in the state: states written before `ema` existed resume.
    fit(new_model(table), train, valid, state=tmp_path / "off.pt", **{**KW, "epochs": 1})
    assert "ema" not in torch.load(tmp_path / "off.pt", weights_only=True)["fingerprint"]


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"epochs": 0}, ValueError, "epochs: expected >= 1, got 0"),
        ({"epochs": 2.0}, TypeError, "epochs: expected an int"),
        ({"batch_size": 0}, ValueError, "batch_size: expected >= 1, got 0"),
        ({"patience": 0}, ValueError, "patience: expected >= 1, got 0"),
        ({"beam_width": 0}, ValueError, "beam_width: expected >= 1, got 0"),
        ({"lr": 0.0}, ValueError, "lr: expected a finite number > 0, got 0.0"),
        ({"lr": float("nan")}, ValueError, "lr: expected a finite number > 0, got nan"),
        ({"lr": "1e-3"}, TypeError, "lr: expected a number, got str"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay: expected a finite number >= 0, got -0.1"),
        ({"ema": 1.0}, ValueError, r"ema: expected a decay in \[0, 1\) \(0 = off\), got 1.0"),
        ({"ema": -0.5}, ValueError, r"ema: expected a decay in \[0, 1\)"),
        ({"ema": True}, TypeError, "ema: expected a number, got bool"),
    ],
)
def test_fit_names_bad_arguments_before_training(setup, kwargs, exc, msg):
    table, train, valid = setup
    model = new_model(table)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(exc, match=msg):
        fit(model, train, valid, **{**KW, **kwargs})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing trained


def test_numpy_settings_resume_and_bad_examples_are_named(setup, tmp_path):
    """Settings given as numpy scalars are stored as plain numbers: the state still loads."""
    table, train, valid = setup
    kw = {**KW, "lr": np.float64(3e-3), "weight_decay": np.float32(0.01), "seed": np.int64(5), "epochs": 2}
    with pytest.raises(Paused):
        fit(new_model(table), train, valid, state=tmp_path / "np.pt", time_limit=0, **kw)
    h = fit(new_model(table), train, valid, state=tmp_path / "np.pt", **kw)
    assert [row["epoch"] for row in h] == [0, 1]
    short = type(train)(train.inputs[:5], train.targets[:4], train.items[:4])
    with pytest.raises(ValueError, match="train: expected the same number .* of inputs and targets, got 5 and 4"):
        fit(new_model(table), short, None, **KW)
    with pytest.raises(ValueError, match="got 0 and 0"):
        fit(new_model(table), type(train)(train.inputs[:0], train.targets[:0], train.items[:0]), None, **KW)
    with pytest.raises(ValueError, match="min_history: expected >= 1, got 0"):
        sliding_window([np.array([1, 2, 3])], min_history=0)


def test_sasrec_examples_name_bad_input():
    from sidkit.models import sasrec_examples, sasrec_train_examples

    ex = sasrec_examples([np.array([1, 2, 3])], [4], max_len=2)
    assert ex.inputs.tolist() == [[2, 3]] and ex.targets.tolist() == [[0, 4]] and ex.items.tolist() == [4]
    with pytest.raises(ValueError, match=r"targets: expected one per history \(3\), got 1"):
        sasrec_examples([np.array([1]), np.array([2]), np.array([3])], [5])
    with pytest.raises(TypeError, match="histories: expected integer item ids, got dtype float64 in row 0"):
        sasrec_examples([np.array([1.7, 2.2])], [5])
    with pytest.raises(TypeError, match="targets: expected integer item ids"):
        sasrec_examples([np.array([1])], [5.9])
    with pytest.raises(ValueError, match="max_len: expected >= 1, got 0"):
        sasrec_examples([np.array([1])], [5], max_len=0)
    with pytest.raises(ValueError, match="histories: expected at least one item per history"):
        sasrec_examples([np.array([], np.int64)], [5])
    with pytest.raises(TypeError, match="max_len: expected an int"):
        sasrec_train_examples([np.array([1, 2])], max_len=2.5)


def test_a_state_from_a_model_with_other_settings_is_refused(setup, tmp_path):
    """Same parameter shapes, other dropout or heads: the architecture digest tells them apart."""
    table, train, valid = setup
    state = tmp_path / "s.pt"
    with pytest.raises(Paused):
        fit(new_model(table), train, valid, state=state, time_limit=0, **KW)
    other_dropout = TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32, dropout=0.0)
    with pytest.raises(ValueError, match="differs in model"):
        fit(other_dropout, train, valid, state=state, **KW)
    from sidkit.models import SASRec
    from sidkit.models.sasrec import sasrec_train_examples

    examples = sasrec_train_examples(leave_one_out(chains()[0]).train, max_len=8)
    kw = {**KW, "epochs": 2}
    with pytest.raises(Paused):
        fit(
            SASRec(64, max_len=8, d_model=16, num_heads=2, seed=0),
            examples,
            state=tmp_path / "r.pt",
            time_limit=0,
            **kw,
        )
    with pytest.raises(ValueError, match="differs in model"):  # 4 heads of 4 vs 2 of 8: the same shapes
        fit(SASRec(64, max_len=8, d_model=16, num_heads=4, seed=0), examples, state=tmp_path / "r.pt", **kw)
    history = fit(SASRec(64, max_len=8, d_model=16, num_heads=2, seed=0), examples, state=tmp_path / "r.pt", **kw)
    assert len(history) == 2  # the same settings resume


def test_a_diverging_run_raises_before_the_step_and_the_callers_rng_is_untouched(setup, tmp_path):
    table, train, valid = setup
    model = new_model(table)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(77)
    rng = torch.get_rng_state()

    def nan_forward(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True)

    model.forward = nan_forward
    with pytest.raises(FloatingPointError, match=r"fit: the training loss is nan at epoch 0 .* and .*s\.pt the last"):
        fit(model, train, valid, state=tmp_path / "s.pt", **KW)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)  # an error inside fit leaves it too
    fit(new_model(table), train, valid, **{**KW, "epochs": 1})
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_checkpoint_without_validation_holds_the_last_weights(setup, tmp_path):
    table, train, _ = setup
    model = new_model(table)
    fit(model, train, None, checkpoint=str(tmp_path / "c.pt"), **{**KW, "epochs": 2})
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
