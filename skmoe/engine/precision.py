"""Precision modes: how the encoder's arithmetic is carried out.

========== ============================================================================ ==========
mode       what runs in it                                                              devices
========== ============================================================================ ==========
float32    everything                                                                   CPU, GPU
bfloat16   weights and activations in bf16; router logits/softmax, rotary and pooling   GPU; CPU
           in fp32                                                                      with
                                                                                        avx512_bf16
                                                                                        or AMX
float16    as bfloat16, in fp16                                                         GPU
int8       every projection (attention, dense MLP, experts) as int8 x int8 -> int32     CPU
           matmuls: weights quantized once per output channel, activations per row
           (per token) at run time; the router, LayerNorms, attention scores, GELU,
           embeddings and pooling stay fp32
int4       weight-only int4 with group-wise scales for the same matmuls (bf16           CPU
           activations, torch's packed int4 kernel) and int8 rows for the word
           embeddings; the rest as int8 (see :mod:`skmoe.engine.int4`)
========== ============================================================================ ==========

Why per-row activation scales: torch's stock dynamic quantization picks one scale per *batch*, so
a text's vector depends on the other texts in its batch (0.024 max-abs measured between a row alone
and in a 4096-row batch), which breaks the embedding cache's "same text, same vector". Here each
row's scale comes from that row alone and the integer matmul is exact, so a row's result does not
depend on its batch-mates.

Conversion is **in place**: :func:`apply_precision` changes the encoder it is given and returns
that same object (a second copy of a 1.9 GB model would not fit everywhere). Float modes can be
re-applied; int8 and int4 cannot be undone — load the model again for another mode.

int8 conversion hands back the memory-mapped checkpoint pages of the fp32 weights it replaces
(:func:`~skmoe.engine.memory.release_file_pages`), so the int8 model's footprint is about half
the fp32 one rather than the fp32 one plus the int8 copies.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn

from ..encoder import SentenceEncoder
from ..encoder.parts import GELU_ALIGN, ExpertWeightsSource, Part, gelu_
from .int4 import INT4_GROUP_SIZE, int4_available, to_int4
from .memory import release_file_pages

PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int4")
#: The modes that quantize weights: converting to them cannot be undone.
QUANTIZED = ("int8", "int4")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SlowPrecisionWarning(UserWarning):
    """The requested precision runs on this hardware, but slower than float32."""


# --------------------------------------------------------------------------------------------
# What the hardware offers


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where that file does not exist)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """bf16 matmuls in hardware (AVX512-BF16 or AMX); without them torch's CPU bf16 matmul is
    emulated (measured about 40x slower than fp32 on an AVX2 EPYC)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def int8_available() -> bool:
    """oneDNN's int8 linear (``torch.ops.onednn.qlinear_pointwise``) is present in this torch."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def supported_precisions(device: str | torch.device) -> tuple[str, ...]:
    """The modes :func:`apply_precision` accepts on ``device`` without ``allow_slow``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return ("float32", "bfloat16", "float16") if torch.cuda.is_bf16_supported() else (
            "float32", "float16")
    if dev.type == "cpu":
        modes = ["float32"]
        if cpu_has_native_bf16():
            modes.append("bfloat16")
        if int8_available():
            modes.append("int8")
        if int4_available():
            modes.append("int4")
        return tuple(modes)
    return ("float32",)


def DEFAULT_PRECISION(device: str | torch.device) -> str:  # noqa: N802 - public constant-like name
    """float32 on CPU (exact), bfloat16 on GPU (tensor cores)."""
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


def resolve_precision(precision: str | None, device: str | torch.device) -> str:
    """Canonical name for ``precision`` (``None``/``"auto"``: the device default)."""
    if precision is None or precision == "auto":
        return DEFAULT_PRECISION(device)
    name = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}; supported modes: {', '.join(PRECISIONS)} "
            f"(on {torch.device(device).type}: {', '.join(supported_precisions(device))})"
        )
    return name


def precision_of(encoder: SentenceEncoder) -> str:
    """The mode an encoder runs in (its ``precision`` field, set by :func:`apply_precision`;
    else read off its dtype)."""
    mode = encoder.precision
    if mode is not None:
        return mode
    inverse = {v: k for k, v in _FLOAT_DTYPES.items()}
    return inverse.get(encoder.dtype, str(encoder.dtype))


# --------------------------------------------------------------------------------------------
# int8 building blocks


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
        qh, sh = quantize_rows(gelu_(h), inplace=True)
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


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear``: int8 weights per output channel, int8 activations per row."""

    def __init__(self, linear: nn.Linear, bits: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_weight(linear.weight, bits)
        self.register_buffer("packed", _pack(q), persistent=False)
        self.register_buffer("w_scale", scale, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)

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
    """The dense MLP (fc1 -> GELU -> fc2) of the MoE model's even layers, in int8."""

    def __init__(self, mlp: nn.Module, bits: int) -> None:
        super().__init__()
        self.fc1 = Int8Linear(mlp.fc1, bits)
        self.fc2 = Int8Linear(mlp.fc2, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, s = quantize_rows(x.float(), pad_to=ROW_ALIGN)
        fc1, fc2 = self.fc1, self.fc2
        return _ffn_rows(q, s, (fc1.packed, fc1.w_scale), (fc2.packed, fc2.w_scale), fc1.bias,
                         fc2.bias)


class Int8Experts(nn.Module):
    """The experts of one MoE layer, each as two int8 matmuls: an
    :class:`~skmoe.encoder.parts.ExpertKernel` built from float experts
    (:class:`~skmoe.encoder.parts.ExpertWeightsSource`)."""

    def __init__(self, experts: ExpertWeightsSource, bits: int) -> None:
        super().__init__()
        up, down = experts.expert_weights()  # [E, F, H] and [E, H, F], out x in
        self.num_experts = up.shape[0]
        self.up: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.down: list[tuple[torch.Tensor, torch.Tensor]] = []
        for e in range(self.num_experts):
            q1, s1 = quantize_weight(up[e].detach(), bits)
            q2, s2 = quantize_weight(down[e].detach(), bits)
            self.up.append((_pack(q1), s1))
            self.down.append((_pack(q2), s2))
        self.bias = nn.Parameter(experts.bias.detach().float().clone(), requires_grad=False)

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


def _release(modules: list[nn.Module]) -> None:
    """Hand back the pages of replaced modules' weights.

    Loaded weights are views of the memory-mapped checkpoint, which the fp32 embeddings keep
    mapped: without the release, the replaced fp32 weights would stay resident (measured on the
    full model: 2.2 GB RSS after int8 conversion instead of 1.1 GB).
    """
    release_file_pages([t for m in modules for t in (*m.parameters(), *m.buffers())])


def _swap_linears(module: nn.Module, bits: int, replaced: list[nn.Module]) -> None:
    """Replace every ``nn.Linear`` below ``module`` by :class:`Int8Linear` (backbones that
    declare no parts: the dense transformers encoders); the old layers go to ``replaced``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child, bits))
            replaced.append(child)
        else:
            _swap_linears(child, bits, replaced)


def _declared_parts(encoder: SentenceEncoder) -> list[Part] | None:
    """The backbone's replaceable parts (:mod:`skmoe.encoder.parts`), or None if it declares none."""
    declare = getattr(encoder.backbone, "replaceable_parts", None)
    return declare() if callable(declare) else None


def _to_int8(encoder: SentenceEncoder) -> None:
    bits = int8_weight_bits()
    parts = _declared_parts(encoder)
    if parts is None:
        linears: list[nn.Module] = []
        _swap_linears(encoder.backbone, bits, linears)
        if not linears:
            raise ValueError("int8: this model has no linear layers to quantize")
        _release(linears)
        return
    replacements = {"projection": Int8Linear, "feed_forward": Int8MLP, "experts": Int8Experts}
    for part in parts:  # routers are not replaced: routing decisions stay fp32
        if part.kind in replacements:
            encoder.backbone.replace_part(part.name, replacements[part.kind](part.module, bits))
            _release([part.module])  # at once: the peak stays near one layer's fp32 weights


def _to_float(encoder: SentenceEncoder, dtype: torch.dtype) -> None:
    encoder.backbone.to(dtype)
    for part in _declared_parts(encoder) or []:
        if part.kind == "router":
            part.module.float()  # spec: router logits and softmax in fp32


# --------------------------------------------------------------------------------------------
# The entry point


def apply_precision(
    encoder: SentenceEncoder, precision: str | None, *, allow_slow: bool = False,
    group_size: int = INT4_GROUP_SIZE,
) -> SentenceEncoder:
    """Put ``encoder`` into a precision mode, **in place**, and return it.

    Parameters
    ----------
    encoder : SentenceEncoder
        A loaded encoder (normally fresh from ``load_encoder(..., dtype="float32")``).
    precision : {"float32", "bfloat16", "float16", "int8", "int4"} or None
        ``None`` or ``"auto"``: :func:`DEFAULT_PRECISION` of the encoder's device. Aliases
        ``fp32``, ``bf16``, ``fp16`` are accepted.
    allow_slow : bool, default=False
        Accept bfloat16 on a CPU without native bf16, and float16 on CPU: correct, but emulated
        and far slower than float32. Tests use it to check the numerics of the GPU modes on any
        machine.
    group_size : int, default=32
        int4 only: input channels sharing one scale (32, 64, 128 or 256; smaller is more
        accurate). The cache namespace records the mode, not this: keep the default for cached
        runs.

    Returns
    -------
    SentenceEncoder
        The same object, converted; ``encoder.precision`` records the mode.

    Raises
    ------
    ValueError
        For an unknown mode, a mode this device does not run (int8 and int4 on GPU; float16 on
        CPU and bfloat16 on a CPU without avx512_bf16/AMX, unless ``allow_slow``), or a
        conversion away from int8/int4 (load the model again instead).
    """
    device = encoder.device
    mode = resolve_precision(precision, device)
    current = precision_of(encoder)
    if current == mode:
        encoder.precision = mode
        return encoder
    if current in QUANTIZED:
        raise ValueError(
            f"This encoder was quantized to {current}; it cannot become {mode}. Load the model "
            f"again."
        )
    supported = supported_precisions(device)
    if mode not in supported:
        emulated = mode in ("bfloat16", "float16") and device.type == "cpu"
        if not (emulated and allow_slow):
            why = ""
            if mode in QUANTIZED and device.type != "cpu":
                why = (f" {mode} is a CPU mode (its kernels are CPU ones); on {device.type} use "
                       f"bfloat16 or float16.")
            elif mode == "bfloat16" and device.type == "cpu":
                why = (" This CPU lacks avx512_bf16/AMX, so bf16 matmuls would be emulated, far "
                       "slower than float32 (use int8 for speed).")
            raise ValueError(
                f"Precision {mode!r} is not available on {device.type}; supported here: "
                f"{', '.join(supported)}.{why}"
            )
        warnings.warn(f"{mode} on this CPU is emulated and far slower than float32",
                      SlowPrecisionWarning, stacklevel=2)
    if mode in QUANTIZED:
        if current != "float32":
            encoder.backbone.float()
        if mode == "int8":
            _to_int8(encoder)
        else:
            to_int4(encoder.backbone, _declared_parts(encoder), group_size)
    else:
        _to_float(encoder, _FLOAT_DTYPES[mode])
    encoder.precision = mode
    return encoder
