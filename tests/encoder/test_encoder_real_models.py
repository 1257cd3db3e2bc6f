"""Real small models: multilingual-e5-small (translation similarity) and all-MiniLM-L6-v2
(agreement with sentence-transformers), both through skmoe's dense path, offline."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _texts import sib200_texts

from skmoe import capture_routing, load_encoder
from skmoe.engine import Engine
from skmoe.engine.runner import TruncationWarning

normalize = partial(F.normalize, dim=-1)  # L2 rows, as the model card does


def unit(x: np.ndarray) -> np.ndarray:
    return normalize(torch.from_numpy(x)).numpy()


def test_e5_translations_are_closer_than_unrelated_sentences(e5_path, sib200_dir):
    enc = load_encoder(e5_path, device="cpu")
    assert not enc.is_moe and enc.embedding_dim == 384
    prompt = "query: "  # e5's documented prefix (the asset ships no prompt table)
    n = 8
    en = unit(Engine(enc).embed(sib200_texts(sib200_dir, "eng_Latn", n), prompt=prompt))
    fr = unit(Engine(enc).embed(sib200_texts(sib200_dir, "fra_Latn", n), prompt=prompt))
    sims = en @ fr.T
    translation = np.diag(sims)
    unrelated = sims[~np.eye(n, dtype=bool)]
    # e5's cosines sit high overall (measured: 0.93 translations vs 0.81 unrelated)
    assert translation.mean() - unrelated.mean() > 0.08, (translation.mean(), unrelated.mean())
    assert (translation > np.median(sims, axis=1)).all()
    assert (sims.argmax(axis=1) == np.arange(n)).mean() >= 0.75  # bitext retrieval mostly right


def test_minilm_matches_sentence_transformers(minilm_path, minilm_encoder):
    from sentence_transformers import SentenceTransformer

    texts = [
        "A man is eating food.",
        "The weather is lovely today!",
        "",
        "Sentence embeddings map text to vectors; cosine similarity compares them.",
        "naïve café déjà vu",
        " ".join(["long"] * 400),  # beyond max_seq_length 256: both must truncate the same way
    ]
    st = SentenceTransformer(str(minilm_path), device="cpu")
    expected = st.encode(texts, convert_to_numpy=True, batch_size=4)
    assert np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)  # Normalize module

    enc = minilm_encoder
    assert enc.max_length == st.max_seq_length == 256 and enc.pooling == "mean"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = unit(Engine(enc, batch_size=4).embed(texts))
    assert sum(issubclass(w.category, TruncationWarning) for w in caught) == 1
    assert np.abs(ours - expected).max() < 1e-5


def test_routing_capture_needs_a_moe_model(minilm_encoder):
    enc = minilm_encoder
    assert not enc.is_moe and enc.moe_config is None
    with pytest.raises(TypeError, match="needs a Mixture-of-Experts model"):
        with capture_routing(enc):
            pass
