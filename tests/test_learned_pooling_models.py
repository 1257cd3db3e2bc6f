"""Which models LearnedPooling takes: those whose vectors are the mean of their token states.

LearnedPooling replaces mean pooling; a model that pools otherwise (CLS, max) or has a
sentence-transformers Dense module after pooling is refused by name, and a Normalize module is
applied, so that untrained it gives the model's own vectors (docs/api/learned-pooling.md).
The folders are the tiny random MoE with rewritten module files (weights linked, not copied).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_learned_pooling import keyword_task

from skmoe import LearnedPooling, MoEEmbeddingTransformer
from skmoe import token_states as ts

MODULE_TYPES = {"Transformer": "sentence_transformers.models.Transformer",
                "Pooling": "sentence_transformers.models.Pooling",
                "Dense": "sentence_transformers.models.Dense",
                "Normalize": "sentence_transformers.models.Normalize"}


def model_variant(src: Path, dst: Path, *, pooling: str = "mean",
                  head: tuple[str, ...] = ()) -> Path:
    """``src`` with ``pooling`` and the head modules ``head`` ("Dense": 64->32 Tanh)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "modules.json":
            (dst / f.name).symlink_to(f.resolve())
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode": pooling}))
    modules = [("Transformer", ""), ("Pooling", "1_Pooling")]
    for i, kind in enumerate(head, start=2):
        path = f"{i}_{kind}"
        modules.append((kind, path))
        if kind == "Dense":
            (dst / path).mkdir()
            (dst / path / "config.json").write_text(json.dumps({
                "in_features": 64, "out_features": 32, "bias": True,
                "activation_function": "torch.nn.modules.activation.Tanh"}))
            gen = torch.Generator().manual_seed(0)
            save_file({"linear.weight": torch.randn(32, 64, generator=gen) * 0.2,
                       "linear.bias": torch.randn(32, generator=gen) * 0.2},
                      str(dst / path / "model.safetensors"))
    (dst / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": path, "type": MODULE_TYPES[kind]}
         for i, (kind, path) in enumerate(modules)]))
    return dst


@pytest.mark.parametrize(("pooling", "head", "named"), [
    ("cls", (), r"cls pooling; pooled by LearnedPooling they would not be the model's vectors\."),
    ("max", ("Normalize",), r"max pooling -> Normalize"),
    ("mean", ("Dense",), r"mean pooling -> Dense 64->32 Tanh; .* \(nor its width\)"),
    ("mean", ("Dense", "Normalize"), r"mean pooling -> Dense 64->32 Tanh -> Normalize"),
], ids=["cls", "max+Normalize", "Dense", "Dense+Normalize"])
def test_a_model_that_does_not_mean_pool_is_refused(fast_moe, tmp_path, pooling, head, named):
    """Audit 8, D3: LearnedPooling pooled every model by the mean of its token states, hidden_size
    wide: for a CLS-pooling model (cosine 0.86 to the model's own vectors) or one with a Dense
    module (width 384 where the model gives 128) it gave other vectors, without a word."""
    folder = model_variant(fast_moe, tmp_path / "variant", pooling=pooling, head=head)
    texts, y = keyword_task(20, seed=13)
    computed = ts.STATS["texts"]
    with pytest.raises(ValueError, match=r"LearnedPooling replaces the mean pooling") as info:
        LearnedPooling(folder, max_iter=0, verbose=0).fit(texts, y)
    assert info.match(named)
    assert info.match("Use MoEEmbeddingTransformer for this model")
    assert ts.STATS["texts"] == computed  # refused before any token state was computed


def test_a_normalize_module_is_applied_as_the_model_applies_it(fast_moe, tmp_path):
    """Audit 8, D3: the model's Normalize module was skipped, so raw vectors (normalize=False,
    center=False) were not the model's unit vectors."""
    folder = model_variant(fast_moe, tmp_path / "normalized", head=("Normalize",))
    texts, y = keyword_task(20, seed=14)
    params = dict(normalize=False, center=False, verbose=0)
    pooled = LearnedPooling(folder, max_iter=0, **params).fit(texts, y)
    want = MoEEmbeddingTransformer(folder, **params).fit(texts).transform(texts)
    np.testing.assert_allclose(pooled.transform(texts), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(pooled.transform(texts), axis=1), 1.0, atol=1e-5)
