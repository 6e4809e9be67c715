"""pytest-benchmark: sidkit's hot paths side by side with the peer each must beat.

    pytest benches/test_speed.py --benchmark-enable                     # all groups
    pytest benches/test_speed.py --benchmark-enable -k step             # one group
    pytest benches/test_speed.py --benchmark-enable --benchmark-compare # against a saved run

Each group times sidkit and its peer on the same input, and every benchmark first checks that
its result equals the reference's, so a speed-up never comes from doing different work. Sizes
are moderate (a run takes about a minute on 2 cores); the compare_*.py scripts measure the full
sizes the README reports. Ratios, not absolute times, are what carry across machines.
"""

from __future__ import annotations

import numpy as np
import pytest
import sidkit as sk

torch = pytest.importorskip("torch")

THREADS = 2


@pytest.fixture(scope="module", autouse=True)
def _threads():
    sk.set_num_threads(THREADS)
    torch.set_num_threads(THREADS)


# --- RQ assignment: greedy encode, L = 3, K = 256, 50,000 x 128 -------------------------------


@pytest.fixture(scope="module")
def rq_problem():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((512, 128)).astype(np.float32)
    x = centres[rng.integers(512, size=50_000)] + 0.5 * rng.standard_normal((50_000, 128), dtype=np.float32)
    cb = sk.RQKMeans(3, 256, iters=5, seed=0, verbose=False).fit(x[:4096])
    return x, cb


def numpy_greedy(x: np.ndarray, levels: list[np.ndarray], chunk: int = 8192) -> np.ndarray:
    """The usual numpy residual assignment: ||c||² - 2·r·cᵀ per level, chunked."""
    codes = np.empty((len(x), len(levels)), dtype=np.int64)
    for s in range(0, len(x), chunk):
        r = x[s : s + chunk].copy()
        for l, c in enumerate(levels):
            j = np.argmin((c * c).sum(1) - 2.0 * r @ c.T, axis=1)
            codes[s : s + chunk, l] = j
            r -= c[j]
    return codes


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.asarray(a, np.int64) == np.asarray(b, np.int64)).all(1).mean())


@pytest.mark.benchmark(group="rq-assign")
def test_rq_assign_sidkit(benchmark, rq_problem):
    x, cb = rq_problem
    want = numpy_greedy(x, [cb.level(l) for l in range(cb.levels)])
    codes = benchmark(cb.encode, x)
    assert _agree(codes, want) > 0.999  # float rounding may flip a near-tie


@pytest.mark.benchmark(group="rq-assign")
def test_rq_assign_numpy(benchmark, rq_problem):
    x, cb = rq_problem
    levels = [cb.level(l) for l in range(cb.levels)]
    codes = benchmark(numpy_greedy, x, levels)
    assert _agree(codes, cb.encode(x)) > 0.999


# --- Trie build: 200,000 SIDs of 4 levels, vs a GENRE-style nested dict -----------------------

SIZES = (256, 256, 256, 16)


@pytest.fixture(scope="module")
def sids():
    rng = np.random.default_rng(1)
    codes = np.unique(np.stack([rng.integers(0, k, size=240_000) for k in SIZES], 1), axis=0)
    return codes[rng.permutation(len(codes))[:200_000]].astype(np.uint16)


def dict_trie(codes: np.ndarray) -> dict:
    root: dict = {}
    for row in codes.tolist():
        node = root
        for c in row:
            node = node.setdefault(c, {})
    return root


def _dict_leaves(d: dict, depth: int) -> int:
    return 1 if depth == 0 else sum(_dict_leaves(v, depth - 1) for v in d.values())


@pytest.mark.benchmark(group="trie-build")
def test_trie_build_sidkit(benchmark, sids):
    trie = benchmark(sk.Trie, sids, sizes=SIZES)
    assert trie.contains(sids).all() and len(trie) == len(sids)


@pytest.mark.benchmark(group="trie-build")
def test_trie_build_dict(benchmark, sids):
    d = benchmark(dict_trie, sids)
    assert _dict_leaves(d, len(SIZES)) == len(sids)


# --- One constrained beam-search step at level 1: B = 128, beam 20, K = 256 -------------------

B, W = 128, 20


@pytest.fixture(scope="module")
def step_problem(sids):
    trie = sk.Trie(sids, sizes=SIZES)
    rng = np.random.default_rng(2)
    logp0 = np.log(rng.dirichlet(np.ones(256), size=B * W)).astype(np.float32)
    logp1 = np.log(rng.dirichlet(np.ones(256), size=B * W)).astype(np.float32)
    s = sk.BeamSearch(trie, B, W)
    s.step(logp0)
    ref = sk.BeamSearch(trie, B, W)
    ref.step(logp0)
    want_codes, want_parents = ref.step(logp1)
    # The strongest pure-torch step at this level: a dense (K0, K1) table of valid second codes.
    table = torch.zeros((256, 256), dtype=torch.bool)
    table[torch.from_numpy(sids[:, 0].astype(np.int64)), torch.from_numpy(sids[:, 1].astype(np.int64))] = True
    prefix = torch.from_numpy(s.tokens()[:, 0].astype(np.int64))
    return trie, logp0, logp1, s.scores(), table, prefix, want_codes, want_parents


def torch_dense_step(scores: torch.Tensor, lp: torch.Tensor, table: torch.Tensor, prefix: torch.Tensor):
    total = (scores[:, None] + lp).masked_fill(~table[prefix], float("-inf")).view(B, W * 256)
    top = total.topk(W, dim=1)
    return top.indices % 256, top.indices // 256 + torch.arange(B)[:, None] * W


@pytest.mark.benchmark(group="decode-step")
def test_decode_step_sidkit(benchmark, step_problem):
    trie, logp0, logp1, _, _, _, want_codes, want_parents = step_problem

    def setup():
        s = sk.BeamSearch(trie, B, W)
        s.step(logp0)
        return (s,), {}

    def step(s):
        return s.step(logp1)

    codes, parents = benchmark.pedantic(step, setup=setup, rounds=30, warmup_rounds=2)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(parents, want_parents)


@pytest.mark.benchmark(group="decode-step")
def test_decode_step_torch_dense_table(benchmark, step_problem):
    _, _, logp1, scores, table, prefix, want_codes, want_parents = step_problem
    sc, lp = torch.from_numpy(scores), torch.from_numpy(logp1)
    codes, parents = benchmark(torch_dense_step, sc, lp, table, prefix)
    np.testing.assert_array_equal(codes.reshape(-1).numpy(), want_codes.astype(np.int64))
    np.testing.assert_array_equal(parents.reshape(-1).numpy(), want_parents)
