"""benchmarks/gpu_bench.py runs end to end in its dry-run mode on the CPU (tiny config, synthetic
corpus), so that a session with a GPU can run it in one call."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _engine_helpers import load_benchmark

from skmoe.engine.torchao_modes import torchao_available


def load_bench():
    return load_benchmark("gpu_bench")


def test_sampling_draws_every_language_equally_with_replacement():
    bench = load_bench()
    corpus = bench.synthetic_inputs(n_per_lang=3, langs=32)
    texts, ids = bench.sample_by_language(corpus, 320)
    assert len(texts) == len(ids) == 320
    index = {tuple(r): i for i, r in enumerate(corpus["ids"])}
    langs = [corpus["langs"][index[tuple(r)]] for r in ids]
    assert set(np.unique(langs, return_counts=True)[1]) == {10}  # 32 languages x 10
    assert len({tuple(r) for r in ids}) < 320  # drawn with replacement


@pytest.mark.slow  # about 30 s on a loaded 2-core machine
def test_dry_run_on_cpu_writes_the_table(tmp_path, xlmr_tokenizer_path):
    bench = load_bench()
    lines = bench.main(["--device", "cpu", "--dry-run", "--texts", "24", "--standard-texts", "8",
                        "--out", str(tmp_path), "--workdir", str(tmp_path / "work"),
                        "--tokenizer-dir", str(xlmr_tokenizer_path)])
    table = "\n".join(lines)
    assert "standard path bf16 (our re-implementation" in table
    assert "ours bfloat16 (packed)" in table and "Attention kernel:" in table
    assert "Batch invariance" in table and "Top ops" in table
    assert "Texts -> vectors, bf16, tokenizing included" in table  # the road rows ran
    assert "first chunk small (as it is)" in table and "first chunk full-size" in table
    assert "torch.compile row skipped (--compile auto on cpu)" in table
    assert "fp8 (torchao) skipped: fp8 needs a CUDA GPU" in table and "FAILED" not in table
    partial = json.loads((tmp_path / "gpu_partial.json").read_text())  # kept as rows come
    assert len(partial["rows"]) >= 4 and any("Texts -> vectors" in e for e in partial["extras"])
    result = json.loads((tmp_path / "gpu_results.json").read_text())
    # fp32 reference, standard path, bf16, fp16, and int8wo's conversion path where torchao imports
    assert [r["texts"] for r in result["rows"]] == [8, 8, 24, 24] + [24] * torchao_available()
    assert all(r["cos_min"] > 0.99 for r in result["rows"])
    if torchao_available():
        assert "ours int8wo (torchao, experts bf16; CPU conversion path, dry run)" in table
    else:
        assert "int8wo (torchao) skipped: int8wo (torchao int8 weight-only) is a CUDA mode" in table


@pytest.mark.slow
def test_past_the_time_budget_the_optional_sections_are_skipped_and_said(tmp_path):
    lines = load_bench().main(["--device", "cpu", "--dry-run", "--texts", "16",
                               "--standard-texts", "8", "--budget-s", "0", "--no-append",
                               "--out", str(tmp_path), "--workdir", str(tmp_path / "work")])
    table = "\n".join(lines)
    assert "ours bfloat16 (packed)" in table  # the main rows always run
    assert "torchao rows skipped:" in table and "past --budget-s 0" in table
    assert "Texts -> vectors rows skipped:" in table
