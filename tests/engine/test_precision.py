"""Precision modes: quality against fp32 on real and fixture weights, batch independence, errors.

Quality bar (issue 4): mean cosine >= 0.99 and minimum >= 0.98 to the fp32 embeddings, judged on
real weights (multilingual-e5-small through the dense path) and on the parity fixture. bfloat16
and float16 are GPU modes; here they run emulated on the CPU (``allow_slow``), which checks
their numerics, not their speed.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch
from _engine_helpers import cosines

import skmoe.engine.precision as precision_module
from skmoe.encoder import load_encoder
from skmoe.encoder.nomic_moe import MoE
from skmoe.engine import Engine
from skmoe.engine.precision import (
    DEFAULT_PRECISION,
    PRECISIONS,
    ZERO_POINT,
    Int8Experts,
    Int8Linear,
    SlowPrecisionWarning,
    apply_precision,
    cpu_has_native_bf16,
    int8_weight_bits,
    precision_of,
    quantize_rows,
    resolve_precision,
    supported_precisions,
)

LOW = ["int8", "bfloat16", "float16"]


def convert(path, mode):
    """A fresh encoder in ``mode`` (GPU modes emulated on this CPU, with their warning)."""
    enc = load_encoder(path, device="cpu", dtype="float32")
    if mode in supported_precisions("cpu"):
        return apply_precision(enc, mode)
    with pytest.warns(SlowPrecisionWarning, match="emulated") as caught:
        enc = apply_precision(enc, mode, allow_slow=True)
    assert caught[0].filename == __file__  # points at the caller's line, not at skmoe
    return enc


def fixture_embeddings(enc, tiny_moe_path):
    ref = np.load(tiny_moe_path / "reference_outputs.npz")
    ids = torch.from_numpy(ref["input_ids"]).long()
    mask = torch.from_numpy(ref["attention_mask"]).long()
    with torch.inference_mode():
        return enc.pool(enc(ids, mask), mask).numpy(), ref["pooled_mean"]


# -- quality ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", LOW)
def test_quality_on_parity_fixture(tiny_moe_path, mode):
    fp32, official = fixture_embeddings(load_encoder(tiny_moe_path, device="cpu"), tiny_moe_path)
    assert np.abs(fp32 - official).max() < 1e-5  # our fp32 is the official model
    low, _ = fixture_embeddings(convert(tiny_moe_path, mode), tiny_moe_path)
    cos = cosines(low, fp32)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, (mode, cos)
    assert not np.array_equal(low, fp32)  # the mode really changed the arithmetic


@pytest.fixture(scope="module")
def e5_fp32(e5_path, sib_texts):
    return Engine(load_encoder(e5_path, device="cpu")).embed(sib_texts, "query: ")


@pytest.mark.parametrize("mode", LOW)
def test_quality_on_real_small_model(e5_path, sib_texts, e5_fp32, mode):
    # bf16/fp16 are emulated on this CPU (slow): 16 of the 64 texts, every script kept.
    n = 64 if mode == "int8" else 16
    low = Engine(convert(e5_path, mode)).embed(sib_texts[:n], "query: ")
    cos = cosines(low, e5_fp32[:n])
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, (mode, cos.mean(), cos.min())
    assert cos.min() < 1.0 - 1e-7


# -- batch independence -------------------------------------------------------------------------

# Max-abs difference allowed between a text embedded alone and inside a batch of 64 mixed-length
# texts. int8 is exact by construction (per-row scales, exact integer matmuls, attention per row
# length); fp32 differs only by the matmul blocking; bf16/fp16 round each matmul output, so a
# different accumulation order moves a value by up to one bf16/fp16 unit.
ALONE_TOL = {"float32": 1e-5, "int8": 0.0, "int4": 0.0, "bfloat16": 5e-3, "float16": 1e-3}


@pytest.mark.parametrize("mode", PRECISIONS)
def test_row_alone_equals_row_in_batch_moe(random_moe_xlmr_path, sib_texts, mode):
    enc = convert(random_moe_xlmr_path, mode)
    together = Engine(enc, batch_size=64, max_tokens_per_batch=10**6).embed(sib_texts)
    lengths = [len(r) for r in enc.tokenize(sib_texts)[0]]
    assert len(set(lengths)) >= 15  # really mixed lengths in one batch
    alone = np.stack([Engine(enc).embed([t])[0] for t in sib_texts])
    assert np.abs(alone - together).max() <= ALONE_TOL[mode], np.abs(alone - together).max()


def test_row_alone_equals_row_in_batch_dense_int8(e5_path, sib_texts):
    enc = convert(e5_path, "int8")
    texts = sib_texts[:32]
    together = Engine(enc, batch_size=64).embed(texts, "query: ")
    alone = np.stack([Engine(enc).embed([t], "query: ")[0] for t in texts])
    assert np.array_equal(alone, together)


def test_int8_linear_rows_do_not_see_their_batch_mates():
    torch.manual_seed(0)
    lin = Int8Linear(torch.nn.Linear(96, 40), bits=int8_weight_bits())
    x = torch.randn(200, 96) * torch.logspace(-2, 2, 200)[:, None]  # very different row scales
    with torch.inference_mode():
        batch = lin(x)
        alone = torch.cat([lin(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(batch, alone)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_stock_dynamic_quantization_does_depend_on_batch_mates():
    """The contrast that motivates per-row scales (one activation scale per batch)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40)
    q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear})
    x = torch.randn(64, 96)
    x[0] *= 50  # one loud batch-mate coarsens everybody's scale
    with torch.inference_mode():
        diff = (q(x)[1:] - torch.cat([q(x[i : i + 1]) for i in range(1, 64)])).abs().max()
    assert diff > 1e-2


def test_quantize_rows_round_trip():
    x = torch.randn(50, 300) * torch.rand(50, 1) * 10
    x[3] = 0.0
    q, s = quantize_rows(x, pad_to=16)
    assert q.dtype == torch.uint8 and q.shape == (64, 300)
    values = q.int() - ZERO_POINT  # stored offset by the zero point
    assert values.abs().max() == 127  # each row's largest magnitude uses the full range
    err = (values[:50].float() * s - x).abs()
    assert (err <= s / 2 + 1e-5 * s).all()
    assert (values[3] == 0).all() and s[3].item() == 1.0
    assert (values[50:] == 0).all()  # padding rows hold the value 0


def test_int8_kernel_is_exact_with_the_chosen_weight_width():
    from skmoe.engine.precision import _int8_mm, _pack

    bits = int8_weight_bits()
    qmax = 2 ** (bits - 1) - 1
    gen = torch.Generator().manual_seed(1)
    w = torch.randint(-qmax, qmax + 1, (48, 256), dtype=torch.int8, generator=gen)
    for x in (torch.randint(0, 256, (37, 256), dtype=torch.uint8, generator=gen),
              torch.where(w[:37] > 0, 255, 0).to(torch.uint8)):  # the int16-saturating worst case
        got = _int8_mm(x, _pack(w), torch.ones(48)).double()
        assert torch.equal(got, (x.double() - ZERO_POINT) @ w.double().t())


# -- what each mode converts -------------------------------------------------------------------


def test_int8_conversion_keeps_router_embeddings_and_norms_fp32(tiny_moe_path):
    enc = convert(tiny_moe_path, "int8")
    assert precision_of(enc) == "int8"
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.out_features == enc.moe_config.num_experts for m in linears)  # routers
    assert sum(isinstance(m, Int8Linear) for m in enc.modules()) == 4 * 2 + 2 * 2  # attn + dense MLPs
    assert all(isinstance(m.experts, Int8Experts) for m in enc.modules() if isinstance(m, MoE))
    assert enc.backbone.embeddings.word_embeddings.weight.dtype == torch.float32
    assert enc.backbone.emb_ln.weight.dtype == torch.float32


def test_int8_swaps_only_the_parts_the_model_declares(tiny_moe_path, monkeypatch):
    """int8 goes through ``replaceable_parts``/``replace_part`` (skmoe.encoder.parts), never
    through the model's private classes: every declared part but the routers is replaced."""
    enc = load_encoder(tiny_moe_path, device="cpu", dtype="float32")
    backbone = enc.backbone
    declared = {p.name: p.kind for p in backbone.replaceable_parts()}
    replaced = []
    real = type(backbone).replace_part
    monkeypatch.setattr(type(backbone), "replace_part",
                        lambda self, name, module: replaced.append(name) or real(self, name, module))
    apply_precision(enc, "int8")
    assert sorted(replaced) == sorted(n for n, k in declared.items() if k != "router")
    assert enc.precision == "int8"

    assert "nomic_moe" not in open(precision_module.__file__).read()


@pytest.mark.parametrize("mode", ["bfloat16", "float16"])
def test_half_modes_keep_router_in_fp32(tiny_moe_path, mode):
    enc = convert(tiny_moe_path, mode)
    moes = [m for m in enc.modules() if isinstance(m, MoE)]
    assert all(m.router.layer.weight.dtype == torch.float32 for m in moes)
    assert enc.backbone.encoder.layers[0].attn.Wqkv.weight.dtype == getattr(torch, mode)
    vectors = Engine(enc).embed_ids([[0, 5, 9, 2], [0, 7, 2]])
    assert vectors.dtype == np.float32  # pooled in fp32


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is refused on this CPU")
def test_load_encoder_by_mode_name_is_the_estimators_road(tiny_moe_path):
    """skmoe.load_encoder(dtype="bfloat16") cast every weight, routers too (the docs keep them
    fp32 in every mode), left the mode unrecorded and gave other vectors than the estimator's
    bfloat16 (max diff 0.004)."""
    import skmoe
    from skmoe import MoEEmbeddingTransformer

    enc = skmoe.load_encoder(tiny_moe_path, device="cpu", dtype="bfloat16")
    assert precision_of(enc) == "bfloat16" and enc.precision == "bfloat16"
    moes = [m for m in enc.modules() if isinstance(m, MoE)]
    assert all(m.router.layer.weight.dtype == torch.float32 for m in moes)
    ids = [[0, 5, 9, 2], [0, 7, 2]]
    est = MoEEmbeddingTransformer(tiny_moe_path, device="cpu", dtype="bfloat16")
    np.testing.assert_array_equal(Engine(enc).embed_ids(ids), Engine(est.get_encoder()).embed_ids(ids))
    with pytest.raises(ValueError, match="'float16' is not available on cpu"):
        skmoe.load_encoder(tiny_moe_path, device="cpu", dtype="half")  # as the estimator says


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_encoder_loader_casts_like_the_mode(tiny_moe_path, dtype):
    """skmoe.encoder.load_encoder(dtype="bfloat16") cast the routers too, while the mode keeps
    them float32; both had one cache namespace, so one loader's rows were served to the other
    (299 of 400 rows differed on a tiny model)."""
    from skmoe.encoder import load_encoder as load_cast
    from skmoe.engine.precision import precision_label

    cast = load_cast(tiny_moe_path, device="cpu", dtype=dtype)
    mode = apply_precision(load_cast(tiny_moe_path, device="cpu", dtype="float32"), dtype,
                           allow_slow=True)
    assert precision_label(cast) == precision_label(mode) == dtype
    routers = [m.router.layer for m in cast.modules() if isinstance(m, MoE)]
    assert routers and all(r.weight.dtype == torch.float32 for r in routers)
    a, b = cast.state_dict(), mode.state_dict()
    assert a.keys() == b.keys()
    for key in a:  # the same tensors, bit for bit
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# -- choosing and refusing modes ----------------------------------------------------------------


def test_defaults_per_device():
    assert DEFAULT_PRECISION("cpu") == "float32"
    assert DEFAULT_PRECISION(torch.device("cuda")) == "bfloat16"
    assert DEFAULT_PRECISION("cuda:1") == "bfloat16"
    assert resolve_precision(None, "cpu") == "float32"
    assert resolve_precision("auto", "cuda") == "bfloat16"
    assert resolve_precision("BF16", "cpu") == "bfloat16"


def test_unknown_mode_names_the_supported_ones(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu")
    with pytest.raises(ValueError, match="float32, bfloat16, float16, int8, int4"):
        apply_precision(enc, "int3")


def test_float16_on_cpu_is_refused(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu")
    with pytest.raises(ValueError, match=r"'float16' is not available on cpu; supported here: float32"):
        apply_precision(enc, "float16")
    assert precision_of(enc) == "float32"  # untouched


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU runs bf16 natively")
def test_bfloat16_on_cpu_without_native_bf16_is_refused(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu")
    with pytest.raises(ValueError, match="avx512_bf16/AMX"):
        apply_precision(enc, "bfloat16")


@pytest.mark.parametrize("var", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_bfloat16_refused_where_onednn_is_capped_below_bf16(tiny_moe_path, monkeypatch, var):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert cpu_has_native_bf16()
    monkeypatch.setenv(var, "avx512_core_bf16")  # at the bf16 level: still native
    assert cpu_has_native_bf16()
    monkeypatch.setenv(var, "avx2")
    assert not cpu_has_native_bf16()
    enc = load_encoder(tiny_moe_path, device="cpu")
    with pytest.raises(ValueError, match="ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN below"):
        apply_precision(enc, "bfloat16")


def test_supported_precisions_on_gpu_exclude_int8(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert supported_precisions("cuda") == ("float32", "bfloat16", "float16")
    assert "int8" in supported_precisions("cpu")


def test_int8_refused_on_gpu(tiny_moe_path, monkeypatch):
    enc = load_encoder(tiny_moe_path, device="cpu")
    monkeypatch.setattr(type(enc), "device", property(lambda self: torch.device("cuda")))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with pytest.raises(ValueError, match=r"'int8' is not available on cuda; supported here: "
                                         r"float32, bfloat16, float16"):
        apply_precision(enc, "int8")


def test_int8_is_in_place_and_irreversible(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu")
    assert apply_precision(enc, "int8") is enc
    assert apply_precision(enc, "int8") is enc  # same mode again: no-op
    with pytest.raises(ValueError, match="Load the model again"):
        apply_precision(enc, "float32")


def test_float32_is_a_no_op(tiny_moe_path):
    enc = load_encoder(tiny_moe_path, device="cpu")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    apply_precision(enc, "float32")
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps")
def test_int8_conversion_hands_back_the_checkpoint_pages_it_replaced(tmp_path, monkeypatch):
    from _moe_factory import make_random_moe
    from test_memory import mapped_rss

    from skmoe.engine import precision

    folder = make_random_moe(tmp_path / "m", n_embd=128, n_inner=512)
    weights = folder / "model.safetensors"

    def resident_after_int8():
        enc = apply_precision(load_encoder(folder, device="cpu", dtype="float32"), "int8")
        return enc, mapped_rss(weights)

    with monkeypatch.context() as m:
        m.setattr(precision, "release_file_pages", lambda tensors: 0)
        enc, kept = resident_after_int8()
        replaced = sum(p.nbytes for n, p in load_encoder(folder).backbone.named_parameters()
                       if "embeddings" not in n and "router" not in n and p.dim() >= 2)
        del enc
        gc.collect()  # unmaps this copy of the file
    enc, released = resident_after_int8()
    assert replaced > 8 * 2**20
    assert kept - released > 0.8 * replaced, (kept, released, replaced)
    reference = load_encoder(folder, device="cpu", dtype="float32")
    x = torch.randint(5, 1000, (3, 9))
    mask = torch.ones_like(x)
    with torch.inference_mode():
        got, want = enc.pool(enc(x, mask), mask), reference.pool(reference(x, mask), mask)
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.99  # still computes right
