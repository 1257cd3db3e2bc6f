"""The int4 precision mode on CPU: weight-only int4 with group-wise scales, int8 embedding rows.

What is replaced (through the model's declared parts, :mod:`skmoe.encoder.parts`, or every
``nn.Linear`` of a backbone that declares none):

- every projection, dense MLP and expert matmul: weights as 4-bit integers ``q`` in ``[0, 15]``
  with, per output channel and per group of ``group_size`` consecutive input channels, a scale
  and an offset: ``w ~= (q - 8) * scale + zero`` (asymmetric: the group's min and max are exact
  up to rounding). The matmul is torch's packed int4 CPU kernel
  ``aten._weight_int4pack_mm_for_cpu`` with bfloat16 activations and bfloat16 scales; biases,
  GELU and the residual stream stay float32. Measured against fp32 GEMM, oneDNN int8 and
  "dequantise a tile then GEMM" in docs/performance.md.
- the word-embedding table: int8 rows with one fp32 scale per row (gather, then dequantise;
  :mod:`skmoe.engine.row_embedding`).

The router, LayerNorms, attention scores, rotary and pooling stay float32. The kernel computes
each row from that row alone (checked: a row alone equals the row in a batch, bit for bit), so a
text's vector does not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder.pages import trim_heap
from ..encoder.parts import ExpertWeightsSource, Part
from .int8 import _bias, _blank, _built, _sub
from .memory import release_file_pages
from .row_embedding import Int8RowEmbedding, word_embeddings

#: Input channels sharing one scale/offset. 32 is the kernel's smallest group (most accurate);
#: the kernel accepts 32, 64, 128 and 256.
INT4_GROUP_SIZE = 32
INT4_GROUP_SIZES = (32, 64, 128, 256)
#: How each group's scale and offset are chosen (:func:`quantize_int4`); recorded in pre-quantized
#: folders and in the cache namespace (:func:`~skmoe.engine.precision.precision_label`).
INT4_ROUNDINGS = ("mse", "rtn")
INT4_ROUNDING = "mse"
#: The grids ``"mse"`` tries: ``15 + d`` steps across each group's range (steps of 0.1 instead
#: of 0.2 gained 0.3% of the squared error on Gaussian weights for twice the time).
_SEARCH_STEPS = [i / 5 for i in range(-5, 6)]
#: Groups per step of the ``"mse"`` search.
_CHUNK = 8192
#: The kernel packs output channels in tiles of 16.
_N_ALIGN = 16
#: Rows per step of the MLPs and experts: their 4x-wide hidden rows live one tile at a time
#: (each row is computed from that row alone, so tiling changes no bit).
ROW_TILE = 1024


def int4_available() -> bool:
    """torch's packed int4 CPU matmul and its packing op exist in this torch."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def check_int4_rounding(rounding: str, error: type[ValueError] = ValueError) -> str:
    """``rounding`` if it is one of :data:`INT4_ROUNDINGS`, else ``error`` naming them."""
    if rounding not in INT4_ROUNDINGS:
        raise error(f"int4 rounding must be one of {INT4_ROUNDINGS}, got {rounding!r}")
    return rounding


class Int4ShapeError(ValueError):
    """A weight the int4 kernel cannot pack with this group size (a request's mistake)."""


def check_int4_shape(shape: tuple[int, int], group_size: int, name: str = "weight") -> None:
    """Refuse a ``[out, in]`` weight the kernel cannot take, naming it and the rule."""
    if group_size not in INT4_GROUP_SIZES:
        raise Int4ShapeError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    n, k = shape
    if k % group_size or n % _N_ALIGN:
        raise Int4ShapeError(
            f"int4: {name} of shape [{n}, {k}] (out x in) cannot be packed: the input width must "
            f"be a multiple of the group size {group_size} and the output width a multiple of "
            f"{_N_ALIGN}")


def _fit(x: torch.Tensor, scale: torch.Tensor,
         zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round ``scale`` and ``zero`` [G, 1] to bfloat16, then give each value of the groups ``x``
    [G, g] its nearest code: ``(q, scale, zero, err)`` with ``err`` each group's squared error."""
    s, z = scale.clamp_min(1e-8).to(torch.bfloat16), zero.to(torch.bfloat16)
    sf, zf = s.float(), z.float()
    q = torch.round((x - zf) / sf + 8).clamp_(0, 15)
    err = (q - 8).mul_(sf).add_(zf).sub_(x).pow_(2).sum(1, keepdim=True)
    return q, s, z, err


def _search(x: torch.Tensor, lo: torch.Tensor,
            width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``mse`` search for the groups ``x`` [G, g] (min ``lo``, range ``width`` [G, 1]): for
    each grid of :data:`_SEARCH_STEPS`, the codes of ``15 + d`` steps across the range, the scale
    and offset refitted to them by least squares, and that fit's squared error in closed form
    (``Sxx - Sqx**2 / Sqq`` over centred sums); returns the ``(scale, zero)`` of the least."""
    g = x.shape[1]
    xl = x - lo  # centred sums do not change with the shift
    sxl = xl.sum(1, keepdim=True)
    gain = torch.full_like(lo, -1.0)  # Sqx**2 / Sqq of the best grid so far (larger is better)
    scale = (width / 15).clamp_min(1e-8)
    zero = lo + 8 * scale  # the min/max grid where no fit is better
    q = torch.empty_like(x)
    for d in _SEARCH_STEPS:
        torch.mul(xl, (15 + d) / width, out=q).round_().clamp_(0, 15)
        sq = q.sum(1, keepdim=True)
        sqq = torch.linalg.vecdot(q, q, dim=1).unsqueeze(1) - sq * sq / g
        sqx = torch.linalg.vecdot(q, xl, dim=1).unsqueeze(1) - sq * sxl / g
        ok = (sqq > 0) & (sqx > 0)
        g2 = torch.where(ok, sqx * sqx / sqq.clamp_min(1e-30), -1.0)
        better = g2 > gain
        s2 = sqx / sqq.clamp_min(1e-30)
        z2 = lo + (sxl - (sq - 8 * g) * s2) / g  # the mean residual for this scale
        gain = torch.where(better, g2, gain)
        scale, zero = torch.where(better, s2, scale), torch.where(better, z2, zero)
    return scale, zero


def quantize_int4(
    w: torch.Tensor, group_size: int = INT4_GROUP_SIZE, rounding: str = INT4_ROUNDING
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise asymmetric 4-bit quantization of ``w`` [out, in].

    Returns ``(q, scale, zero)``: ``q`` int32 [out, in] in ``[0, 15]``, ``scale`` and ``zero``
    bfloat16 [out, in / group_size], with ``w ~= (q - 8) * scale + zero`` (what the kernel
    computes). The scales are rounded to bfloat16 *before* ``q`` is chosen, so ``q`` is the
    nearest code for the scales the kernel will use.

    ``rounding="rtn"``: the group's min and max set the grid (15 steps between them).
    ``rounding="mse"`` (default): the grid whose bf16-rounded scale and offset give each group the
    least squared error, among the min/max grid and the best least-squares fit to the codes of
    ``15 + d`` steps across the group's range (``d`` from -1 to 1 by 0.2; the search of
    llama.cpp's ``make_qkx2_quants``, unweighted); never worse than ``"rtn"`` per group, and about
    20% less squared error on Gaussian weights (measured, docs/performance.md).
    """
    check_int4_rounding(rounding)
    n, k = w.shape
    x = w.detach().float().reshape(-1, group_size)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    step = ((hi - lo) / 15).clamp_min(1e-8).to(torch.bfloat16).float()
    q, scale, zero, err = _fit(x, step, lo + 8 * step)
    if rounding == "mse":
        for start in range(0, len(x), _CHUNK):  # a chunk's temporaries stay in the CPU's cache
            rows = slice(start, start + _CHUNK)
            width = (hi[rows] - lo[rows]).clamp_min(1e-8)
            q2, s2, z2, e2 = _fit(x[rows], *_search(x[rows], lo[rows], width))
            better = e2 < err[rows]  # never worse than the min/max grid, group by group
            q[rows] = torch.where(better, q2, q[rows])
            scale[rows] = torch.where(better, s2, scale[rows])
            zero[rows] = torch.where(better, z2, zero[rows])
    groups = k // group_size
    return q.reshape(n, k).to(torch.int32), scale.reshape(n, groups), zero.reshape(n, groups)


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The float32 weight ``(q - 8) * scale + zero`` that :func:`quantize_int4` encodes."""
    n, k = q.shape
    groups = scale.shape[1]
    w = (q.reshape(n, groups, -1).float() - 8) * scale.float()[..., None] + zero.float()[..., None]
    return w.reshape(n, k)


def _gelu_bf16(h: torch.Tensor) -> torch.Tensor:
    """Exact GELU of fp32 rows, as the bf16 contiguous input of the next int4 matmul.

    Through torch's own kernel on a transposed view, never oneDNN's: oneDNN's GELU (what
    :func:`~skmoe.encoder.parts.gelu_` uses for whole slices of rows) and torch's differ in the
    last bit, so a row's result would depend on where its batch put it, and the bf16 rounding
    that follows turns such a bit into a visible difference. One kernel for every row keeps a
    text's vector independent of its batch-mates (and caches no per-shape primitive).
    """
    return F.gelu(h.t()).t().to(torch.bfloat16, memory_format=torch.contiguous_format)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """4-bit codes ``[..., k]`` (values 0..15) as bytes ``[..., k / 2]``: column ``2j`` in the low
    nibble, ``2j + 1`` in the high one (the portable layout of pre-quantized folders)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """The int32 codes ``[..., k]`` that :func:`pack_nibbles` stored in ``[..., k / 2]`` bytes."""
    p = packed.to(torch.int32)
    return torch.stack([p & 15, p >> 4], -1).reshape(*packed.shape[:-1], -1)


def int4_codes(w: torch.Tensor, group_size: int, name: str = "weight", *,
               rounding: str = INT4_ROUNDING) -> dict[str, torch.Tensor]:
    """The portable int4 form of ``w`` ``[..., out, in]`` (one matrix per leading index):
    ``qweight`` uint8 ``[..., out, in / 2]`` (:func:`pack_nibbles` of :func:`quantize_int4`'s
    codes, with ``rounding``), ``scales`` and ``zeros`` bfloat16 ``[..., out, in / group_size]``."""
    n, k = w.shape[-2:]
    check_int4_shape((n, k), group_size, name)
    lead = w.shape[:-2]
    if w.is_meta:  # a folder's expected layout: the shapes and dtypes, without the search
        return {"qweight": torch.empty(*lead, n, k // 2, dtype=torch.uint8, device="meta"),
                "scales": torch.empty(*lead, n, k // group_size, dtype=torch.bfloat16, device="meta"),
                "zeros": torch.empty(*lead, n, k // group_size, dtype=torch.bfloat16, device="meta")}
    out: dict[str, list[torch.Tensor]] = {"qweight": [], "scales": [], "zeros": []}
    for m in w.detach().reshape(-1, n, k):  # one matrix at a time: a small fp32 temporary
        q, scale, zero = quantize_int4(m, group_size, rounding)
        out["qweight"].append(pack_nibbles(q))
        out["scales"].append(scale)
        out["zeros"].append(zero)
    return {key: torch.stack(v).reshape(*lead, *v[0].shape) for key, v in out.items()}


class _Int4Weight:
    """One packed int4 weight: ``mm(x)`` = ``x @ dequant(W).T`` (bf16 activations, fp32 out).

    Built from the portable codes (:func:`int4_codes`); the packed layout is the CPU kernel's own
    (it may depend on the CPU), so it is made here, at load, and never stored.
    """

    __slots__ = ("packed", "scale_zeros", "group_size", "out_features")

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int) -> None:
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            unpack_nibbles(qweight).contiguous(), 1)
        # the kernel's layout: [in / group, out, 2] holding (scale, zero)
        self.scale_zeros = torch.stack([scales.t(), zeros.t()], -1).contiguous()
        self.group_size, self.out_features = group_size, qweight.shape[0]

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), self.packed, self.group_size, self.scale_zeros)
        return y.float()

    def nbytes(self) -> int:
        return self.packed.nbytes + self.scale_zeros.nbytes


def _weights(t: dict[str, torch.Tensor], prefix: str, group_size: int) -> list[_Int4Weight]:
    q, s, z = t[prefix + "qweight"], t[prefix + "scales"], t[prefix + "zeros"]
    if q.dim() == 2:
        return [_Int4Weight(q, s, z, group_size)]
    return [_Int4Weight(q[e], s[e], z[e], group_size) for e in range(len(q))]


class Int4Linear(nn.Module):
    """Drop-in for ``nn.Linear``: int4 weights with group-wise scales, fp32 bias.

    Portable tensors (:meth:`portable`): ``qweight``, ``scales``, ``zeros`` (see
    :func:`int4_codes`) and ``bias`` (float32) when the layer has one.
    """

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE,
                 name: str = "linear", *, rounding: str = INT4_ROUNDING) -> None:
        super().__init__()
        self._build(self.portable(linear, group_size, name, rounding=rounding), group_size)

    @staticmethod
    def portable(linear: nn.Linear, group_size: int = INT4_GROUP_SIZE,
                 name: str = "linear", *, rounding: str = INT4_ROUNDING) -> dict[str, torch.Tensor]:
        """The layer's portable int4 tensors, quantized from its float weight."""
        return {**int4_codes(linear.weight, group_size, name, rounding=rounding), **_bias(linear)}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor],
                      group_size: int = INT4_GROUP_SIZE) -> Int4Linear:
        """The layer built from :meth:`portable`'s tensors (read from a folder)."""
        return _built(cls, tensors, group_size)

    def _build(self, t: dict[str, torch.Tensor], group_size: int) -> None:
        self.out_features, self.in_features = t["qweight"].shape[0], t["qweight"].shape[1] * 2
        self.group_size = group_size
        self.weight4 = _weights(t, "", group_size)[0]
        bias = t.get("bias")
        self.register_buffer("bias", None if bias is None else bias.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self.weight4.mm(x.reshape(-1, self.in_features))
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4, "
                f"group_size={self.group_size}")


class Int4MLP(nn.Module):
    """The dense MLP (fc1 -> GELU -> fc2) of the MoE model's even layers, in int4.

    Portable tensors: ``fc1.*`` and ``fc2.*`` as :class:`Int4Linear`'s."""

    def __init__(self, mlp: nn.Module, group_size: int = INT4_GROUP_SIZE, *,
                 rounding: str = INT4_ROUNDING) -> None:
        super().__init__()
        self.fc1 = Int4Linear(mlp.fc1, group_size, "fc1", rounding=rounding)
        self.fc2 = Int4Linear(mlp.fc2, group_size, "fc2", rounding=rounding)

    @staticmethod
    def portable(mlp: nn.Module, group_size: int = INT4_GROUP_SIZE,
                 name: str = "mlp", *, rounding: str = INT4_ROUNDING) -> dict[str, torch.Tensor]:
        return {f"{fc}.{k}": v for fc in ("fc1", "fc2")
                for k, v in Int4Linear.portable(getattr(mlp, fc), group_size,
                                                f"{name}.{fc}", rounding=rounding).items()}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor],
                      group_size: int = INT4_GROUP_SIZE) -> Int4MLP:
        obj = _blank(cls)
        obj.fc1 = Int4Linear.from_portable(_sub(tensors, "fc1."), group_size)
        obj.fc2 = Int4Linear.from_portable(_sub(tensors, "fc2."), group_size)
        return obj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.fc1.in_features)
        out = torch.empty(len(rows), self.fc2.out_features, dtype=torch.float32)
        for start in range(0, len(rows), ROW_TILE):  # the wide hidden rows one tile at a time
            h = _gelu_bf16(self.fc1(rows[start : start + ROW_TILE]))
            out[start : start + ROW_TILE] = self.fc2(h)
        return out.view(*lead, self.fc2.out_features)


class Int4Experts(nn.Module):
    """The experts of one MoE layer in int4: an :class:`~skmoe.encoder.parts.ExpertKernel`
    built from float experts (:class:`~skmoe.encoder.parts.ExpertWeightsSource`).

    Portable tensors: ``up.*`` ``[E, F, ...]`` and ``down.*`` ``[E, H, ...]`` (as
    :func:`int4_codes`, one matrix per expert) and the shared ``bias`` [H]."""

    def __init__(self, experts: ExpertWeightsSource, group_size: int = INT4_GROUP_SIZE, *,
                 rounding: str = INT4_ROUNDING) -> None:
        super().__init__()
        self._build(self.portable(experts, group_size, rounding=rounding), group_size)

    @staticmethod
    def portable(experts: ExpertWeightsSource, group_size: int = INT4_GROUP_SIZE,
                 name: str = "experts", *, rounding: str = INT4_ROUNDING) -> dict[str, torch.Tensor]:
        up, down = experts.expert_weights()  # [E, F, H] and [E, H, F], out x in
        r = rounding
        return {**{f"up.{k}": v for k, v in int4_codes(up, group_size, f"{name} up",
                                                       rounding=r).items()},
                **{f"down.{k}": v for k, v in int4_codes(down, group_size, f"{name} down",
                                                         rounding=r).items()},
                "bias": experts.bias.detach().float().clone()}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor],
                      group_size: int = INT4_GROUP_SIZE) -> Int4Experts:
        return _built(cls, tensors, group_size)

    def _build(self, t: dict[str, torch.Tensor], group_size: int) -> None:
        self.group_size = group_size
        self.up = _weights(t, "up.", group_size)
        self.down = _weights(t, "down.", group_size)
        self.num_experts = len(self.up)
        self.bias = nn.Parameter(t["bias"].float(), requires_grad=False)

    def grouped(self, x: torch.Tensor, token_of: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """See :class:`~skmoe.encoder.parts.ExpertKernel` (CPU: ``offsets`` read directly)."""
        xs = x.to(torch.bfloat16).index_select(0, token_of)  # once per slot
        y = torch.empty(len(token_of), x.shape[1], dtype=torch.float32)
        start = 0
        for e, end in enumerate(offsets.tolist()):
            for lo in range(start, end, ROW_TILE):  # the wide hidden rows one tile at a time
                hi = min(lo + ROW_TILE, end)
                y[lo:hi] = self.down[e].mm(_gelu_bf16(self.up[e].mm(xs[lo:hi])))
            start = end
        return y

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, int4, group_size={self.group_size}"


def _release(old: nn.Module) -> None:
    """Hand back the checkpoint pages of a replaced module's weights (see
    :func:`~skmoe.engine.memory.release_file_pages`) and the heap pages of the conversion's
    temporaries (:func:`~skmoe.encoder.pages.trim_heap`)."""
    release_file_pages([*old.parameters(), *old.buffers()])
    trim_heap()


def to_int4(backbone: nn.Module, parts: list[Part] | None,
            group_size: int = INT4_GROUP_SIZE, *, rounding: str = INT4_ROUNDING) -> None:
    """Convert ``backbone`` to int4 in place: its declared ``parts`` (every ``nn.Linear`` where
    it declares none) and its word-embedding table; each replaced fp32 weight's pages are handed
    back at once, so the peak stays near one layer's fp32 weights above the int4 model."""
    if parts is None:
        linears = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("int4: this model has no linear layers to quantize")
        for name, old in linears:
            parent, _, attr = name.rpartition(".")
            setattr(backbone.get_submodule(parent), attr, Int4Linear(old, group_size, name,
                                                                        rounding=rounding))
            _release(old)
    else:
        make: dict[str, Callable[[Part], nn.Module]] = {
            "projection": lambda p: Int4Linear(p.module, group_size, p.name, rounding=rounding),
            "feed_forward": lambda p: Int4MLP(p.module, group_size, rounding=rounding),
            "experts": lambda p: Int4Experts(p.module, group_size, rounding=rounding),
        }
        for part in parts:  # routers are not replaced: routing decisions stay fp32
            if part.kind in make:
                backbone.replace_part(part.name, make[part.kind](part))
                _release(part.module)
    table = word_embeddings(backbone)
    if table is not None:
        old, put = table
        put(Int8RowEmbedding(old))
        _release(old)
