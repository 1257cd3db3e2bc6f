"""The GPU quantized modes int8wo and fp8 (torchao): named, refused clearly off CUDA, and (where
torchao imports) the int8 weight-only conversion path run on CPU. Nothing here runs on a GPU."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from skmoe import registry
from skmoe.cli import build_parser, main
from skmoe.encoder import load_encoder
from skmoe.engine import Engine
from skmoe.engine import torchao_modes as tm
from skmoe.engine.precision import (
    ALL_PRECISIONS,
    apply_precision,
    check_gpu_mode,
    precision_label,
    precision_of,
    resolve_precision,
    supported_precisions,
    to_torchao,
)

HAS_TORCHAO = tm.torchao_available()


def test_names_and_aliases_resolve():
    assert {"int8wo", "fp8"} <= set(ALL_PRECISIONS)
    for alias, mode in [("int8-weight-only", "int8wo"), ("INT8WO", "int8wo"), ("float8", "fp8"),
                        ("fp8", "fp8")]:
        assert resolve_precision(alias, "cuda") == mode
    with pytest.raises(ValueError, match="int8wo, fp8"):
        resolve_precision("int2", "cpu")


def test_cache_labels_are_distinct():
    labels = {precision_label(m) for m in ALL_PRECISIONS}
    assert len(labels) == len(ALL_PRECISIONS)
    assert precision_label("fp8").startswith("fp8/torchao")
    assert precision_label("int8wo").startswith("int8wo/torchao")


@pytest.mark.parametrize("mode, fragment", [
    ("fp8", "fp8 needs a CUDA GPU with compute capability >= 8.9"),
    ("int8wo", "int8wo (torchao int8 weight-only) is a CUDA mode; on cpu use int8"),
])
def test_refused_on_cpu_naming_the_problem(tiny_moe_path, mode, fragment):
    enc = load_encoder(tiny_moe_path, device="cpu")
    with pytest.raises(ValueError, match=rf"'{mode}' is not available on cpu: ") as info:
        apply_precision(enc, mode)
    assert fragment in str(info.value)
    assert precision_of(enc) == "float32"  # untouched
    assert mode not in supported_precisions("cpu")


def test_refused_on_meta():
    with pytest.raises(ValueError, match="on meta use int8 or int4"):
        check_gpu_mode("fp8", "meta")


def test_missing_torchao_names_the_install(monkeypatch):
    tm.torchao_import_error.cache_clear()
    for name in ("torchao", "torchao.quantization"):  # importing them fails
        monkeypatch.setitem(sys.modules, name, None)
    try:
        assert not tm.torchao_available()
        why = tm.refusal("int8wo", "cuda")
        assert "pip install 'skmoe[torchao]'" in why and "torchao>=" in why
    finally:
        tm.torchao_import_error.cache_clear()


def test_fp8_needs_compute_capability_89(monkeypatch):
    if not HAS_TORCHAO:
        pytest.skip("torchao not installed: the capability check comes after the install check")
    monkeypatch.setattr(tm, "cuda_capability", lambda device: (8, 0))  # an A100
    why = tm.refusal("fp8", "cuda")
    assert "compute capability >= 8.9" in why and "8.0" in why
    assert tm.refusal("int8wo", "cuda") is None
    assert tm.torchao_modes_on("cuda") == ("int8wo",)
    monkeypatch.setattr(tm, "cuda_capability", lambda device: (9, 0))  # an H100/H200
    assert tm.refusal("fp8", "cuda") is None
    assert tm.torchao_modes_on("cuda") == ("int8wo", "fp8")
    assert tm.torchao_modes_on("cpu") == ()


def test_registry_refuses_before_loading(fast_moe):
    before = sum(registry.LOAD_COUNTS.values())
    with pytest.raises(ValueError, match="fp8 needs a CUDA GPU"):
        registry.get_encoder(fast_moe, device="cpu", precision="fp8")
    assert sum(registry.LOAD_COUNTS.values()) == before


def test_cli_accepts_the_names_and_refuses_them_on_cpu(capsys, tmp_path, random_moe_xlmr_path):
    for mode in ("int8wo", "fp8"):
        args = build_parser().parse_args(["embed", "in.txt", "-o", "o.npy", "--dtype", mode])
        assert args.dtype == mode
    (tmp_path / "in.txt").write_text("hello\nworld\n")
    code = main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "--model",
                 str(random_moe_xlmr_path), "--no-cache", "--device", "cpu", "--dtype", "fp8"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "fp8 needs a CUDA GPU with compute capability >= 8.9" in err
    assert "Traceback" not in err and not (tmp_path / "o.npy").exists()


# -- the conversion path, on CPU where torchao allows it (int8 weight-only has a CPU fallback) --

needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason=f"torchao not importable: "
                                                           f"{tm.torchao_import_error()}")


@needs_torchao
def test_int8wo_quantize_path_on_a_plain_linear():
    torch.manual_seed(0)
    part = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64)).to(torch.bfloat16)
    x = torch.randn(7, 64, dtype=torch.bfloat16)
    ref = part(x).float()
    assert tm.quantize_linears([part], "int8wo") == 2
    assert type(part[0].weight).__name__ == "Int8Tensor"  # torchao 0.18's int8 weight tensor
    with torch.inference_mode():
        got = part(x).float()
        alone = part(x[:1]).float()
    assert not torch.equal(got, ref)  # really quantized
    assert torch.nn.functional.cosine_similarity(got, ref).min() > 0.99
    assert torch.equal(alone[0], got[0])  # weight-only: a row's result ignores its batch-mates


@needs_torchao
def test_int8wo_whole_model_on_cpu(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu", dtype="float32")
    ids = [[0, 5, 9, 2], [0, 7, 11, 13, 17, 19, 2]]
    ref = Engine(enc).embed_ids(ids)
    enc = load_encoder(tiny_moe_path, device="cpu", dtype="float32")
    assert to_torchao(enc, "int8wo") is enc
    assert precision_of(enc) == "int8wo" and enc.precision_detail == precision_label("int8wo")
    parts = enc.backbone.replaceable_parts()
    kinds = {p.kind: p.module for p in parts}
    router = kinds["router"]
    assert router.weight.dtype == torch.float32 and type(router.weight) is nn.Parameter
    projection = next(p.module for p in parts if p.kind == "projection")
    assert type(projection.weight).__name__ == "Int8Tensor"
    got = Engine(enc).embed_ids(ids)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert not np.array_equal(got, ref) and cos.min() > 0.98, cos
    with pytest.raises(ValueError, match="Load the model again"):
        apply_precision(enc, "float32")


def test_large_tensors_are_converted_on_their_own_device():
    """bf16 conversion (also the first step of int8wo/fp8) slices big CPU tables to hand mapped
    pages back; a big table on another device (GPU; meta here) must stay there."""
    from skmoe.engine.precision import _RELEASE_EVERY, _converted

    table = torch.empty(_RELEASE_EVERY // 4 // 4096 + 8, 1024, device="meta")  # > the slice limit
    got = _converted(table, torch.bfloat16)
    assert got.device.type == "meta" and got.dtype == torch.bfloat16 and got.shape == table.shape
