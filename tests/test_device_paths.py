"""What users run, on every device this machine has: CPU here and in CI, and CUDA where a GPU is
present (the first GPU run found a crash no CPU test could: a torch-version-dependent keyword of
the varlen attention kernel). Each path runs the tiny random MoE with the real XLM-R vocabulary in
the device's default precision and is compared with CPU fp32.

On a GPU machine (see benchmarks/gpu_inputs/README.md for carrying the built tokenizer):
``SKMOE_TEST_ASSETS=DIR python -m pytest -q tests/test_device_paths.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skmoe import LearnedPooling, MoEEmbeddingTransformer
from skmoe.cli import main
from skmoe.evaluation import routing_stats
from skmoe.postprocessing import cosine_rows as cosines
from skmoe.similarity import PairFeatures

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TEXTS = ["The cat sits on the mat.", "Die Katze sitzt auf der Matte.", "猫がマットの上に座っている。",
         "Кошка сидит на коврике.", "Le chat est assis sur le tapis.", "القطة تجلس على السجادة.",
         "A dog runs in the park.", "Un perro corre en el parque."] * 3
LABELS = ["cat", "cat", "cat", "cat", "cat", "cat", "dog", "dog"] * 3


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def reference(random_moe_xlmr_path) -> np.ndarray:
    return MoEEmbeddingTransformer(str(random_moe_xlmr_path), device="cpu", dtype="float32",
                                   center=False, normalize="l2").fit_transform(TEXTS)


def test_transform_with_a_cache_matches_cpu_fp32(device, random_moe_xlmr_path, reference,
                                                 tmp_path):
    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device=device, center=False,
                                  normalize="l2", cache=str(tmp_path / "c.sqlite"))
    first = est.fit_transform(TEXTS)
    assert cosines(first, reference).min() > 0.99
    np.testing.assert_array_equal(est.transform(TEXTS), first)  # from the cache


def test_long_texts_in_windows(device, random_moe_xlmr_path):
    long = [" ".join(TEXTS) * 4, TEXTS[0]]
    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device=device, long_text="chunk",
                                  max_length=32, chunk_overlap=8, center=False)
    ref = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device="cpu", dtype="float32",
                                  long_text="chunk", max_length=32, chunk_overlap=8, center=False)
    assert cosines(est.fit_transform(long), ref.fit_transform(long)).min() > 0.99


def test_learned_pooling_fits_and_transforms(device, random_moe_xlmr_path):
    lp = LearnedPooling(str(random_moe_xlmr_path), device=device, max_iter=3, random_state=0)
    out = lp.fit(TEXTS, LABELS).transform(TEXTS)
    assert out.shape[0] == len(TEXTS) and np.isfinite(out).all()


def test_routing_statistics(device, random_moe_xlmr_path):
    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device=device)
    stats = routing_stats(est, TEXTS, LABELS, prompt="")
    shares = stats.experts.groupby(["layer", "group"])["share"].sum()
    np.testing.assert_allclose(shares.to_numpy(), 1.0, atol=1e-6)


def test_pair_features(device, random_moe_xlmr_path):
    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device=device)
    pairs = list(zip(TEXTS[:8], TEXTS[8:16], strict=True))
    features = PairFeatures(est).fit_transform(pairs)
    assert features.shape[0] == 8 and np.isfinite(features).all()


def test_skmoe_embed_writes_a_file(device, random_moe_xlmr_path, reference, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    assert main(["embed", str(src), "-o", str(out), "--model", str(random_moe_xlmr_path),
                 "--device", device, "--no-cache", "--normalize", "l2"]) == 0
    assert cosines(np.load(out), reference).min() > 0.99


@pytest.mark.parametrize("dtype", ["int8wo", "fp8"])
def test_torchao_modes_through_the_estimator(device, dtype, random_moe_xlmr_path, reference):
    """On CUDA with torchao (and, for fp8, compute capability >= 8.9) the GPU quantized modes
    run through ``transform``; everywhere else they are refused with the reason."""
    from skmoe.engine.precision import refusal

    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device=device, dtype=dtype,
                                  center=False, normalize="l2")
    why = refusal(dtype, torch.device(device))
    if why is not None:
        with pytest.raises(ValueError, match=f"'{dtype}' is not available on {device}"):
            est.fit_transform(TEXTS)
        return
    assert cosines(est.fit_transform(TEXTS), reference).min() > 0.98


def test_compile_on_gpus_and_refused_on_cpu(device, random_moe_xlmr_path, reference):
    est = MoEEmbeddingTransformer(str(random_moe_xlmr_path), device=device, compile=True,
                                  center=False, normalize="l2")
    if device == "cpu":
        with pytest.raises(ValueError, match="compile=True is for GPUs"):
            est.fit_transform(TEXTS)
        return
    assert cosines(est.fit_transform(TEXTS), reference).min() > 0.99
