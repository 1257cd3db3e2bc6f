"""benchmarks/routing_precision.py: its router variants, and a run of its main on the tiny model
with 8 sentences (so the script cannot rot)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skmoe.engine import Engine

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "routing_precision.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("routing_precision", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_router_variants_approximate_fp32(bench):
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 768, generator=gen), torch.randn(8, 768, generator=gen) * 0.02
    exact = x.double() @ w.double().t()
    assert torch.equal(bench.router_logits(x, w, "fp32"), x @ w.t())
    errors = {v: float((bench.router_logits(x, w, v).double() - exact).abs().max())
              for v in bench.VARIANTS}
    scale = float(exact.abs().max())
    assert all(0 < e < 0.05 * scale for e in errors.values()), errors  # rounded, not broken
    assert errors["fp16"] < errors["bf16"]  # 10 vs 7 mantissa bits
    with pytest.raises(ValueError, match="unknown router variant"):
        bench.router_logits(x, w, "int4")


def test_changed_sets_ignores_order(bench):
    a = torch.tensor([[1, 2], [3, 4], [5, 6]])
    b = torch.tensor([[2, 1], [3, 5], [5, 6]])
    assert bench.changed_sets(a, b).tolist() == [False, True, False]


def test_fp32_patch_reproduces_the_model(bench, xlmr_tokenizer_path, sib200_dir):
    """The script's copy of the routing (after the logits) must stay MoE.route's: with fp32
    logits the patched model gives the unpatched model's vectors bit for bit."""
    config, overrides, scales = bench.MODELS["tiny-sharp"]
    enc = bench.build_encoder(config, overrides, scales, xlmr_tokenizer_path)
    texts = bench.sib200_corpus(sib200_dir, 6, split="test")
    plain = Engine(enc).embed(texts)
    sink: list = []
    with bench.patched_routers(enc, "fp32", sink, ["bf16"]):
        patched = Engine(enc).embed(texts)
    assert np.array_equal(plain, patched) and sink and set(sink[0]) == {"fp32", "bf16"}
    assert np.array_equal(Engine(enc).embed(texts), plain)  # the patch is gone afterwards


def test_main_runs_on_the_tiny_model(bench, tmp_path, xlmr_tokenizer_path, sib200_dir, capsys):
    out = tmp_path / "routing.json"
    results = bench.main(["--out", str(out), "--n", "8", "--models", "tiny",
                          "--tokenizer", str(xlmr_tokenizer_path), "--sib200", str(sib200_dir)])
    assert json.loads(out.read_text()) == results
    rows = results["models"]["tiny"]["rows"]
    assert [r["variant"] for r in rows] == list(bench.VARIANTS)
    for r in rows:
        assert r["decisions"] > 8 * 2  # every token of 8 texts in each of the 2 MoE layers
        for key in ("top2_changed", "top1_changed", "top2_changed_end_to_end"):
            assert 0.0 <= r[key] <= 1.0
        assert -1.0 <= r["cosine_min"] <= r["cosine_mean"] <= 1.0 + 1e-9
    assert "| tiny | bf16 |" in capsys.readouterr().out
