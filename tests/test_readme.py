"""The README's Python examples run as written (at smaller sizes): each block is executed with a
few named substitutions, each of which must match the README exactly once, so an example that
drifts from the API, or a substitution that no longer applies, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sidkit as sk

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def block(starts_with: str) -> str:
    """The one README python block that starts with ``starts_with``."""
    found = [b for b in python_blocks() if b.startswith(starts_with)]
    assert len(found) == 1, f"expected one README python block starting {starts_with!r}, found {len(found)}"
    return found[0]


def substituted(code: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        assert code.count(old) == 1, f"README example changed: {old!r} appears {code.count(old)} times"
        code = code.replace(old, new)
    return code


def test_quick_start_and_decoding_examples_run(tmp_path, monkeypatch, request):
    torch = pytest.importorskip("torch")  # RQ-VAE
    pytest.importorskip("pyarrow")  # to_parquet
    monkeypatch.chdir(tmp_path)  # the examples save files
    quick = substituted(
        block("import numpy as np\nimport sidkit as sk\n\nemb ="),
        [
            ("(100_000, 128)", "(3_000, 128)"),
            ("codebook_size=256, iters=20", "codebook_size=32, iters=5"),
            ("codebook_size=256, balanced=True", "codebook_size=32, balanced=True"),
            ("latent_dim=32, levels=3, codebook_size=256", "latent_dim=32, levels=3, codebook_size=16"),
            ("epochs=50, device", "epochs=2, device"),
            ("codebook_size=256, epochs=50, seed=0", "codebook_size=16, epochs=2, seed=0"),
        ],
    )
    rng = np.random.default_rng(0)
    ns: dict = {
        "seqs": [rng.integers(0, 3_000, size=8) for _ in range(50)],  # 0-based item rows
        "my_array": rng.standard_normal((2, 4, 128)).astype(np.float32),
    }
    exec(compile(quick, "README quick start", "exec"), ns)
    assert ns["codes"].shape == (3_000, 3) and ns["recon"].shape == (3_000, 128)
    assert isinstance(ns["cb"], sk.Codebooks) and ns["cb"].sizes == (4, 4)  # the last line's
    ns["cb"] = sk.Codebooks.load("codebooks.npz")  # the fitted codebooks again, for the next block

    decoding = block("table = sk.resolve(codes")
    B = 4

    def model_step(tokens):
        """Any model: (B*beam,) last tokens -> (B*beam, V) log-probs (here: random)."""
        logits = torch.from_numpy(rng.standard_normal((len(tokens), ns["tm"].vocab_size)).astype(np.float32))
        return torch.log_softmax(logits, -1).numpy()

    ns.update(
        item_ids=np.arange(5),
        sids=None,  # set below from the table
        new_ids=np.array([10_000, 10_001]),
        new_emb=rng.standard_normal((2, 128)).astype(np.float32),
        B=B,
        model_step=model_step,
        step_fn=lambda tokens, parents: model_step(tokens),
        node_ids=np.zeros(3, dtype=np.int64),  # the root, three times
        torch_bool_tensor=torch.zeros(3, 0, dtype=torch.bool),  # resized below
    )
    # `sids` is read after the table exists: run the block's first lines, then the rest.
    head, rest = decoding.split("table.sid(item_ids)", 1)
    exec(compile(head, "README decoding (resolve)", "exec"), ns)
    ns["sids"] = ns["table"].codes[:5]
    rest = "table.sid(item_ids)" + rest
    tm_line = "tm = sk.TokenMap(table.sizes, offset=2)"
    before_tm, after_tm = rest.split(tm_line, 1)
    exec(compile(before_tm + tm_line, "README decoding (table, trie)", "exec"), ns)
    ns["torch_bool_tensor"] = torch.zeros(3, ns["tm"].vocab_size, dtype=torch.bool)
    exec(compile(after_tm, "README decoding (beam search)", "exec"), ns)
    table, items = ns["table"], ns["items"]
    assert table.report["method"] == "reassign" and len(table.item_ids) == 3_002
    assert items.shape == (B, 10) and np.isin(items[items >= 0], table.item_ids).all()
    assert ns["torch_bool_tensor"].sum(1).gt(0).all()  # the root has children in every row

    tiny_t5 = request.getfixturevalue("tiny_t5")  # skips here, after the rest, without transformers
    ns.update(t5=tiny_t5(ns["tm"].vocab_size), input_ids=torch.randint(2, 50, (3, 7)))
    exec(compile(block("from sidkit.hf import"), "README Hugging Face", "exec"), ns)
    items = ns["items"]  # the README's last table holds 5 items per SID (FORGE's capacity)
    assert items.shape == (30, 5) and (items[:, 0] >= 0).all()  # every generated SID holds an item
    assert np.isin(items[items >= 0], table.item_ids).all()


def test_training_example_runs(amazon_dir, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    code = substituted(
        block("import numpy as np\nimport sidkit as sk\nfrom sidkit.data import item_embeddings"),
        [
            ('"../shared/data/amazon2014"', repr(str(amazon_dir))),
            ("leave_one_out(ds.sequences)", "leave_one_out(ds.sequences[:300])"),  # 300 users
            ("TIGER(table)", "TIGER(table, num_layers=1, d_ff=256)"),
            ('epochs=30, device="cpu"', 'epochs=1, device="cpu", verbose=False'),
        ],
    )
    ns: dict = {}
    exec(compile(code, "README training example", "exec"), ns)
    top10 = ns["top10"]
    assert top10.shape == (len(ns["split"].test_target), 10)
    assert ((top10 >= 1) & (top10 <= ns["ds"].num_items)).all()  # real item ids, as the table's
