"""Dataset loaders against the real files and a pandas reference."""

from __future__ import annotations

import numpy as np
import pytest
from sidkit.data import item_embeddings, leave_one_out, load_interactions, load_recbole


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
