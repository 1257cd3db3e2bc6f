"""The GPU quantized modes, through torchao: ``int8wo`` and ``fp8``.

========== ============================================================================ ==========
mode       what runs in it                                                              devices
========== ============================================================================ ==========
int8wo     torchao ``Int8WeightOnlyConfig``: attention projections and the dense MLP's  CUDA
           ``fc1``/``fc2`` with int8 weights (one scale per output channel) and bf16
           activations; everything else as bfloat16
fp8        torchao ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``: CUDA,
           the same matmuls as float8 e4m3 x e4m3, weights scaled per output channel,   compute
           activations per row (per token) at run time; everything else as bfloat16     capability
                                                                                        >= 8.9
========== ============================================================================ ==========

In both modes the **experts stay bfloat16**: they are one grouped matmul over stacked
``[E, F, H]`` weights (:class:`~skmoe.encoder.parts.ExpertKernel`), not ``nn.Linear`` layers, and
torchao's ``quantize_`` swaps only linear weights. The routers stay float32 (as in every mode),
and so do LayerNorms' statistics, rotary, softmax and pooling where the bf16 mode keeps them.
fp8 scales activations per row, not per tensor, so that a text's vector does not depend on its
batch-mates (the embedding cache's "same text, same vector").

**Status:** the conversion path runs on CPU for ``int8wo`` (tested: torchao's int8 weight-only
tensor has a CPU fallback); neither mode has yet been run on a GPU by this project. Measure with
``python benchmarks/gpu_bench.py`` on a CUDA machine (it adds both modes when torchao and, for
fp8, the hardware are present).

torchao is an optional dependency: ``pip install 'skmoe[torchao]'``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

#: The torchao modes, in the order they are listed.
TORCHAO_PRECISIONS = ("int8wo", "fp8")
#: Other spellings users write for them.
TORCHAO_ALIASES = {
    "int8-weight-only": "int8wo", "int8_weight_only": "int8wo", "int8-wo": "int8wo",
    "float8": "fp8", "fp8-dynamic": "fp8", "float8_e4m3": "fp8",
}
#: The oldest torchao these configs were written against (``Int8WeightOnlyConfig``,
#: ``Float8DynamicActivationFloat8WeightConfig`` and ``PerRow`` exported from
#: ``torchao.quantization``); checked here with 0.18.0 on torch 2.13.
TORCHAO_REQUIREMENT = "torchao>=0.10"
#: fp8 matmuls (``torch._scaled_mm``) need Ada/Hopper or newer.
FP8_MIN_CAPABILITY = (8, 9)
INSTALL_HINT = "pip install 'skmoe[torchao]'"


@functools.cache
def torchao_import_error() -> str | None:
    """Why torchao cannot be used here (``None`` when it imports with the names we need)."""
    try:
        from torchao.quantization import (  # noqa: F401
            Float8DynamicActivationFloat8WeightConfig,
            Int8WeightOnlyConfig,
            PerRow,
            quantize_,
        )
    except Exception as exc:  # ImportError, or a torchao built for another torch failing to load
        return f"{type(exc).__name__}: {exc}"
    return None


def torchao_available() -> bool:
    """torchao imports and offers the configs :func:`to_torchao` uses."""
    return torchao_import_error() is None


def cuda_capability(device: str | torch.device) -> tuple[int, int] | None:
    """The compute capability of a CUDA ``device`` (``None`` off CUDA or without a GPU)."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(dev)


def torchao_modes_on(device: str | torch.device) -> tuple[str, ...]:
    """The torchao modes :func:`refusal` lets through on ``device``."""
    return tuple(m for m in TORCHAO_PRECISIONS if refusal(m, device) is None)


def refusal(mode: str, device: str | torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` (a sentence naming the fix), or ``None`` if it can."""
    dev = torch.device(device)
    if dev.type != "cuda":
        if mode == "fp8":
            return (f"fp8 needs a CUDA GPU with compute capability >= 8.9 (H100/H200/L40S/RTX 4090); "
                    f"on {dev.type} use int8 or int4.")
        return (f"int8wo (torchao int8 weight-only) is a CUDA mode; on {dev.type} use int8 (int8 "
                f"activations too, faster there) or int4.")
    if not torchao_available():
        return (f"{mode} needs {TORCHAO_REQUIREMENT}, importable with this torch "
                f"{torch.__version__}: {INSTALL_HINT} ({torchao_import_error()}).")
    if mode == "fp8":
        cap = cuda_capability(dev)
        if cap is None or cap < FP8_MIN_CAPABILITY:
            got = "no CUDA device visible" if cap is None else f"this GPU has {cap[0]}.{cap[1]}"
            return (f"fp8 needs a CUDA GPU with compute capability >= 8.9 (H100/H200/L40S/RTX 4090); "
                    f"{got}. Use int8wo or bfloat16.")
    return None


def torchao_config(mode: str) -> Any:  # a torchao AOBaseConfig (optional import)
    """The torchao config of ``mode``; ``set_inductor_config=False``: no process-wide change to
    torch's inductor settings."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    if mode == "int8wo":
        return Int8WeightOnlyConfig(set_inductor_config=False)
    if mode == "fp8":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(),
                                                         set_inductor_config=False)
    raise ValueError(f"not a torchao mode: {mode!r} (these are {', '.join(TORCHAO_PRECISIONS)})")


def _is_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear)


def quantize_linears(modules: list[nn.Module], mode: str) -> int:
    """Apply torchao's ``quantize_`` for ``mode`` to every ``nn.Linear`` in ``modules`` (each
    may itself be one), in place; returns how many linears were quantized. The modules' float
    weights should already be bfloat16."""
    from torchao.quantization import quantize_

    config = torchao_config(mode)
    count = 0
    for module in modules:
        count += sum(isinstance(m, nn.Linear) for m in module.modules())
        quantize_(module, config, filter_fn=_is_linear)
    return count


def linear_targets(backbone: nn.Module, parts: list | None) -> list[nn.Module]:
    """What a torchao mode quantizes: the declared ``projection`` and ``feed_forward`` parts
    (:mod:`skmoe.encoder.parts`; experts and routers are left as they are), or, for a backbone
    that declares none (the dense transformers encoders), the whole backbone."""
    if parts is None:
        return [backbone]
    return [p.module for p in parts if p.kind in ("projection", "feed_forward")]
