"""The int8 building blocks of the int8 precision mode (:mod:`skmoe.engine.precision`).

Weights are quantized once per output channel (symmetric, 8 bits, or 7 where the CPU's int8
kernel would saturate), activations per row at run time; the matmuls are oneDNN's int8 linear,
summed exactly in int32. Each module is built from its portable tensors (``qweight`` int8 and
``scales`` float32, what a pre-quantized folder stores, :mod:`skmoe.engine.quantized_io`); the
packed oneDNN layout depends on the CPU and is made at load, never stored.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..encoder.parts import GELU_ALIGN, ExpertWeightsSource, gelu_


@functools.cache
def int8_weight_bits() -> int:
    """8-bit weights where the int8 kernel accumulates exactly, else 7-bit.

    Without VNNI, x86 int8 kernels sum pairs of u8 x s8 products in int16 and saturate for
    8-bit weights (measured here: errors of 10% of the result). 7-bit weights cannot saturate.
    Decided by running the kernel on a worst case, not by reading CPU flags.
    """
    gen = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (64, 512), dtype=torch.int8, generator=gen)
    w[:, 0] = 127
    # every activation at the end of the range whose product with its weight is largest
    x = torch.where(w > 0, 255, 0).to(torch.uint8)
    got = _int8_mm(x, _pack(w), torch.ones(64))
    want = (x.double() - ZERO_POINT) @ w.double().t()
    return 8 if torch.equal(got.double(), want) else 7


def _pack(q_weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.onednn.qlinear_prepack(q_weight.contiguous(), None)


# Activations are stored as uint8 with zero point 128: ``q = round(x / scale) + 128``. The values
# are the symmetric int8 ones shifted; oneDNN's kernels without VNNI multiply u8 x s8, and fed s8
# they shift it themselves, on every call (measured 10-25% slower for the model's shapes).
ZERO_POINT = 128
_ROUND_MAGIC = 1.5 * 2**23 + ZERO_POINT  # see quantize_rows

# oneDNN builds (and caches, about 0.3 MB each) one primitive per distinct row count. Row counts
# vary with every batch and every expert's share, so unbounded they grow the process by tens of
# MB per thousand texts. Padding the row count to a multiple of ROW_ALIGN and cutting it into
# tiles of at most ROW_TILE rows bounds the matmul shapes to ROW_TILE / ROW_ALIGN per weight
# shape; GELU (:func:`~skmoe.encoder.parts.gelu_`) then runs in slices of two shapes only.
ROW_ALIGN = GELU_ALIGN
ROW_TILE = 2048


def _int8_mm_padded(q_x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """``((q_x - 128) @ q_w.T) * w_scale`` in fp32 (the product summed exactly in int32), with
    the row count padded up to a multiple of ROW_ALIGN: the extra rows are zeros.

    ``q_x`` (uint8) may arrive padded already (as :func:`quantize_rows` with ``pad_to`` returns it).
    """
    M = q_x.shape[0]
    if M % ROW_ALIGN:  # rows holding the value 0 give zero outputs and leave the real rows alone
        q_x = torch.cat([q_x, q_x.new_full((-M % ROW_ALIGN, q_x.shape[1]), ZERO_POINT)])
    if len(q_x) <= ROW_TILE:
        return _onednn_int8_mm(q_x, packed, w_scale)
    # Tiles write straight into their rows of one output: oneDNN's "sum" post-op adds the
    # product into the (zeroed) destination in place, which costs a memset instead of a copy.
    out = torch.zeros(len(q_x), w_scale.shape[0], dtype=torch.float32)
    for start in range(0, len(q_x), ROW_TILE):
        _onednn_int8_mm(q_x[start : start + ROW_TILE], packed, w_scale,
                        into=out[start : start + ROW_TILE])
    return out


def _int8_mm(q_x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """``((q_x - 128) @ q_w.T) * w_scale`` in fp32, the product summed exactly in int32."""
    return _int8_mm_padded(q_x, packed, w_scale)[: q_x.shape[0]]


_ZERO_POINTS: dict[int, torch.Tensor] = {}


def _onednn_int8_mm(q_x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor,
                    into: torch.Tensor | None = None) -> torch.Tensor:
    """One oneDNN int8 matmul; with ``into`` (contiguous rows), the result is added into it."""
    n = w_scale.shape[0]
    zp = _ZERO_POINTS.get(n)
    if zp is None:
        zp = _ZERO_POINTS[n] = torch.zeros(n, dtype=torch.long)
    if into is not None:
        return torch.ops.onednn.qlinear_pointwise.binary(
            q_x, 1.0, ZERO_POINT, packed, w_scale, zp, into, None, 1.0, 0, torch.float32, 1.0, 0,
            "sum", 1.0, "none", [], "",
        )
    return torch.ops.onednn.qlinear_pointwise(
        q_x, 1.0, ZERO_POINT, packed, w_scale, zp, None, 1.0, 0, torch.float32, "none", [], ""
    )


def _ffn_rows(
    q: torch.Tensor, s: torch.Tensor, up: tuple[torch.Tensor, torch.Tensor],
    down: tuple[torch.Tensor, torch.Tensor], up_bias: torch.Tensor | None = None,
    down_bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """int8 feed-forward ``down(GELU(up(x)))`` of rows quantized by :func:`quantize_rows`.

    ``q`` is ROW_ALIGN-padded, ``s`` has the real row count; ``up``/``down`` are
    ``(packed weight, weight scale)``. Runs in tiles of at most ROW_TILE rows, each tile from
    int8 input to its fp32 output rows, so the wide hidden activations of a tile stay in cache
    and are never copied into one big buffer.
    """
    M = s.shape[0]
    if out is None:
        out = torch.empty(M, down[1].shape[0], dtype=torch.float32)
    for start in range(0, M, ROW_TILE):
        stop = min(start + ROW_TILE, M)
        h = _onednn_int8_mm(q[start : start + ROW_TILE], *up)  # padded rows: zeros
        real = h[: stop - start].mul_(s[start:stop])
        if up_bias is not None:
            real.add_(up_bias)
        qh, sh = quantize_rows(gelu_(h, GELU_ALIGN), inplace=True)
        acc = _onednn_int8_mm(qh, *down)[: stop - start]
        if down_bias is None:
            torch.mul(acc, sh[: stop - start], out=out[start:stop])
        else:
            torch.addcmul(down_bias, acc, sh[: stop - start], out=out[start:stop])
    return out


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization of ``w`` [out, in] -> (int8 [out, in], scale [out])."""
    qmax = 2 ** (bits - 1) - 1
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / qmax
    q = torch.round(w / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return q, scale


def _uint8_rows(M: int, K: int, pad_to: int) -> torch.Tensor:
    """A uint8 ``[M', K]`` buffer, ``M'`` = ``M`` rounded up to a multiple of ``pad_to``, whose
    padding rows hold the value 0 (the zero point); rows ``:M`` are left for the caller."""
    q = torch.empty(M + (-M % pad_to), K, dtype=torch.uint8)
    q[M:].fill_(ZERO_POINT)
    return q


def quantize_rows(
    x: torch.Tensor, *, inplace: bool = False, pad_to: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit quantization with one scale per row, from that row alone.

    Returns ``(uint8 [M', K], scale [M, 1])`` with ``x ~= (q[:M] - 128) * scale``, where ``M'``
    is ``M`` rounded up to a multiple of ``pad_to`` (extra rows hold 128, the value 0).
    ``inplace=True`` reuses ``x`` as scratch (it is overwritten).
    """
    high = x.amax(dim=1, keepdim=True)  # amax + amin: 10x faster than aminmax or abs().amax here
    amax = torch.maximum(high, x.amin(dim=1, keepdim=True).neg_())
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    M = x.shape[0]
    q = _uint8_rows(M, x.shape[1], pad_to)
    # Rounding by the float unit itself: x / scale lies in [-127, 127], and adding 1.5 * 2**23
    # leaves no fraction bits, so the sum is round(x / scale) (half to even) and its bit pattern
    # ends in that integer; with 128 added too, the pattern's low byte is the uint8 we want, and
    # the int32 -> uint8 cast keeps exactly that byte. Two passes instead of scale, round, cast.
    y = torch.mul(x, scale.reciprocal(), out=x if inplace else None).add_(_ROUND_MAGIC)
    q[:M].copy_(y.view(torch.int32))
    return q, scale


def int8_codes(w: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """The portable int8 form of ``w`` ``[..., out, in]``: ``qweight`` int8 (same shape) and
    ``scales`` float32 ``[..., out]`` (:func:`quantize_weight` per matrix)."""
    n, k = w.shape[-2:]
    pairs = [quantize_weight(m, bits) for m in w.detach().reshape(-1, n, k)]
    lead = w.shape[:-2]
    return {"qweight": torch.stack([q for q, _ in pairs]).reshape(*lead, n, k),
            "scales": torch.stack([s for _, s in pairs]).reshape(*lead, n)}


# -- shared with int4.py: building layers from a folder's portable tensors ---------------------
def _bias(module: nn.Module) -> dict[str, torch.Tensor]:
    b = getattr(module, "bias", None)
    return {} if b is None else {"bias": b.detach().float().clone()}


def _blank(cls: type[nn.Module]) -> nn.Module:
    """An instance of ``cls`` with only ``nn.Module`` set up (for ``from_portable``)."""
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    return obj


def _built(cls: type[nn.Module], *args: object) -> nn.Module:
    """``cls`` built by its ``_build(*args)`` from portable tensors, without quantizing anything."""
    obj = _blank(cls)
    obj._build(*args)
    return obj


def _sub(t: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear``: int8 weights per output channel, int8 activations per row.

    Portable tensors (:meth:`portable`): ``qweight``, ``scales`` (:func:`int8_codes`) and
    ``bias`` (float32) when the layer has one; the packed oneDNN layout is made at load."""

    def __init__(self, linear: nn.Linear, bits: int) -> None:
        super().__init__()
        self._build(self.portable(linear, bits))

    @staticmethod
    def portable(linear: nn.Linear, bits: int) -> dict[str, torch.Tensor]:
        return {**int8_codes(linear.weight, bits), **_bias(linear)}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor]) -> Int8Linear:
        return _built(cls, tensors)

    def _build(self, t: dict[str, torch.Tensor]) -> None:
        self.out_features, self.in_features = t["qweight"].shape
        self.register_buffer("packed", _pack(t["qweight"]), persistent=False)
        self.register_buffer("w_scale", t["scales"].float(), persistent=False)
        bias = t.get("bias")
        self.register_buffer("bias", None if bias is None else bias.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, s = quantize_rows(x.reshape(-1, self.in_features).float(), pad_to=ROW_ALIGN)
        return self.from_quantized(q, s).view(*lead, self.out_features)

    def from_quantized(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The layer's output for rows quantized by :func:`quantize_rows` (``s`` has the real
        row count; ``q`` may be padded)."""
        acc = _int8_mm_padded(q, self.packed, self.w_scale)[: s.shape[0]]
        # in place: writing into fresh memory costs ~1.6x a pass over memory already in use
        return acc.mul_(s) if self.bias is None else torch.addcmul(self.bias, acc, s, out=acc)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8MLP(nn.Module):
    """The dense MLP (fc1 -> GELU -> fc2) of the MoE model's even layers, in int8.

    Portable tensors: ``fc1.*`` and ``fc2.*`` as :class:`Int8Linear`'s."""

    def __init__(self, mlp: nn.Module, bits: int) -> None:
        super().__init__()
        self.fc1 = Int8Linear(mlp.fc1, bits)
        self.fc2 = Int8Linear(mlp.fc2, bits)

    @staticmethod
    def portable(mlp: nn.Module, bits: int) -> dict[str, torch.Tensor]:
        return {f"{fc}.{k}": v for fc in ("fc1", "fc2")
                for k, v in Int8Linear.portable(getattr(mlp, fc), bits).items()}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor]) -> Int8MLP:
        obj = _blank(cls)
        obj.fc1 = Int8Linear.from_portable(_sub(tensors, "fc1."))
        obj.fc2 = Int8Linear.from_portable(_sub(tensors, "fc2."))
        return obj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, s = quantize_rows(x.float(), pad_to=ROW_ALIGN)
        fc1, fc2 = self.fc1, self.fc2
        return _ffn_rows(q, s, (fc1.packed, fc1.w_scale), (fc2.packed, fc2.w_scale), fc1.bias,
                         fc2.bias)


class Int8Experts(nn.Module):
    """The experts of one MoE layer, each as two int8 matmuls: an
    :class:`~skmoe.encoder.parts.ExpertKernel` built from float experts
    (:class:`~skmoe.encoder.parts.ExpertWeightsSource`).

    Portable tensors: ``up.*`` ``[E, F, H]``, ``down.*`` ``[E, H, F]`` (:func:`int8_codes`) and
    the shared ``bias`` [H]."""

    def __init__(self, experts: ExpertWeightsSource, bits: int) -> None:
        super().__init__()
        self._build(self.portable(experts, bits))

    @staticmethod
    def portable(experts: ExpertWeightsSource, bits: int) -> dict[str, torch.Tensor]:
        up, down = experts.expert_weights()  # [E, F, H] and [E, H, F], out x in
        return {**{f"up.{k}": v for k, v in int8_codes(up, bits).items()},
                **{f"down.{k}": v for k, v in int8_codes(down, bits).items()},
                "bias": experts.bias.detach().float().clone()}

    @classmethod
    def from_portable(cls, tensors: dict[str, torch.Tensor]) -> Int8Experts:
        return _built(cls, tensors)

    def _build(self, t: dict[str, torch.Tensor]) -> None:
        self.num_experts = len(t["up.qweight"])
        self.up = [(_pack(t["up.qweight"][e]), t["up.scales"][e].float())
                   for e in range(self.num_experts)]
        self.down = [(_pack(t["down.qweight"][e]), t["down.scales"][e].float())
                     for e in range(self.num_experts)]
        self.bias = nn.Parameter(t["bias"].float(), requires_grad=False)

    def grouped(self, x: torch.Tensor, token_of: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """See :class:`~skmoe.encoder.parts.ExpertKernel` (CPU: ``offsets`` read directly)."""
        q_x, s_x = quantize_rows(x.float())  # once per token, whichever experts read it
        y = torch.empty(len(token_of), x.shape[1], dtype=torch.float32)
        start = 0
        for e, end in enumerate(offsets.tolist()):
            n = end - start
            if n == 0:
                continue
            slots = token_of[start:end]
            q = _uint8_rows(n, x.shape[1], ROW_ALIGN)
            torch.index_select(q_x, 0, slots, out=q[:n])
            _ffn_rows(q, s_x.index_select(0, slots), self.up[e], self.down[e], out=y[start:end])
            start = end
        return y

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, int8"
