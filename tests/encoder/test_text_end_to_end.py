"""Texts in several scripts through a random MoE checkpoint with the real 250048-row vocabulary
and the XLM-R tokenizer: tokenize -> prompt -> forward -> pool -> (truncate) -> normalise."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _texts import SCRIPTS, sib200_texts

from skmoe import capture_routing, load_encoder
from skmoe.encoder.nomic_moe import MoE
from skmoe.engine import Engine
from skmoe.engine.runner import TruncationWarning

normalize = partial(F.normalize, dim=-1)  # L2 rows, as the model card does


@pytest.fixture(scope="module")
def enc(random_moe_xlmr_path):
    return load_encoder(random_moe_xlmr_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def texts(sib200_dir):
    return {lang: sib200_texts(sib200_dir, lang, 2) for lang in SCRIPTS}


def test_real_vocabulary_and_tokenizer(enc):
    assert enc.backbone.config.vocab_size == 250048
    assert len(enc.tokenizer) == 250002
    assert enc.pad_token_id == 1 and enc.max_length == 512


def test_every_script_tokenizes_to_known_pieces(enc, texts):
    for lang, rows in texts.items():
        ids, truncated = enc.tokenize(rows)
        assert truncated == []
        for row in ids:
            assert row[0] == 0 and row[-1] == 2  # <s> ... </s>
            unknown = sum(t == 3 for t in row) / len(row)
            assert unknown < 0.05, (lang, unknown)
            assert max(row) < 250002


def test_unit_norm_embeddings_in_every_script(enc, texts):
    flat = [t for rows in texts.values() for t in rows]
    prompt = enc.resolve_prompt("classification")
    raw = Engine(enc).embed(flat, prompt=prompt)
    assert raw.shape == (len(flat), 64) and raw.dtype == np.float32 and np.isfinite(raw).all()
    for d in (64, 32):  # full width and a Matryoshka width: truncate, then normalise
        emb = normalize(torch.from_numpy(raw[:, :d])).numpy()
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    # distinct sentences give distinct vectors
    sims = normalize(torch.from_numpy(raw)).numpy() @ normalize(torch.from_numpy(raw)).numpy().T
    assert sims[~np.eye(len(flat), dtype=bool)].max() < 1 - 1e-4


def test_batch_order_and_duplicates_do_not_matter(enc, texts):
    flat = [t for rows in texts.values() for t in rows]
    engine = Engine(enc, batch_size=3)
    together = engine.embed(flat)
    alone = np.stack([Engine(enc).embed([t])[0] for t in flat[:4]])
    assert np.abs(together[:4] - alone).max() < 1e-5
    shuffled = engine.embed(flat[::-1] + flat[:2])
    assert np.abs(shuffled[: len(flat)][::-1] - together).max() < 1e-5
    assert np.abs(shuffled[len(flat) :] - together[:2]).max() < 1e-5


def test_prompts_are_applied(enc, texts):
    rows = texts["eng_Latn"]
    prompt = enc.resolve_prompt("query")
    assert prompt == "search_query: "
    engine = Engine(enc)
    with_prompt = engine.embed(rows, prompt=prompt)
    assert np.abs(with_prompt - engine.embed([prompt + t for t in rows])).max() < 1e-6
    assert np.abs(with_prompt - engine.embed(rows)).max() > 1e-3
    # the prefix is ordinary text, tokenised with the sentence
    prefix_ids = enc.tokenizer(prompt.strip(), add_special_tokens=False)["input_ids"]
    ids, _ = enc.tokenize([prompt + rows[0]])
    assert ids[0][1 : 1 + len(prefix_ids)] == prefix_ids


def test_truncation_is_reported(enc):
    long_text = "word " * 2000
    engine = Engine(enc)
    with pytest.warns(TruncationWarning, match=r"1 text\(s\) exceed.*512"):
        out = engine.embed([long_text, "short"])
    assert engine.stats.truncated == 1 and out.shape == (2, 64)
    ids, truncated = enc.tokenize([long_text, "short"])
    assert truncated == [0] and len(ids[0]) == 512 and ids[0][-1] == 2


def test_tokenizer_side_cut_equals_cutting_the_full_ids(enc):
    from skmoe.encoder.tokenization import tokenize

    # rows around the limit: 6 + 2 special tokens is exactly 8 for "word word ..."
    full = enc.tokenizer(["word " * 6], add_special_tokens=True)["input_ids"][0]
    assert len(full) == 8
    texts = ["word " * n for n in (5, 6, 7, 8, 40)] + ["日本語のテキスト" * 9, "\ufdfa" * 5, ""]
    want_ids = enc.tokenizer(texts, add_special_tokens=True)["input_ids"]
    ids, truncated = tokenize(enc.tokenizer, texts, 8)
    assert truncated == [i for i, row in enumerate(want_ids) if len(row) > 8] == [2, 3, 4, 5, 6]
    assert ids == [row if len(row) <= 8 else row[:7] + row[-1:] for row in want_ids]


def test_routing_capture_is_off_by_default(enc, monkeypatch):
    moes = [m for m in enc.modules() if isinstance(m, MoE)]
    assert len(moes) == len(enc.moe_config.moe_layers) > 0
    assert all(m.routing_sink is None for m in moes)
    ids = torch.tensor([[0, 100, 2000, 2]])
    with capture_routing(enc) as records:
        with torch.inference_mode():
            enc(ids, torch.ones_like(ids))
        assert len(records) == len(moes)
    assert all(m.routing_sink is None for m in moes)

    # outside the block no record is even built (no copies, no device syncs)
    import skmoe.encoder.routing_capture as routing_capture

    def no_record(*args, **kwargs):
        raise AssertionError("a RoutingRecord was built with capture off")

    monkeypatch.setattr(routing_capture, "RoutingRecord", no_record)
    with torch.inference_mode():
        enc(ids, torch.ones_like(ids))
    assert len(records) == len(moes)


@pytest.mark.slow
def test_fast_tokenizer_path_matches_autotokenizer(enc, sib200_dir):
    """load_tokenizer's plain fast wrapper gives AutoTokenizer's ids (one sentence per language)."""
    from transformers import AutoTokenizer

    langs = sorted(p.name for p in sib200_dir.iterdir() if p.is_dir())
    rows = [sib200_texts(sib200_dir, lang, 1)[0] for lang in langs] + ["", "naïve café ①"]
    auto = AutoTokenizer.from_pretrained(enc.source.path)
    assert enc.tokenizer(rows)["input_ids"] == auto(rows)["input_ids"]
    assert enc.tokenizer.pad_token_id == auto.pad_token_id == 1
