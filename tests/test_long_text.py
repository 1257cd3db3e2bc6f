"""Texts longer than the token limit: ``long_text="chunk"`` windows, pooling, cache keys, the
token limit up to the model's positions, token states and routing over windows, ``skmoe embed``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import skmoe.engine.windows as windows_module
from skmoe import MoEEmbeddingTransformer
from skmoe.cache import cache_namespace, embedding_namespace
from skmoe.embedding import LongerThanTrainedWarning
from skmoe.encoder import load_encoder
from skmoe.engine import Engine, TruncationWarning
from skmoe.engine.windows import Layout, WindowPool, split_row

LONG = " ".join(f"Sentence {i} talks about the number {i} and little else." for i in range(40))
SHORT = ["A short text.", "Ein kurzer Satz.", "Un texte court, mais pas trop."]


@pytest.fixture(scope="module")
def moe(random_moe_xlmr_path: Path) -> str:
    return str(random_moe_xlmr_path)


@pytest.fixture(scope="module")
def encoder(random_moe_xlmr_path: Path):
    return load_encoder(random_moe_xlmr_path, device="cpu")


# -- windows -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [0, 3, 7])
def test_windows_cover_the_body_with_the_overlap_and_repeat_prompt_and_specials(overlap):
    layout = Layout(head=1, tail=1, prompt_ids=(50, 51))
    body = list(range(100, 137))
    row = [0, 50, 51, *body, 2]
    got = split_row(row, layout, max_length=12, overlap=overlap)
    assert np.array_equal(got[0], row[:11] + [2])  # the first window is the truncated text
    pieces = []
    for w in got:
        assert len(w) <= 12 and list(w[:3]) == [0, 50, 51] and w[-1] == 2
        pieces.append(list(w[3:-1]))
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert a[len(a) - overlap :] == b[:overlap] if overlap else True  # shared tokens
        assert b[overlap:] and b[overlap] == a[-1] + 1  # then new tokens, none skipped
    assert pieces[-1][-1] == body[-1]
    assert split_row(row[:12], layout, 12, overlap)[0].tolist() == row[:12]  # fits: as it is


def test_an_overlap_that_leaves_no_room_is_refused_naming_the_numbers():
    layout = Layout(head=1, tail=1, prompt_ids=(50, 51, 52, 53))
    with pytest.raises(ValueError, match=r"chunk_overlap=6 leaves no room.*holds 6 text tokens"
                                         r".*prompt \(4 tokens\)"):
        split_row([0, 50, 51, 52, 53, *range(100, 140), 2], layout, max_length=12, overlap=6)


def test_a_max_length_the_prompt_fills_is_refused_in_truncate_mode(moe):
    """max_length=5 with the 3-token "classification: " prompt and 2 special tokens kept no
    text token: every text became the same row, the same vector, with only a truncation
    warning. Refused (by the engine, before a batch runs); one token of room is enough."""
    with pytest.raises(ValueError, match=r"max_length=5 leaves no room for text: the prompt "
                                         r"takes 3 tokens and the special tokens 2"):
        MoEEmbeddingTransformer(moe, max_length=5, verbose=0).embed(["The dog", "Quantum"])
    with pytest.warns(TruncationWarning):
        X = MoEEmbeddingTransformer(moe, max_length=6, verbose=0).embed(["The dog", "Quantum"])
    assert not np.array_equal(X[0], X[1])


def test_a_chunk_overlap_without_room_is_refused_before_any_text_is_embedded(moe, monkeypatch,
                                                                            tmp_path):
    """In chunk mode the room left by the overlap was checked at the first long text only:
    5,000 short texts (50 s) were embedded, then the first long one raised and every vector was
    lost. Refused before a batch runs, like a max_length the prompt fills."""
    from skmoe.encoder.sentence import SentenceEncoder

    est = MoEEmbeddingTransformer(moe, max_length=12, long_text="chunk", chunk_overlap=7,
                                  verbose=0).fit([])
    calls = []
    real = SentenceEncoder.forward_packed
    monkeypatch.setattr(SentenceEncoder, "forward_packed",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with pytest.raises(ValueError, match=r"chunk_overlap=7 leaves no room for new tokens"):
        est.embed_to(["short", "also short", "a long text " * 40], tmp_path / "out.npy",
                     chunk_size=2)  # the long text in the second chunk
    assert calls == []  # nothing embedded, so nothing lost


def test_pool_is_the_token_weighted_mean_and_keeps_single_windows_bit_for_bit():
    rng = np.random.default_rng(0)
    owner = np.array([0, 1, 1, 1, 2])
    lengths = np.array([5, 12, 12, 4, 7])
    vectors = rng.standard_normal((5, 3)).astype(np.float32)
    pool = WindowPool(owner, lengths, 3)
    done, got = pool.add(np.array([2, 0]), vectors[[2, 0]])
    assert done.tolist() == [0] and np.array_equal(got[0], vectors[0])  # text 1 not complete
    done, got = pool.add(np.array([4, 1, 3]), vectors[[4, 1, 3]])
    assert sorted(done.tolist()) == [1, 2]
    by_text = dict(zip(done.tolist(), got, strict=True))
    assert np.array_equal(by_text[2], vectors[4])
    want = (vectors[1:4] * lengths[1:4, None]).sum(0) / lengths[1:4].sum()
    np.testing.assert_allclose(by_text[1], want, rtol=1e-6)


# -- the road ------------------------------------------------------------------------------------
def test_texts_that_fit_give_bit_identical_vectors_in_both_modes(moe):
    truncated = MoEEmbeddingTransformer(moe, center=False, verbose=0).fit_transform(SHORT)
    chunked = MoEEmbeddingTransformer(moe, center=False, verbose=0, long_text="chunk").fit_transform(SHORT)
    assert np.array_equal(truncated, chunked)


def test_a_long_text_is_the_token_weighted_mean_of_its_windows(moe, encoder):
    est = MoEEmbeddingTransformer(moe, center=False, verbose=0, max_length=32, long_text="chunk",
                                  chunk_overlap=8, normalize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)  # chunk mode cuts nothing
        got = est.fit_transform([LONG, SHORT[0]])
    prompt = est.prompt_
    ids = encoder.tokenizer(prompt + LONG)["input_ids"]
    rows = split_row(ids, Layout.of(encoder.tokenizer, prompt), 32, 8)
    assert len(rows) > 5
    window_vectors = Engine(encoder, max_length=32).embed_ids(rows)
    lengths = np.array([len(r) for r in rows], dtype=np.float64)
    want = (window_vectors * lengths[:, None]).sum(0) / lengths.sum()
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    with pytest.warns(TruncationWarning):
        cut = est.set_params(long_text="truncate").fit_transform([LONG])
    np.testing.assert_allclose(cut[0], window_vectors[0], rtol=1e-5, atol=1e-6)  # window 0


def test_windows_stream_in_groups_with_the_same_vectors(moe, monkeypatch):
    texts = [LONG, *SHORT, LONG[::-1], LONG[:300]]
    est = MoEEmbeddingTransformer(moe, center=False, verbose=0, max_length=24, long_text="chunk",
                                  chunk_overlap=4)
    whole = est.fit_transform(texts)
    groups = []
    real = windows_module.TokenGroup

    def spy(*args, **kwargs):
        groups.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(windows_module, "GROUP_TOKENS", 64)  # about one long text per group
    monkeypatch.setattr(windows_module, "WINDOW_TEXTS_PER_CALL", 1)
    monkeypatch.setattr(windows_module, "TokenGroup", spy)
    streamed = est.fit_transform(texts)
    assert len(groups) >= 3
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_the_cache_keeps_the_modes_apart_and_truncate_namespaces_unchanged(moe, tmp_path):
    parts = dict(model_fingerprint="f" * 64, revision="local", prompt="q: ", max_length=512,
                 pooling="mean", precision="float32", device_type="cpu")
    truncate, _ = embedding_namespace(**parts, with_revision=True)
    assert truncate == cache_namespace(**parts)  # the recipe from before the option
    chunk, labels = embedding_namespace(**parts, long_text="chunk", chunk_overlap=64,
                                        with_revision=True)
    other, _ = embedding_namespace(**parts, long_text="chunk", chunk_overlap=32, with_revision=True)
    assert len({truncate, chunk, other}) == 3 and labels["long_text"] == "chunk"
    cache = str(tmp_path / "c.sqlite")
    with pytest.warns(TruncationWarning):
        cut = MoEEmbeddingTransformer(moe, center=False, cache=cache, max_length=32, verbose=0).fit_transform(
            [LONG, SHORT[0]])
    chunked_est = MoEEmbeddingTransformer(moe, center=False, cache=cache, max_length=32, long_text="chunk",
                                          chunk_overlap=8, verbose=0)
    chunked = chunked_est.fit_transform([LONG, SHORT[0]])
    assert not np.allclose(cut[0], chunked[0], atol=1e-3)  # no collision in the cache
    np.testing.assert_allclose(cut[1], chunked[1], atol=1e-6)
    stats = chunked_est.cache_stats()
    again = chunked_est.transform([LONG])
    assert chunked_est.cache_stats().hits == stats.hits + 1
    assert np.array_equal(again[0], chunked[0])


@pytest.mark.parametrize(("params", "error", "match"), [
    ({"long_text": "split"}, ValueError, r"long_text must be one of \('truncate', 'chunk'\)"),
    ({"long_text": "chunk", "chunk_overlap": -1}, ValueError, "chunk_overlap must be >= 0"),
    ({"long_text": "chunk", "chunk_overlap": 2.5}, TypeError, "chunk_overlap must be an int"),
    ({"long_text": "chunk", "max_length": 16, "chunk_overlap": 16}, ValueError,
     r"chunk_overlap must be >= 0, below max_length \(16\), got 16"),
    ({"max_length": 4096}, ValueError, r"max_length=4096 is beyond the 2048 positions"),
])
def test_bad_long_text_settings_are_refused_in_fit(moe, params, error, match):
    est = MoEEmbeddingTransformer(moe, center=False, verbose=0, **params)
    with pytest.raises(error, match=match):
        est.fit(SHORT)


def test_truncate_mode_ignores_the_overlap_bound(moe):
    MoEEmbeddingTransformer(moe, center=False, verbose=0, max_length=16).fit(SHORT)  # overlap 64 > 16: fine


def test_max_length_above_the_trained_length_warns_once_up_to_the_positions(moe):
    est = MoEEmbeddingTransformer(moe, center=False, verbose=0, max_length=1024)
    with pytest.warns(LongerThanTrainedWarning) as caught:
        out = est.fit_transform([LONG])  # about 600 tokens: more than 512, not cut
    above = [w for w in caught if issubclass(w.category, LongerThanTrainedWarning)]
    assert len(above) == 1 and len(caught) == 1  # and no TruncationWarning
    assert "above the 512 tokens" in str(above[0].message) and "2048" in str(above[0].message)
    assert above[0].filename == __file__
    assert out.shape == (1, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MoEEmbeddingTransformer(moe, center=False, verbose=0).fit_transform([SHORT[0]])  # default: silent


def test_a_dense_model_refuses_more_than_its_positions(e5_path):
    est = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", max_length=600, verbose=0)
    with pytest.raises(ValueError, match=r"max_length=600 is beyond the 512 positions"):
        est.fit(SHORT)


# -- token states and routing ----------------------------------------------------------------------
def test_token_states_of_a_chunked_text_are_its_windows_states_concatenated(moe, encoder):
    from skmoe.token_states import token_states, tokens

    prompt = "classification: "
    rows = split_row(encoder.tokenizer(prompt + LONG)["input_ids"],
                     Layout.of(encoder.tokenizer, prompt), 32, 8)
    (states, mean), (short_states, _) = token_states(
        encoder, [LONG, SHORT[0]], prompt, 32, long_text="chunk", chunk_overlap=8)
    assert states.shape[0] == sum(len(r) for r in rows)
    assert len(tokens(encoder, [LONG], prompt, 32, long_text="chunk", chunk_overlap=8)[0]) == \
        states.shape[0]
    with pytest.warns(TruncationWarning):
        (cut_states, _), = token_states(encoder, [LONG], prompt, 32)
    assert cut_states.shape[0] == 32
    assert short_states.shape[0] == len(encoder.tokenizer(prompt + SHORT[0])["input_ids"])
    est = MoEEmbeddingTransformer(moe, center=False, verbose=0, max_length=32, long_text="chunk",
                                  chunk_overlap=8, normalize=False)
    np.testing.assert_allclose(mean, est.fit_transform([LONG])[0], rtol=1e-4, atol=1e-5)


def test_learned_pooling_takes_the_long_text_option(moe):
    from skmoe.learned_pooling import LearnedPooling

    lp = LearnedPooling(moe, max_length=32, long_text="chunk", chunk_overlap=8, max_iter=0)
    lp.fit([LONG, *SHORT], [0, 1, 0, 1])
    weights = lp.token_weights([LONG])
    assert len(weights) > 32  # pooled over all windows
    with pytest.raises(ValueError, match="long_text must be one of"):
        LearnedPooling(moe, long_text="cut", max_iter=0).fit(SHORT, [0, 1, 0])


def test_routing_counts_every_windows_tokens(moe, encoder):
    from skmoe.evaluation import routing_stats

    prompt = "classification: "
    rows = split_row(encoder.tokenizer(prompt + LONG)["input_ids"],
                     Layout.of(encoder.tokenizer, prompt), 32, 8)
    stats = routing_stats(encoder, [LONG, SHORT[0]], ["long", "short"], prompt=prompt,
                          max_length=32, long_text="chunk", chunk_overlap=8)
    assert stats.tokens["long"] == sum(len(r) for r in rows)
    est = MoEEmbeddingTransformer(moe, center=False, max_length=32, long_text="chunk", chunk_overlap=8)
    assert routing_stats(est, [LONG]).tokens.iloc[0] == sum(len(r) for r in rows)
    text_only = routing_stats(encoder, [LONG], prompt=prompt, max_length=32,
                              long_text="chunk", chunk_overlap=8, tokens="text")
    head = len(encoder.tokenizer(prompt.strip(), add_special_tokens=False)["input_ids"])
    assert text_only.tokens.iloc[0] == sum(len(r) - 2 - head for r in rows)


# -- skmoe embed ----------------------------------------------------------------------------------
def test_skmoe_embed_long_text_chunk(capsys, tmp_path, moe):
    from skmoe.cli import main

    src, dst = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text(f"{LONG}\n{SHORT[0]}\n", encoding="utf-8")
    code = main(["embed", str(src), "-o", str(dst), "--model", moe, "--no-cache", "-q",
                 "--max-length", "32", "--long-text", "chunk", "--chunk-overlap", "8"])
    assert code == 0, capsys.readouterr().err
    want = MoEEmbeddingTransformer(moe, center=False, normalize=2.0, max_length=32,  # embed's
                                   long_text="chunk", chunk_overlap=8,
                                   verbose=0).fit_transform([LONG, SHORT[0]])
    np.testing.assert_allclose(np.load(dst), want, atol=1e-6)
    code = main(["embed", str(src), "-o", str(dst), "--model", moe, "--no-cache", "-q",
                 "--max-length", "32", "--long-text", "chunk", "--chunk-overlap", "40"])
    assert code != 0 and "chunk_overlap must be >= 0, below max_length (32)" in \
        capsys.readouterr().err
    assert main(["embed", str(src), "-o", str(dst), "--long-text", "split"]) != 0
    assert "invalid choice: 'split'" in capsys.readouterr().err


# -- what it is for: retrieval over documents longer than the limit -------------------------------
def _documents(sib200_dir: Path, n_docs: int, per_doc: int) -> tuple[list[str], list[str]]:
    sentences = pd.read_csv(sib200_dir / "eng_Latn" / "train.tsv", sep="\t")["text"].tolist()
    np.random.default_rng(0).shuffle(sentences)
    docs = [sentences[i * per_doc : (i + 1) * per_doc] for i in range(n_docs)]
    queries = [doc[k] for doc in docs for k in (per_doc - 3, per_doc - 1)]  # near the end
    return [" ".join(doc) for doc in docs], queries


def test_chunking_finds_documents_by_sentences_past_the_limit(e5_path, sib200_dir):
    """Query sentences from past the limit of long documents find their document (top-1 cosine)
    far more often with chunk than with truncate. Measured (12 documents of 6 English SIB-200
    sentences, about 180 tokens each, limit 48, overlap 8): truncate 0.125, chunk 0.875."""
    from skmoe.postprocessing import cosine_matrix

    limit, per_doc = 48, 6
    docs, queries = _documents(sib200_dir, n_docs=12, per_doc=per_doc)
    est = MoEEmbeddingTransformer(str(e5_path), prompt="passage: ", max_length=limit,
                                  chunk_overlap=8, verbose=0)
    tokenizer = est.get_encoder().tokenizer
    sentences = pd.read_csv(sib200_dir / "eng_Latn" / "train.tsv", sep="\t")["text"].tolist()
    np.random.default_rng(0).shuffle(sentences)
    for d in range(len(docs)):  # every query starts past the limit of its document
        before = " ".join(sentences[d * per_doc : d * per_doc + per_doc - 3])
        assert len(tokenizer("passage: " + before)["input_ids"]) > limit
    truth = np.repeat(np.arange(len(docs)), 2)
    queries_est = MoEEmbeddingTransformer(str(e5_path), prompt="query: ", verbose=0)  # uncut
    recall = {}
    for mode in ("truncate", "chunk"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            vectors = est.set_params(long_text=mode).fit_transform(docs)
        asked = queries_est.embed(queries)
        recall[mode] = float(np.mean(cosine_matrix(asked, vectors).argmax(1) == truth))
    assert recall["chunk"] >= 0.6 and recall["chunk"] >= recall["truncate"] + 0.4, recall
