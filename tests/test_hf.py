"""The Hugging Face logits processor with a tiny randomly initialised T5 (no download)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sidkit as sk
from sidkit.hf import SidLogitsProcessor, logits_processor_list

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = (6, 5, 4)


@pytest.fixture
def setup(tiny_t5):
    rng = np.random.default_rng(0)
    every = np.array(list(itertools.product(*[range(k) for k in SIZES])))
    sids = every[rng.choice(len(every), size=40, replace=False)]
    trie = sk.Trie(sids, sizes=SIZES)
    tm = sk.TokenMap(SIZES, offset=2)  # 0 = pad / decoder start, 1 = eos
    model = tiny_t5(tm.vocab_size)
    inputs = torch.randint(2, tm.vocab_size, (3, 7))
    return trie, tm, model, inputs


def hf_generate(model, inputs, processors, beams):
    return model.generate(
        inputs,
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=len(SIZES),
        min_new_tokens=len(SIZES),
        logits_processor=processors,
        do_sample=False,
        eos_token_id=None,
        early_stopping=True,
        output_scores=False,
    )


def test_t5_generate_yields_only_valid_sids(setup):
    trie, tm, model, inputs = setup
    out = hf_generate(model, inputs, logits_processor_list(trie, tm, start=1), beams=5)
    sids = tm.to_codes(out[:, 1 : 1 + len(SIZES)].numpy())
    assert trie.contains(sids).all()
    # Without the processor the same model emits SIDs that match no item.
    free = hf_generate(model, inputs, None, beams=5)[:, 1:].numpy()
    ok = ((free - np.array(tm.starts) >= 0) & (free - np.array(tm.starts) < np.array(SIZES))).all(1)
    codes = np.where(ok[:, None], free - np.array(tm.starts), 0)
    assert not (ok & trie.contains(codes)).all()


def test_t5_matches_sidkit_beam_search(setup):
    trie, tm, model, inputs = setup
    beams = 5
    out = hf_generate(model, inputs, logits_processor_list(trie, tm, start=1), beams=beams)
    hf_sids = tm.to_codes(out[:, 1 : 1 + len(SIZES)].numpy()).reshape(len(inputs), beams, -1)

    @torch.no_grad()
    def step(tokens, parents):
        rows = len(tokens)
        enc = inputs.repeat_interleave(beams, 0)[:rows]
        dec = torch.as_tensor(np.concatenate([np.zeros((rows, 1), np.int64), tokens], 1))
        return torch.log_softmax(model(input_ids=enc, decoder_input_ids=dec).logits[:, -1].float(), -1)

    _, _, ours = sk.generate(step, trie, len(inputs), beams, token_map=tm)
    for b in range(len(inputs)):
        assert {tuple(s) for s in hf_sids[b].tolist()} == {tuple(s) for s in ours[b].tolist()}


def test_processor_rejects_mismatched_maps(setup):
    trie, *_ = setup
    with pytest.raises(ValueError, match="token_map: expected sizes"):
        SidLogitsProcessor(trie, sk.TokenMap((2, 2, 2)))
    with pytest.raises(ValueError, match="start"):
        SidLogitsProcessor(trie, sk.TokenMap(SIZES), start=-1)


def test_decoder_only_gpt2_after_a_prompt_matches_sidkit_beam_search():
    """The documented decoder-only use: the SID follows a prompt (``start`` = prompt length),
    an eos must follow it; the beams are the SIDs sidkit's own beam search finds."""
    rng = np.random.default_rng(1)
    every = np.array(list(itertools.product(*[range(k) for k in SIZES])))
    trie = sk.Trie(every[rng.choice(len(every), size=40, replace=False)], sizes=SIZES)
    tm = sk.TokenMap(SIZES, offset=2)  # 0 = pad, 1 = eos
    cfg = transformers.GPT2Config(
        vocab_size=tm.vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=1
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    prompt = torch.randint(2, tm.vocab_size, (3, 6))
    beams, depth = 4, len(SIZES)
    proc = logits_processor_list(trie, tm, start=prompt.shape[1], eos_token_id=1)
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=depth + 1,
        logits_processor=proc,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=1,
        length_penalty=0.0,
    )
    new = out[:, prompt.shape[1] :].numpy()
    assert (new[:, depth] == 1).all()  # eos right after the SID
    hf_sids = tm.to_codes(new[:, :depth]).reshape(len(prompt), beams, depth)
    assert trie.contains(hf_sids.reshape(-1, depth)).all()

    @torch.no_grad()
    def step(tokens, parents):
        rows = len(tokens)
        seq = torch.cat([prompt.repeat_interleave(beams, 0)[:rows], torch.as_tensor(tokens, dtype=torch.long)], 1)
        return torch.log_softmax(model(input_ids=seq).logits[:, -1].float(), -1)

    _, _, ours = sk.generate(step, trie, len(prompt), beams, token_map=tm)
    for b in range(len(prompt)):
        assert {tuple(s) for s in hf_sids[b].tolist()} == {tuple(s) for s in ours[b].tolist()}
