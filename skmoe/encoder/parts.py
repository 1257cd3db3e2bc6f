"""The replaceable parts of the MoE encoder, declared: what a precision mode may swap, and the
contract each replacement must keep. Plus the one exact-GELU helper every kernel uses.

A precision mode (:mod:`skmoe.engine.precision`) asks the model for
:meth:`~skmoe.encoder.nomic_moe.NomicMoEModel.replaceable_parts` and swaps them with
:meth:`~skmoe.encoder.nomic_moe.NomicMoEModel.replace_part`; it never names the model's private
classes, so renaming one cannot break a mode at run time. The kinds:

``"projection"``
    An ``nn.Linear`` (attention's ``Wqkv`` and ``out_proj``). A replacement maps ``[N, in]`` to
    ``[N, out]``.
``"feed_forward"``
    A dense MLP with ``nn.Linear`` attributes ``fc1`` and ``fc2`` (``fc2(gelu(fc1(x)))``). A
    replacement maps ``[N, H]`` to ``[N, H]``.
``"experts"``
    The experts of one MoE layer, an :class:`ExpertKernel`; they also offer
    ``expert_weights()`` (see :class:`ExpertWeightsSource`) to build a replacement from.
``"router"``
    An ``nn.Linear`` whose logits decide routing: it stays float32 in every mode (near-ties flip
    experts in low precision). Listed so that modes can keep it so, never to be replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Part:
    """One replaceable submodule: its dotted ``name`` under the model, its ``kind``, the module."""

    name: str
    kind: str
    module: nn.Module


@runtime_checkable
class ExpertKernel(Protocol):
    """What an MoE layer calls to run its experts.

    ``grouped(x, token_of, offsets)``: ``x`` [T, H] are the layer's tokens; slot ``i`` of the
    result is token ``token_of[i]`` run through its expert, unweighted and without the bias. Slots
    are grouped by expert: expert ``e`` owns slots ``offsets[e-1]:offsets[e]`` (``offsets`` [E],
    int32, on ``x``'s device, cumulative ends; an expert may own none). Returns ``[len(token_of),
    H]``. ``bias`` [H] is the one output bias shared by all experts, added once per token.
    """

    bias: torch.Tensor

    def grouped(self, x: torch.Tensor, token_of: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ...


@runtime_checkable
class ExpertWeightsSource(Protocol):
    """The float experts: ``expert_weights()`` -> ``(up [E, F, H], down [E, H, F])``, both as
    ``out x in`` matrices (views of the stored weights), plus the shared ``bias`` [H]."""

    bias: torch.Tensor

    def expert_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def router_modules(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's declared routers (none when it declares no parts): they stay float32."""
    declare = getattr(backbone, "replaceable_parts", None)
    return [p.module for p in declare() if p.kind == "router"] if callable(declare) else []


def cast_floats(backbone: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``backbone``'s float tensors to ``dtype`` in place, its routers kept float32 (their
    logits decide routing; the spec keeps them, and their softmax, in fp32): the same tensors as
    :func:`skmoe.engine.precision.apply_precision` gives from float32."""
    if dtype == torch.float32:  # the loaded weights already are (nothing rewritten)
        return backbone.float()
    routers = router_modules(backbone)
    kept = [{k: v.clone() for k, v in m.state_dict().items()} for m in routers]
    backbone.to(dtype)
    for module, state in zip(routers, kept, strict=True):
        module.float().load_state_dict(state)
    return backbone


# --------------------------------------------------------------------------------------------
# Exact GELU

#: Rows per oneDNN GELU call on CPU: whole slices of ``GELU_ROWS`` rows, then (for callers that
#: pad their rows to it, as int8 does) slices of ``GELU_ALIGN`` rows: two shapes at most.
GELU_ROWS = 256
GELU_ALIGN = 64


def gelu_(x: torch.Tensor, align: int = GELU_ROWS) -> torch.Tensor:
    """Exact (erf) GELU of a fresh 2-d ``x`` (a matmul's output), in place on CPU float32.

    On CPU, ``F.gelu`` hands contiguous fp32 input to a oneDNN primitive that is JIT-compiled and
    cached *per shape*: fed every batch's and every expert's row count, the cache grows the
    process by tens of MB per thousand texts. So rows go through oneDNN in place in slices of
    ``GELU_ROWS`` rows, then, with ``align=GELU_ALIGN``, of ``GELU_ALIGN`` rows (two shapes), and
    the last ``< align`` rows through torch's own kernel on a transposed view (not contiguous,
    so oneDNN is not used; it caches nothing). The float paths keep ``align=GELU_ROWS``, the
    slicing their vectors were first computed with (one oneDNN shape); int8 pads its rows to
    ``GELU_ALIGN`` and passes it, so its rows never reach torch's kernel. Elsewhere (GPU, other
    dtypes): ``F.gelu``.
    """
    if (x.device.type != "cpu" or x.dim() != 2 or x.dtype != torch.float32
            or not x.is_contiguous() or torch.compiler.is_compiling()):
        return F.gelu(x)
    n, start = x.shape[0], 0
    while n - start >= align:
        rows = GELU_ROWS if n - start >= GELU_ROWS else align
        part = x[start : start + rows]
        torch._C._nn.gelu(part, out=part)
        start += rows
    if start < n:
        tail = x[start:]
        tail.copy_(F.gelu(tail.t()).t())
    return x
