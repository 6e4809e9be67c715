"""End to end: SIDs -> TIGER -> constrained decoding on a synthetic catalog with planted
sequential structure (users walk along item chains); the model must beat most-popular."""

from __future__ import annotations

import numpy as np
import pytest
import sidkit as sk
from sidkit.data import leave_one_out, most_popular
from sidkit.metrics import ranking_metrics

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def chains_dataset(seed: int = 0, n_chains: int = 20, length: int = 10, users: int = 600):
    rng = np.random.default_rng(seed)
    items = n_chains * length
    sequences = []
    for _ in range(users):
        c, start = rng.integers(n_chains), rng.integers(0, length - 6)
        n = rng.integers(5, length - start + 1)
        sequences.append(c * length + start + np.arange(n))
    # Content embeddings: chain identity plus noise (items of a chain look alike).
    centres = rng.standard_normal((n_chains, 16))
    emb = (centres[np.arange(items) // length] + 0.3 * rng.standard_normal((items, 16))).astype(np.float32)
    return sequences, emb


def _chains_setup(dropout: float):
    """A small TIGER on the chains catalog's SIDs and its train / valid / test examples."""
    from sidkit.models.tiger import TIGER, make_examples, sliding_window

    sequences, emb = chains_dataset()
    cb = sk.RQKMeans(2, 8, iters=10, seed=0, verbose=False).fit(emb)
    table = sk.resolve(cb.encode(emb), embeddings=emb, codebooks=cb)
    split = leave_one_out(sequences)
    model = TIGER(table, d_model=48, num_layers=1, num_heads=2, d_kv=24, d_ff=96, dropout=dropout)
    tm = model.token_map
    hist, tgt = sliding_window(split.train)
    train = make_examples(hist, tgt, table, tm)
    valid = make_examples(split.valid_history, split.valid_target, table, tm)
    test = make_examples(split.test_history, split.test_target, table, tm)
    return model, table, split, train, valid, test


def test_tiger_learns_planted_chains_and_beats_most_popular():
    from sidkit.train import fit

    model, table, split, train, valid, test = _chains_setup(dropout=0.0)
    history = fit(model, train, valid, epochs=12, batch_size=64, lr=3e-3, beam_width=10, verbose=False, seed=0)
    assert history[-1]["loss"] < history[0]["loss"]
    ranked = model.recommend(test.inputs, beam_width=10, top_k=10)
    assert model.trie.contains(table.sid(ranked[ranked >= 0])).all()  # only real items
    got = ranking_metrics(ranked, split.test_target, ks=(10,))
    pop = ranking_metrics(np.tile(most_popular(split.train, 10), (len(ranked), 1)), split.test_target, ks=(10,))
    assert got["recall@10"] > 0.5 and got["recall@10"] > 3 * pop["recall@10"], (got, pop)


def test_make_examples_layout_with_user_tokens():
    from sidkit.models.tiger import TIGER, make_examples, sliding_window

    table = sk.SidTable([1, 2, 3], [[0, 1], [1, 0], [1, 1]], (2, 2))
    tm = sk.TokenMap(table.sizes, offset=2 + 8)  # pad, eos, 8 user buckets, then SID tokens
    ex = make_examples(
        [np.array([1, 2]), np.array([3])], [3, 1], table, tm, max_history=3, users=[5, 10], user_buckets=8
    )
    # width 3 * 2 + 1; SID tokens right-aligned, the user's token (2 + user % 8) just before them.
    assert ex.inputs.tolist() == [[0, 0, 7, 10, 13, 11, 12], [0, 0, 0, 0, 4, 11, 13]]
    assert ex.targets.tolist() == [[11, 13], [10, 13]] and ex.items.tolist() == [3, 1]
    assert make_examples([np.array([1, 2])], [3], table, tm, max_history=3).inputs.tolist() == [
        [0, 0, 0, 10, 13, 11, 12]
    ]
    hist, tgt = sliding_window([np.array([4, 5, 6])])
    assert [h.tolist() for h in hist] == [[4], [4, 5]] and tgt.tolist() == [5, 6]
    with pytest.raises(ValueError, match="users: expected one user per history with user_buckets = 8, got None"):
        make_examples([np.array([1])], [2], table, tm, 3, user_buckets=8)
    with pytest.raises(ValueError, match="users: expected 2 users"):
        make_examples([np.array([1]), np.array([2])], [2, 3], table, tm, 3, users=[1], user_buckets=8)
    # Not truncated, not overlapping: float targets, negative buckets, user tokens over SID tokens.
    with pytest.raises(TypeError, match="targets: expected integer item ids, got dtype float64"):
        make_examples([np.array([1])], [3.9], table, tm, 3)
    with pytest.raises(ValueError, match="user_buckets: expected >= 0, got -3"):
        make_examples([np.array([1])], [2], table, tm, 3, users=[1], user_buckets=-3)
    with pytest.raises(ValueError, match=r"token_map: expected offset >= 2 \+ user_buckets = 10 .*got 2"):
        make_examples([np.array([1])], [2], table, sk.TokenMap(table.sizes, offset=2), 3, users=[1], user_buckets=8)
    with pytest.raises(ValueError, match="user_buckets: expected >= 0, got -5"):
        TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32, user_buckets=-5)


def test_sliding_window_users_line_up_with_the_examples():
    from sidkit.models.tiger import sliding_window, sliding_window_users

    train = [
        np.array([1, 2, 3]),
        np.array([7]),
        np.array([4, 5]),
        np.array([], dtype=np.int64),
        np.array([8, 9, 10, 11]),
    ]
    for min_history in (1, 2):
        hist, tgt = sliding_window(train, min_history)
        users = sliding_window_users(train, min_history)
        assert len(users) == len(hist) == len(tgt)
        for h, t, u in zip(hist, tgt, users, strict=True):  # each example is a prefix of its user's sequence
            seq = train[u]
            assert np.array_equal(seq[: len(h)], h) and seq[len(h)] == t


def test_training_is_reproducible():
    from sidkit.models.tiger import TIGER, make_examples, sliding_window
    from sidkit.train import fit

    sequences, emb = chains_dataset(users=80)
    table = sk.resolve(sk.RQKMeans(2, 4, iters=3, verbose=False).fit(emb).encode(emb))
    split = leave_one_out(sequences)
    runs = []
    for _ in range(2):
        model = TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32)
        hist, tgt = sliding_window(split.train)
        ex = make_examples(hist, tgt, table, model.token_map)
        h = fit(model, ex, epochs=2, batch_size=32, verbose=False, seed=3)
        runs.append((h[-1]["loss"], model.recommend(ex.inputs[:8], beam_width=4, top_k=4)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def _stock_t5(model):
    """transformers' own T5 (SDPA attention, its own dropout and feed-forward) with model's weights."""
    import copy

    from transformers import T5ForConditionalGeneration

    config = copy.deepcopy(model.t5.config)  # TIGER's config names sidkit's attention
    if model.sidkit_attention:
        config._attn_implementation = "sdpa"
    stock = T5ForConditionalGeneration(config)
    stock.load_state_dict(model.t5.state_dict())  # the same keys: strict load
    if model.sidkit_attention:
        assert stock.config._attn_implementation == "sdpa" and model.t5.config._attn_implementation != "sdpa"
    return stock


def test_lean_feed_forward_computes_what_t5s_block_does():
    """TIGER swaps T5's feed-forward block for one without its float32 round trip under
    autocast: same parameter names, same loss in float32 and under bfloat16 autocast."""
    from sidkit.models import TIGER
    from sidkit.models.tiger import _DenseActDense
    from transformers.models.t5.modeling_t5 import T5DenseActDense

    table = sk.resolve(np.arange(60).reshape(30, 2) % 7)
    model = TIGER(table, d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64).eval()
    blocks = [m for m in model.modules() if isinstance(m, (_DenseActDense, T5DenseActDense))]
    assert blocks and all(type(b) is _DenseActDense for b in blocks)
    stock = _stock_t5(model).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, model.token_map.vocab_size, (8, 12), generator=g)
    y = torch.randint(2, model.token_map.vocab_size, (8, table.levels), generator=g)
    for amp in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            ours = model(x, y)
            theirs = stock(input_ids=x, attention_mask=x != 0, labels=y).loss
        assert torch.equal(ours, theirs), (amp, ours, theirs)
    # Outside autocast, a wo kept in float32 under bfloat16 activations (transformers keeps T5's
    # wo in float32 when a checkpoint loads in half precision) still gets float32 inputs.
    block = T5DenseActDense(model.t5.config).eval()
    block.wi.to(torch.bfloat16)
    lean = _DenseActDense(block)
    h = torch.randn(3, 5, model.t5.config.d_model, dtype=torch.bfloat16)
    assert torch.equal(lean(h), block(h)) and lean(h).dtype == torch.float32


def _attention_reference(q, k, v, position_bias, additive_mask, scaling, keep, p_used):
    w = torch.softmax(q @ k.transpose(2, 3) * scaling + position_bias + additive_mask, dim=-1)
    return ((w * keep / (1 - p_used)) @ v).transpose(1, 2)


def _require_sidkit_attention():
    from sidkit.models import TIGER

    if not TIGER(sk.resolve(np.arange(8).reshape(4, 2)), d_model=8, num_layers=1, num_heads=1, d_kv=8).sidkit_attention:
        pytest.skip("this transformers' T5 does not use the attention interface")


@pytest.mark.parametrize("mask_kind", ["bool", "float", "causal"])
def test_t5_attention_dropout_matches_a_reference(mask_kind):
    """The attention function's training path: T5's eager arithmetic with FastDropout's mask
    (drawn from the global torch RNG), checked with autograd against a plain-torch reference
    using keep_mask's mask for the same seed, for SDPA's boolean masks, additive float masks
    and no mask on a causal module (SDPA's is_causal case); evaluation goes to SDPA."""
    from sidkit.models._dropout import draw_seed, keep_mask
    from sidkit.models.tiger import _t5_attention

    g = torch.Generator().manual_seed(1)
    b, h, t, s_, d = 3, 2, 5, 7, 4
    if mask_kind == "causal":
        s_ = t
    q, k, v = (torch.randn(b, h, n, d, generator=g, requires_grad=True) for n in (t, s_, s_))
    bias = torch.randn(1, h, t, s_, generator=g, requires_grad=True)
    attend = torch.ones(b, 1, t, s_, dtype=torch.bool)
    attend[0, :, :, :3] = False  # left padding of the first row
    attend[2, :, :, 6 % s_] = False
    module = torch.nn.Module().train()
    module.is_causal = mask_kind == "causal"
    if mask_kind == "causal":
        attend = torch.ones(t, t, dtype=torch.bool).tril().expand(b, 1, t, t)
        mask = None
    else:
        mask = attend if mask_kind == "bool" else torch.zeros(attend.shape).masked_fill(~attend, -1e9)
    additive = torch.zeros(attend.shape).masked_fill(~attend, torch.finfo(torch.float32).min)
    torch.manual_seed(5)
    out, _ = _t5_attention(module, q, k, v, mask, scaling=0.5, dropout=0.25, position_bias=bias)
    torch.manual_seed(5)
    keep, p_used = keep_mask((b, h, t, s_), 0.25, draw_seed())
    assert 0.15 < 1 - keep.float().mean() < 0.35
    ref = _attention_reference(q, k, v, bias, additive, 0.5, keep, p_used)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g)
    ours = torch.autograd.grad(out, (q, k, v, bias), grad)
    theirs = torch.autograd.grad(ref, (q, k, v, bias), grad)
    for a, r in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, r)
    # evaluation: transformers' SDPA function with the same arguments, no dropout
    module.eval()
    out, _ = _t5_attention(module, q, k, v, mask, scaling=0.5, dropout=0.0, position_bias=bias)
    no_drop = _attention_reference(q, k, v, bias, additive, 0.5, torch.ones(()), 0.0)
    torch.testing.assert_close(out, no_drop, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("amp", [False, True])
def test_sidkit_attention_in_training_computes_what_stock_t5_does(amp, monkeypatch):
    """TIGER's T5 runs sidkit's attention function with SDPA's masks: in training with p
    rounded to 0 (every element kept, so only the masks and arithmetic can differ) loss and
    gradients match stock T5 (SDPA) in evaluation mode, with left padding (boolean masks in
    the encoder and cross-attention) and the decoder's causal self-attention (no mask:
    SDPA's is_causal case)."""
    from sidkit.models import TIGER
    from sidkit.models import tiger as tiger_module

    _require_sidkit_attention()
    table = sk.resolve(np.arange(60).reshape(30, 2) % 7)
    model = TIGER(table, d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, dropout=1e-7)
    assert model.t5.config._attn_implementation == tiger_module.ATTENTION
    stock = _stock_t5(model).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, model.token_map.vocab_size, (8, 12), generator=g)
    x[0, :5] = 0  # left padding: masked keys in encoder self-attention and cross-attention
    x[3, :11] = 0
    y = torch.randint(2, model.token_map.vocab_size, (8, table.levels), generator=g)
    calls = []
    real = tiger_module.draw_seed
    monkeypatch.setattr(tiger_module, "draw_seed", lambda: calls.append(1) or real())
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        ours = model(x, y)
        theirs = stock(input_ids=x, attention_mask=x != 0, labels=y).loss
    assert len(calls) == 3 * 2  # encoder self, decoder self and cross attention in 2 layers each
    tol = {"rtol": 2e-2, "atol": 2e-2} if amp else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours, theirs, **tol)
    ours.backward()
    theirs.backward()
    mine = dict(model.t5.named_parameters())
    for name, param in stock.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(mine[name].grad, param.grad, **tol, msg=name)


def test_sidkit_attention_decodes_what_stock_t5_decodes():
    """Evaluation goes through SDPA with SDPA's masks: the same top-k lists as stock T5 on
    left-padded histories, with and without the KV cache."""
    from sidkit.models import TIGER

    _require_sidkit_attention()
    sequences, emb = chains_dataset(users=40)
    table = sk.resolve(sk.RQKMeans(2, 4, iters=3, verbose=False).fit(emb).encode(emb))
    model = TIGER(table, d_model=16, num_layers=2, num_heads=2, d_kv=8, d_ff=32, seed=1).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(2, model.token_map.vocab_size, (12, 9), generator=g)
    x[:5, :4] = 0
    ours = [model.recommend(x, beam_width=6, top_k=5, kv_cache=c) for c in (True, False)]
    model.t5 = _stock_t5(model).eval()
    theirs = [model.recommend(x, beam_width=6, top_k=5, kv_cache=c) for c in (True, False)]
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sidkit_attention_stays_off_where_t5_has_no_attention_interface(monkeypatch):
    from sidkit.models import TIGER
    from sidkit.models.tiger import use_sidkit_attention
    from transformers.models.t5 import modeling_t5

    table = sk.resolve(np.arange(8).reshape(4, 2))
    monkeypatch.delattr(modeling_t5, "eager_attention_forward", raising=False)
    model = TIGER(table, d_model=8, num_layers=1, num_heads=1, d_kv=8)
    assert model.sidkit_attention is False and model.t5.config._attn_implementation != "sidkit_t5"
    monkeypatch.undo()
    model.t5.set_attn_implementation("eager")  # an implementation asked for explicitly is kept
    assert use_sidkit_attention(model.t5) is False and model.t5.config._attn_implementation == "eager"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benches/gpu_session.sh)")
def test_tiger_trains_and_decodes_on_cuda():
    """The GPU path: bf16 autocast training on the device learns the planted chains, and the
    trained weights decode the same top-10 lists on CUDA as on the CPU (float32 both)."""
    from sidkit.train import fit

    model, table, split, train, valid, test = _chains_setup(dropout=0.1)
    history = fit(model, train, valid, epochs=12, batch_size=64, lr=3e-3, beam_width=10, verbose=False, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert history[-1]["loss"] < history[0]["loss"]
    on_gpu = model.recommend(test.inputs, beam_width=10, top_k=10)
    got = ranking_metrics(on_gpu, split.test_target, ks=(10,))
    pop = ranking_metrics(np.tile(most_popular(split.train, 10), (len(on_gpu), 1)), split.test_target, ks=(10,))
    assert got["recall@10"] > 0.5 and got["recall@10"] > 3 * pop["recall@10"], (got, pop)
    on_cpu = model.to("cpu").recommend(test.inputs, beam_width=10, top_k=10)
    assert (on_gpu[:, 0] == on_cpu[:, 0]).mean() > 0.95  # float near-ties aside, the same best item
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(on_gpu, on_cpu, strict=True)]) > 0.95


def test_recommend_restores_the_mode_and_make_examples_checks_users():
    from sidkit.models.tiger import TIGER, make_examples

    table = sk.SidTable([1, 2, 3], [[0, 1], [1, 0], [1, 1]], (2, 2))
    model = TIGER(table, d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32, user_buckets=4)
    tm = model.token_map
    model.train()
    ex = make_examples([np.array([1, 2])], [3], table, tm, users=[7], user_buckets=4)
    model.recommend(ex.inputs, beam_width=2, top_k=2)
    assert model.training  # put back as found (a training loop calling it keeps training)
    model.eval()
    model.recommend(ex.inputs, beam_width=2, top_k=2)
    assert not model.training
    for users, exc, msg in (
        ([1.7], TypeError, "users: expected integer user ids"),
        ([True], TypeError, "users: expected integer user ids"),
        ([1, 2], ValueError, r"users: expected 1 users \(one per history\), got shape \(2,\)"),
    ):
        with pytest.raises(exc, match=msg):
            make_examples([np.array([1, 2])], [3], table, tm, users=users, user_buckets=4)
    # Without user buckets the users are not read (the harness passes them either way).
    plain = make_examples([np.array([1, 2])], [3], table, tm, users=[1.5])
    np.testing.assert_array_equal(plain.inputs, make_examples([np.array([1, 2])], [3], table, tm).inputs)
