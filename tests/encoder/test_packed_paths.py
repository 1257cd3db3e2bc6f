"""The packed entry point and each of its paths (issue 14), on the parity fixture.

Every path (attention per run of equal lengths / padded SDPA built on the device / FlashAttention
varlen; experts as one grouped GEMM / as a loop) equals the official fp32 outputs, and in bf16
stays within cosine 0.999 of them. The meta device stands in for a GPU: there, reading a value
back to the host (``.item()``, ``.tolist()``, ``bool(t)``, ``nonzero``, ``bincount``) raises,
so a ``forward_packed`` that completes on it has no host sync.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from skmoe import load_encoder
from skmoe.encoder import nomic_moe, packing, parts
from skmoe.encoder.nomic_moe import MoE
from skmoe.encoder.packing import cu_seqlens_of, pack_padded
from skmoe.encoder.parts import ExpertKernel, ExpertWeightsSource


@pytest.fixture(scope="module")
def reference(tiny_moe_path):
    return dict(np.load(tiny_moe_path / "reference_outputs.npz"))


@pytest.fixture(scope="module")
def encoder(tiny_moe_path):
    return load_encoder(tiny_moe_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def packed(reference):
    ids = torch.from_numpy(reference["input_ids"]).long()
    mask = torch.from_numpy(reference["attention_mask"]).long()
    flat, cu, _, _ = pack_padded(ids, mask)
    real = reference["attention_mask"].astype(bool)
    return flat, cu, int(mask.sum(1).max()), reference["last_hidden_state"][real]


def run(model, packed, attention="auto"):
    flat, cu, max_len, _ = packed
    model.attention = attention
    try:
        with torch.inference_mode():
            return model.forward_packed(flat.to(model.emb_ln.weight.device), cu, max_len)
    finally:
        model.attention = "auto"


def cosines(a, b):
    a, b = a.double(), torch.as_tensor(b).double()
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def to_bf16(model):
    """The GPU mode's arithmetic: weights in bf16, routers fp32 (as apply_precision does)."""
    model = copy.deepcopy(model).to(torch.bfloat16)
    for part in model.replaceable_parts():
        if part.kind == "router":
            part.module.float()
    return model


def experts_as(kind, monkeypatch):
    """Run the experts as one grouped GEMM (what accelerators run) or as a loop over experts
    (the CPU's default), whatever this device would choose."""
    if kind == "grouped":
        assert nomic_moe.grouped_mm_supported(torch.device("cpu"), torch.float32)
    monkeypatch.setattr(nomic_moe, "grouped_experts", lambda device, dtype: kind == "grouped")


@pytest.mark.parametrize("attention", ["runs", "padded"])
@pytest.mark.parametrize("experts", ["grouped", "loop"])
def test_every_cpu_path_equals_the_official_fp32_outputs(encoder, packed, attention, experts,
                                                         monkeypatch):
    experts_as(experts, monkeypatch)
    got = run(encoder.backbone, packed, attention).numpy()
    assert np.abs(got - packed[3]).max() <= 1e-5


@pytest.mark.parametrize("attention", ["runs", "padded"])
@pytest.mark.parametrize("experts", ["grouped", "loop"])
def test_every_cpu_path_in_bf16_is_close_to_fp32(encoder, reference, packed, attention, experts,
                                                 monkeypatch):
    experts_as(experts, monkeypatch)
    got = run(to_bf16(encoder.backbone), packed, attention)
    assert got.dtype == torch.bfloat16
    pooled = encoder.pool_packed(got, packed[1], packed[2])
    assert cosines(pooled, reference["pooled_mean"]).min() >= 0.999
    # token states: a bf16 near-tie may flip one token's expert (measured: 1 of 45 tokens, cosine
    # 0.98 for that token), so the bar is on the mean
    assert cosines(got, packed[3]).mean() >= 0.999
    assert not np.array_equal(got.float().numpy(), packed[3])  # really bf16 arithmetic


def test_forward_wraps_forward_packed(encoder, reference, packed):
    ids = torch.from_numpy(reference["input_ids"]).long()
    mask = torch.from_numpy(reference["attention_mask"]).long()
    with torch.inference_mode():
        padded = encoder(ids, mask)
    assert torch.equal(padded[mask.bool()], run(encoder.backbone, packed))


def test_pool_packed_equals_pool_of_padded(encoder, reference, packed):
    ids = torch.from_numpy(reference["input_ids"]).long()
    mask = torch.from_numpy(reference["attention_mask"]).long()
    flat, cu, max_len, _ = packed
    with torch.inference_mode():
        hidden = run(encoder.backbone, packed)
        want = encoder.pool(encoder(ids, mask), mask)
        for mode in ("mean", "cls", "max"):
            got = packing_pool(hidden, cu, max_len, mode)
            ref = packing_pool_padded(encoder, ids, mask, mode)
            assert torch.allclose(got, ref, atol=1e-6, rtol=0), mode
        assert np.abs(encoder.pool_packed(hidden, cu, max_len).numpy()
                      - reference["pooled_mean"]).max() <= 1e-5
        assert torch.allclose(encoder.pool_packed(hidden, cu, max_len), want, atol=1e-6, rtol=0)


def packing_pool(hidden, cu, max_len, mode):
    from skmoe.encoder.pooling import pool_packed

    return pool_packed(hidden, cu, max_len, mode)


def packing_pool_padded(encoder, ids, mask, mode):
    from skmoe.encoder.pooling import pool

    return pool(encoder(ids, mask), mask, mode)


# -- the MoE dispatch: an expert with no token, one with every token ----------------------------


def expected_moe(moe, x, top_w, top_e):
    """Per token, in float64: bias + sum over k of w_k * expert_k(x) (spec §4.5)."""
    up, down = moe.experts.expert_weights()
    up, down, xd = up.double(), down.double(), x.double()
    out = moe.experts.bias.double().expand(len(x), -1).clone()
    for t in range(len(x)):
        for k in range(top_e.shape[1]):
            e = int(top_e[t, k])
            h = torch.nn.functional.gelu(xd[t] @ up[e].t())
            out[t] += float(top_w[t, k]) * (h @ down[e].t())
    return out


@pytest.mark.parametrize("experts", ["grouped", "loop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dispatch_with_empty_and_full_experts(encoder, experts, dtype, monkeypatch):
    experts_as(experts, monkeypatch)
    moe = next(m for m in encoder.modules() if isinstance(m, MoE))
    moe = copy.deepcopy(moe).to(dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, moe.experts.bias.shape[0], generator=gen)
    # every token picks expert 5 and one of experts 0..2: expert 5 gets every token, 3/4/6/7 none
    top_e = torch.stack([torch.full((9,), 5), torch.arange(9) % 3], 1)
    top_w = torch.rand(9, 2, generator=gen)
    want = expected_moe(moe, x.to(dtype), top_w, top_e)
    with torch.inference_mode():
        got = moe.dispatch(x.to(dtype), top_w, top_e)
    if dtype == torch.float32:
        assert (got.double() - want).abs().max() <= 1e-5
    else:
        assert cosines(got, want).min() >= 0.999


def test_combine_is_deterministic_and_row_local(encoder):
    """No atomics: a token's MoE output is the same alone, in any batch, in any order."""
    moe = next(m for m in encoder.modules() if isinstance(m, MoE))
    x = torch.randn(40, moe.experts.bias.shape[0], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = moe(x)
        again = moe(x)
        perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
        shuffled = moe(x[perm])
        alone = torch.cat([moe(x[i : i + 1]) for i in range(40)])
    assert torch.equal(full, again)  # run to run: bitwise
    # in another batch or order: the GEMMs' blocking changes with the rows, at float rounding
    assert (shuffled - full[perm]).abs().max() <= 1e-5  # measured: 1.7e-6
    assert (alone - full).abs().max() <= 1e-5


def onednn_gelu(rows):
    out = rows.clone()
    torch._C._nn.gelu(out, out=out)  # contiguous float32 on CPU: oneDNN's kernel
    return out


def torch_gelu(rows):
    return torch.nn.functional.gelu(rows.t()).t()  # a transposed view: torch's own kernel


def first_rule_gelu(rows):
    """The float paths' GELU since 2026-11-27: whole 256-row slices by oneDNN, the rest by
    torch's kernel."""
    whole = len(rows) - len(rows) % 256
    return torch.cat([onednn_gelu(rows[a : a + 256]) for a in range(0, whole, 256)]
                     + [torch_gelu(rows[whole:])])


@pytest.mark.parametrize("n", [600, 200, 256])
def test_float_gelu_slices_rows_as_the_vectors_were_first_computed(n):
    """The GELU's kernel choice decides last bits (the two kernels disagree on most elements),
    so the float paths' slicing is pinned."""
    x = torch.randn(n, 96, generator=torch.Generator().manual_seed(0)) * 3
    assert not torch.equal(onednn_gelu(x), torch_gelu(x))
    assert torch.equal(parts.gelu_(x.clone()), first_rule_gelu(x))


def test_int8_gelu_runs_only_through_onednn():
    """int8 pads its rows to GELU_ALIGN and passes it: 256-row then 64-row slices, all oneDNN
    (a row's result then does not depend on its batch-mates)."""
    x = torch.randn(448, 96, generator=torch.Generator().manual_seed(0)) * 3
    want = torch.cat([onednn_gelu(x[:256])] + [onednn_gelu(x[a : a + 64]) for a in (256, 320, 384)])
    assert torch.equal(parts.gelu_(x.clone(), parts.GELU_ALIGN), want)


def test_cpu_experts_run_each_expert_on_its_own_rows(encoder):
    """On CPU each expert's up-projection, GELU and down-projection see that expert's rows
    alone (as the engine always computed them); the grouped GEMM over all experts' rows would
    slice the GELU across experts and change last bits (checked below)."""
    moe = next(m for m in encoder.modules() if isinstance(m, MoE))
    gen = torch.Generator().manual_seed(3)
    counts = [300, 0, 70, 513, 256, 1, 129, 40]
    offsets = torch.tensor(counts).cumsum(0).to(torch.int32)
    x = torch.randn(sum(counts), moe.experts.bias.shape[0], generator=gen)
    token_of = torch.arange(sum(counts))
    up, down = moe.experts.expert_weights()
    want, start = [], 0
    for e, n in enumerate(counts):
        want.append(first_rule_gelu(x[start : start + n] @ up[e].t()) @ down[e].t())
        start += n
    with torch.inference_mode():
        got = moe.experts.grouped(x, token_of, offsets)
        assert torch.equal(got, torch.cat(want))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(nomic_moe, "grouped_experts", lambda device, dtype: True)
            grouped = moe.experts.grouped(x, token_of, offsets)
    assert not torch.equal(grouped, got) and (grouped - got).abs().max() <= 1e-5


def test_experts_keep_the_declared_contracts(encoder):
    moe = next(m for m in encoder.modules() if isinstance(m, MoE))
    assert isinstance(moe.experts, ExpertKernel) and isinstance(moe.experts, ExpertWeightsSource)
    names = {p.name: p.kind for p in encoder.backbone.replaceable_parts()}
    for name in names:
        encoder.backbone.get_submodule(name)  # every declared name resolves
    assert sorted(set(names.values())) == ["experts", "feed_forward", "projection", "router"]
    with pytest.raises(ValueError, match="router"):
        encoder.backbone.replace_part("encoder.layers.1.mlp.router.layer", torch.nn.Identity())
    with pytest.raises(KeyError):
        encoder.backbone.replace_part("encoder.layers.0.norm1", torch.nn.Identity())


# -- no host sync: the meta device --------------------------------------------------------------


def test_meta_device_really_refuses_host_reads():
    t = torch.ones(3, device="meta")
    for read in (lambda: t.sum().item(), lambda: t.tolist(), lambda: bool(t.sum()),
                 lambda: t.nonzero(), lambda: torch.bincount(t.long())):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize("attention", ["auto", "padded"])
def test_forward_packed_on_meta_in_bf16_completes(encoder, attention):
    """What a GPU runs (varlen attention where the kernel exists, grouped GEMM, device-side
    dispatch, pooling), with every host read raising: it completes, so it has no host sync."""
    model = to_bf16(encoder.backbone).to("meta")
    lengths = [12, 7, 7, 1, 10, 3]
    cu = cu_seqlens_of(lengths).to("meta")
    ids = torch.zeros(sum(lengths), dtype=torch.long, device="meta")
    assert packing.attention_backend(attention, cu.device, torch.bfloat16) == (
        "varlen" if attention == "auto" else "padded")
    model.attention = attention
    with torch.inference_mode():
        hidden = model.forward_packed(ids, cu, max(lengths))
        pooled = encoder.pool_packed(hidden, cu, max(lengths))
    assert hidden.shape == (sum(lengths), 64) and hidden.device.type == "meta"
    assert hidden.dtype == torch.bfloat16 and pooled.shape == (len(lengths), 64)


def test_varlen_kernel_asks_for_one_split_only_where_torch_has_the_option(monkeypatch):
    """torch 2.13's ``varlen_attn`` takes ``num_splits`` (1: batch-invariant); torch 2.11's does
    not, and passing it crashed the first GPU run (TypeError): there it is called as it is."""
    from torch.nn.attention import varlen

    calls = []

    def old(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None):
        calls.append("old")
        return q

    def new(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, num_splits=None):
        calls.append(num_splits)
        return q

    for fake, seen in ((old, "old"), (new, 1)):
        monkeypatch.setattr(varlen, "varlen_attn", fake)
        monkeypatch.setattr(packing, "_VARLEN_KERNEL", [])  # looked up again
        q = torch.zeros(5, 2, 4)
        cu = cu_seqlens_of([3, 2])
        assert packing._varlen_kernel()(q, q, q, cu, cu, 3, 3) is q
        assert calls[-1] == seen


def test_grouped_mm_probe_is_read_not_traced_while_compiling(monkeypatch):
    """Dynamo traced the (cached) probe into every compiled layer on the H200; while compiling
    the eager answer is read instead, and an unprobed device counts as supported in bf16."""
    cuda = torch.device("cuda", 0)  # a device object needs no GPU

    def probe(*args):
        raise AssertionError("probed while compiling")

    monkeypatch.setattr(nomic_moe, "_grouped_mm_probe", probe)
    monkeypatch.setattr(nomic_moe, "_GROUPED_MM_PROBED", {})
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert nomic_moe.grouped_mm_supported(cuda, torch.bfloat16)
    assert not nomic_moe.grouped_mm_supported(cuda, torch.float16)
    nomic_moe._GROUPED_MM_PROBED[(cuda, torch.bfloat16)] = False  # an eager probe said no
    assert not nomic_moe.grouped_mm_supported(cuda, torch.bfloat16)


def test_runs_attention_is_refused_off_the_cpu(encoder):
    model = to_bf16(encoder.backbone).to("meta")
    model.attention = "runs"
    cu = cu_seqlens_of([3, 2]).to("meta")
    with pytest.raises(ValueError, match="CPU only"):
        model.forward_packed(torch.zeros(5, dtype=torch.long, device="meta"), cu, 3)


# -- batch invariance ---------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["runs", "padded"])
def test_a_texts_vector_does_not_depend_on_its_batch_mates(encoder, attention):
    gen = torch.Generator().manual_seed(3)
    lengths = [12, 9, 9, 5, 3, 2]
    rows = [torch.randint(2, 1000, (n,), generator=gen) for n in lengths]
    model = encoder.backbone
    model.attention = attention
    try:
        with torch.inference_mode():
            cu = cu_seqlens_of(lengths)
            together = encoder.pool_packed(model.forward_packed(torch.cat(rows), cu, 12), cu, 12)
            alone = torch.cat([
                encoder.pool_packed(model.forward_packed(r, cu_seqlens_of([len(r)]), len(r)),
                                    cu_seqlens_of([len(r)]), len(r)) for r in rows])
    finally:
        model.attention = "auto"
    # fp32 on CPU: the matmuls' blocking changes with the row count, at float rounding
    assert (together - alone).abs().max() <= 1e-5


# -- torch.compile ------------------------------------------------------------------------------


def test_compiled_layers_equal_eager_with_dynamic_token_counts(encoder):
    """bf16 with the padded attention: the sync-free path a GPU compiles (the grouped GEMM's
    fake kernel takes bf16). Two batches of different token counts, one compiled graph each
    layer kind (dynamic shapes)."""
    eager = to_bf16(encoder.backbone)
    eager.attention = "padded"
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled.compile_layers(backend="aot_eager")
    gen = torch.Generator().manual_seed(4)
    try:
        for lengths in ([5, 3], [9, 7, 7, 2]):
            ids = torch.randint(2, 1000, (sum(lengths),), generator=gen)
            cu = cu_seqlens_of(lengths)
            with torch.inference_mode():
                got = compiled.forward_packed(ids, cu, max(lengths))
                want = eager.forward_packed(ids, cu, max(lengths))
            assert torch.equal(got, want)
    finally:
        torch._dynamo.reset()
