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
int8wo     torchao int8 weight-only for attention and dense MLP, bf16 elsewhere         CUDA
           (experts stay bf16); optional ``skmoe[torchao]``, untested on GPU so far
fp8        torchao float8 e4m3, per-row activation and weight scales, for the same      CUDA, cc
           matmuls; bf16 elsewhere (see :mod:`skmoe.engine.torchao_modes`)              >= 8.9
========== ============================================================================ ==========

Why per-row activation scales: torch's stock dynamic quantization picks one scale per *batch*, so
a text's vector depends on the other texts in its batch (0.024 max-abs measured between a row alone
and in a 4096-row batch), which breaks the embedding cache's "same text, same vector". Here each
row's scale comes from that row alone and the integer matmul is exact, so a row's result does not
depend on its batch-mates.

Conversion is **in place**: :func:`apply_precision` changes the encoder it is given and returns
that same object (a second copy of a 1.9 GB model would not fit everywhere). Float modes can be
re-applied; int8 and int4 cannot be undone — load the model again for another mode. Pre-quantized folders
(``skmoe quantize``, :mod:`skmoe.engine.quantized_io`) hold the int8/int4 tensors ready to load.

int8 conversion hands back the memory-mapped checkpoint pages of the fp32 weights it replaces
(:func:`~skmoe.engine.memory.release_file_pages`), so the int8 model's footprint is about half
the fp32 one rather than the fp32 one plus the int8 copies.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._stack import external_stacklevel
from ..encoder import SentenceEncoder
from ..encoder.pages import trim_heap
from ..encoder.parts import Part, router_modules
from .int4 import (
    INT4_GROUP_SIZE,
    INT4_ROUNDING,
    check_int4_rounding,
    int4_available,
    to_int4,
)
from .int8 import (  # noqa: F401 - re-exported: the int8 building blocks' old home
    ROW_ALIGN,
    ROW_TILE,
    ZERO_POINT,
    Int8Experts,
    Int8Linear,
    Int8MLP,
    _int8_mm,
    _pack,
    int8_codes,
    int8_weight_bits,
    quantize_rows,
    quantize_weight,
)
from .memory import release_file_pages
from .torchao_modes import (
    TORCHAO_ALIASES,
    TORCHAO_PRECISIONS,
    linear_targets,
    quantize_linears,
    refusal,
)

PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int4")
#: The modes that quantize weights: converting to them cannot be undone.
QUANTIZED = ("int8", "int4")
#: Every name :func:`resolve_precision` accepts: the modes above and the GPU (torchao) ones,
#: ``int8wo`` and ``fp8`` (:mod:`skmoe.engine.torchao_modes`), which cannot be undone either.
ALL_PRECISIONS = PRECISIONS + TORCHAO_PRECISIONS
IRREVERSIBLE = QUANTIZED + TORCHAO_PRECISIONS
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
            **TORCHAO_ALIASES}
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


# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA) at or above AVX512_CORE_BF16, where its bf16 kernels
# use the hardware; a lower cap makes them emulate bf16 even on a CPU that has it
_BF16_ISA_CAPS = frozenset({"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512",
                            "AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16",
                            "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT"})


def onednn_isa_cap() -> str | None:
    """The ISA cap the user set for oneDNN (``ONEDNN_MAX_CPU_ISA``, or its old name
    ``DNNL_MAX_CPU_ISA``), upper-cased; None when unset."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


def cpu_has_native_bf16() -> bool:
    """bf16 matmuls in hardware (AVX512-BF16 or AMX) that oneDNN may use; without them torch's
    CPU bf16 matmul is emulated (measured about 40x slower than fp32 on an AVX2 EPYC, and about
    5x slower on a Zen 4 with ``ONEDNN_MAX_CPU_ISA=AVX2``)."""
    cap = onednn_isa_cap()
    if cap is not None and cap not in _BF16_ISA_CAPS:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def int8_available() -> bool:
    """oneDNN's int8 linear (``torch.ops.onednn.qlinear_pointwise``) is present in this torch."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def supported_precisions(device: str | torch.device) -> tuple[str, ...]:
    """The built-in modes :func:`apply_precision` accepts on ``device`` without ``allow_slow``.

    The optional torchao modes (``int8wo``, ``fp8``; never measured on a GPU yet) are not listed,
    so that code and tests looping over a device's modes do not pick them up unasked; see
    :func:`~skmoe.engine.torchao_modes.torchao_modes_on`.
    """
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
    if name not in ALL_PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}; supported modes: {', '.join(ALL_PRECISIONS)} "
            f"(on {torch.device(device).type}: {', '.join(supported_precisions(device))})"
        )
    return name


def check_gpu_mode(precision: str | None, device: str | torch.device) -> None:
    """Raise ValueError if ``precision`` is a torchao mode (``int8wo``, ``fp8``) that cannot run
    on ``device`` (not CUDA, torchao missing, fp8 below compute capability 8.9), naming the fix;
    callers check before loading a model they would then have to convert."""
    mode = resolve_precision(precision, device)
    if mode in TORCHAO_PRECISIONS:
        why = refusal(mode, device)
        if why is not None:
            raise ValueError(f"Precision {mode!r} is not available on {torch.device(device).type}: "
                             f"{why}")


def precision_of(encoder: SentenceEncoder) -> str:
    """The mode an encoder runs in (its ``precision`` field, set by :func:`apply_precision`;
    else read off its dtype)."""
    mode = encoder.precision
    if mode is not None:
        return mode
    inverse = {v: k for k, v in _FLOAT_DTYPES.items()}
    return inverse.get(encoder.dtype, str(encoder.dtype))


def precision_label(mode: str | SentenceEncoder, *, group_size: int | None = None,
                    bits: int | None = None, rounding: str | None = None) -> str:
    """The precision part of a cache namespace: the mode, and for the quantized modes the
    method, bits and group size (``"int4/mse-asym-g32"``, ``"int8/rtn-sym-w8"``).

    Given an encoder, its own label (:func:`apply_precision` and the quantized-folder loader
    record it); given a mode, the label of converting to it here (int4 at ``group_size``, default
    32, with ``rounding``, default :data:`~skmoe.engine.int4.INT4_ROUNDING`; int8 at ``bits``,
    default this CPU's :func:`int8_weight_bits`).
    """
    if not isinstance(mode, str):
        return getattr(mode, "precision_detail", None) or precision_label(precision_of(mode))
    if mode == "int4":
        return f"int4/{rounding or INT4_ROUNDING}-asym-g{group_size or INT4_GROUP_SIZE}"
    if mode == "int8":
        return f"int8/rtn-sym-w{bits or int8_weight_bits()}"
    if mode == "int8wo":
        return "int8wo/torchao-w8-perchannel-bf16"
    if mode == "fp8":
        return "fp8/torchao-e4m3-perrow-bf16"
    return mode


def _release(modules: list[nn.Module]) -> None:
    """Hand back the pages of replaced modules' weights.

    Loaded weights are views of the memory-mapped checkpoint, which the fp32 embeddings keep
    mapped: without the release, the replaced fp32 weights would stay resident (measured on the
    full model: 2.2 GB RSS after int8 conversion instead of 1.1 GB).
    """
    release_file_pages([t for m in modules for t in (*m.parameters(), *m.buffers())])
    trim_heap()  # the conversion's temporaries (see trim_heap)


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


#: Converted bytes after which a float conversion hands the old tensors' pages back.
_RELEASE_EVERY = 256 << 20


def _converted(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``; a large contiguous tensor (the 0.77 GB fp32 word-embedding table) in
    slices of rows, each slice's mapped pages handed back once copied."""
    step = max(1, (32 << 20) // max(1, t[:1].nbytes)) if t.dim() else 0
    if t.nbytes < _RELEASE_EVERY // 4 or not t.is_contiguous() or step == 0 or t.device.type != "cpu":
        return t.to(dtype)  # off CPU (GPU, meta) nothing is memory-mapped: a plain cast, in place
    new = torch.empty(t.shape, dtype=dtype)
    for start in range(0, len(t), step):
        new[start : start + step] = t[start : start + step]
        release_file_pages([t[start : start + step]])
    return new


def _to_float(encoder: SentenceEncoder, dtype: torch.dtype) -> None:
    """Convert the backbone's float tensors to ``dtype`` (routers stay float32: the spec keeps
    router logits and softmax in fp32), tensor by tensor, handing back the pages of the replaced
    mapped weights every 256 MB: the peak is the new copy plus a slice of the old one, not both
    whole copies (measured on the full model: 3.5 GB before, see docs/performance.md)."""
    routers = {id(m) for m in router_modules(encoder.backbone)}
    done: dict[int, torch.Tensor] = {}  # shared tensors stay shared
    old: list[torch.Tensor] = []
    for module in encoder.backbone.modules():
        target = torch.float32 if id(module) in routers else dtype
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is None or not t.is_floating_point() or t.dtype == target:
                    continue
                if id(t) not in done:
                    new = _converted(t.detach(), target)
                    done[id(t)] = (nn.Parameter(new, requires_grad=t.requires_grad)
                                   if isinstance(t, nn.Parameter) else new)
                    old.append(t)
                store[name] = done[id(t)]
                if sum(o.nbytes for o in old) >= _RELEASE_EVERY:
                    release_file_pages(old)
                    old.clear()
                    trim_heap()
    release_file_pages(old)
    old.clear()
    trim_heap()


# --------------------------------------------------------------------------------------------
# The entry point


def apply_precision(
    encoder: SentenceEncoder, precision: str | None, *, allow_slow: bool = False,
    group_size: int = INT4_GROUP_SIZE, rounding: str = INT4_ROUNDING,
) -> SentenceEncoder:
    """Put ``encoder`` into a precision mode, **in place**, and return it.

    Parameters
    ----------
    encoder : SentenceEncoder
        A loaded encoder (normally fresh from ``load_encoder(..., dtype="float32")``).
    precision : {"float32", "bfloat16", "float16", "int8", "int4", "int8wo", "fp8"} or None
        ``None`` or ``"auto"``: :func:`DEFAULT_PRECISION` of the encoder's device. Aliases
        ``fp32``, ``bf16``, ``fp16``, ``int8-weight-only``, ``float8`` are accepted. ``int8wo``
        and ``fp8`` are CUDA modes through torchao (``pip install 'skmoe[torchao]'``; fp8 needs
        compute capability >= 8.9), not yet measured on a GPU by this project.
    allow_slow : bool, default=False
        Accept bfloat16 on a CPU without native bf16, and float16 on CPU: correct, but emulated
        and far slower than float32. Tests use it to check the numerics of the GPU modes on any
        machine.
    group_size : int, default=32
        int4 only: input channels sharing one scale (32, 64, 128 or 256; smaller is more
        accurate). Recorded in ``encoder.precision_detail`` (:func:`precision_label`), which
        the cache namespace holds.
    rounding : {"mse", "rtn"}, default="mse"
        int4 only: how each group's scale and offset are chosen
        (:func:`~skmoe.engine.int4.quantize_int4`): ``"mse"`` searches the grid with the least
        squared error, ``"rtn"`` takes the group's min and max (the method before 2026-12-03,
        2.4 points lower on SIB-200 with multilingual-e5-small, docs/performance.md). Recorded
        like ``group_size``.

    Returns
    -------
    SentenceEncoder
        The same object, converted; ``encoder.precision`` records the mode.

    Raises
    ------
    ValueError
        For an unknown mode, a mode this device does not run (int8 and int4 on GPU; int8wo and
        fp8 off CUDA, without torchao, or fp8 below compute capability 8.9; float16 on CPU and
        bfloat16 on a CPU without avx512_bf16/AMX, unless ``allow_slow``), or a conversion away
        from int8/int4/int8wo/fp8 (load the model again instead).
    """
    device = encoder.device
    mode = resolve_precision(precision, device)
    if mode == "int4":
        check_int4_rounding(rounding)  # before any conversion work
    current = precision_of(encoder)
    if current == mode:
        encoder.precision = mode
        return encoder
    if current in IRREVERSIBLE:
        raise ValueError(
            f"This encoder was quantized to {current}; it cannot become {mode}. Load the model "
            f"again."
        )
    if mode in TORCHAO_PRECISIONS:
        check_gpu_mode(mode, device)
        return to_torchao(encoder, mode)
    supported = supported_precisions(device)
    if mode not in supported:
        emulated = mode in ("bfloat16", "float16") and device.type == "cpu"
        if not (emulated and allow_slow):
            why = ""
            if mode in QUANTIZED and device.type != "cpu":
                why = (f" {mode} is a CPU mode (its kernels are CPU ones); on {device.type} use "
                       f"bfloat16 or float16 (or int8wo/fp8 through torchao).")
            elif mode == "bfloat16" and device.type == "cpu":
                lacks = ("This CPU lacks avx512_bf16/AMX" if onednn_isa_cap() is None else
                         f"ONEDNN_MAX_CPU_ISA={onednn_isa_cap()} keeps oneDNN below "
                         "AVX512_CORE_BF16 (or this CPU lacks avx512_bf16/AMX)")
                why = (f" {lacks}, so bf16 matmuls would be emulated, far slower than float32 "
                       "(use int8 for speed).")
            raise ValueError(
                f"Precision {mode!r} is not available on {device.type}; supported here: "
                f"{', '.join(supported)}.{why}"
            )
        warnings.warn(f"{mode} on this CPU is emulated and far slower than float32",
                      SlowPrecisionWarning, stacklevel=external_stacklevel())
    if mode in QUANTIZED:
        if current != "float32":
            encoder.backbone.float()
        if mode == "int8":
            _to_int8(encoder)
        else:
            to_int4(encoder.backbone, _declared_parts(encoder), group_size, rounding=rounding)
    else:
        _to_float(encoder, _FLOAT_DTYPES[mode])
    encoder.precision = mode
    encoder.precision_detail = precision_label(  # see precision_label
        mode, group_size=group_size, rounding=rounding)
    return encoder


def to_torchao(encoder: SentenceEncoder, mode: str) -> SentenceEncoder:
    """Convert ``encoder`` to a torchao mode (``"int8wo"``/``"fp8"``) in place, on whatever
    device it is on: bfloat16 first (routers stay fp32), then torchao's ``quantize_`` on the
    declared projections and dense MLPs (experts stay bf16; see :mod:`skmoe.engine.torchao_modes`).

    :func:`apply_precision` calls this on CUDA only, after checking the device and torchao;
    calling it directly skips those checks (the tests run ``int8wo`` on CPU this way).
    """
    if precision_of(encoder) != "bfloat16":
        if precision_of(encoder) != "float32":
            encoder.backbone.float()
        _to_float(encoder, torch.bfloat16)
    targets = linear_targets(encoder.backbone, _declared_parts(encoder))
    if quantize_linears(targets, mode) == 0:
        raise ValueError(f"{mode}: this model has no linear layers to quantize")
    encoder.precision = mode
    encoder.precision_detail = precision_label(mode)
    return encoder
