"""Packed token batches: the real tokens of ``B`` texts back to back, ``[T]``, and ``cu_seqlens``
``[B+1]`` (int32, ``cu_seqlens[b]:cu_seqlens[b+1]`` are text ``b``'s tokens), as
text-embeddings-inference and FlashAttention's varlen kernels take them.

Everything here runs on the tensors' device without reading a value back to the host (no
``.item()``, ``nonzero`` or ``bool(tensor)``): the sizes it needs, ``T`` and ``max_seqlen``, are
shapes or host integers the caller already knows.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.compiler import is_compiling


def cu_seqlens_of(lengths: Sequence[int] | np.ndarray) -> torch.Tensor:
    """``[0, l0, l0+l1, ...]`` as an int32 CPU tensor (built on the host from known lengths)."""
    cu = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=cu[1:])
    return torch.from_numpy(cu.astype(np.int32))


def token_segments(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each packed token's text and position in it: ``(seg [T], pos [T])``, int64, on device."""
    t = torch.arange(total, device=cu_seqlens.device, dtype=torch.int64)
    cu = cu_seqlens.long()
    seg = torch.searchsorted(cu[1:], t, right=True)
    return seg, t - cu[seg]


def pad_index(cu_seqlens: torch.Tensor, total: int, max_seqlen: int) -> torch.Tensor:
    """Flat positions ``b * max_seqlen + s`` of the packed tokens in a ``[B, max_seqlen]`` layout."""
    seg, pos = token_segments(cu_seqlens, total)
    return seg * max_seqlen + pos


def to_padded(
    x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, fill: float = 0.0,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed ``[T, ...]`` -> right-padded ``[B, max_seqlen, ...]`` (``fill`` at padding)."""
    B = cu_seqlens.shape[0] - 1
    if index is None:
        index = pad_index(cu_seqlens, x.shape[0], max_seqlen)
    out = x.new_full((B * max_seqlen, *x.shape[1:]), fill)
    out.index_copy_(0, index, x)
    return out.view(B, max_seqlen, *x.shape[1:])


def key_padding_mask(cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
    """Bool ``[B, max_seqlen]``: True at real tokens of the right-padded layout."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.arange(max_seqlen, device=cu_seqlens.device) < lengths[:, None]


def pack_padded(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """A padded batch (any padding side) -> ``(ids [T], cu_seqlens, max_seqlen, index)``, where
    ``index`` [T] holds each real token's flat position in the ``[B, S]`` input. Reads the mask
    back to the host (``nonzero``): for the convenience path, not the engine's."""
    mask = attention_mask.bool()
    B, S = mask.shape
    index = mask.reshape(-1).nonzero().squeeze(1)
    cu = torch.zeros(B + 1, dtype=torch.int32, device=mask.device)
    cu[1:] = mask.sum(1).cumsum(0)
    return input_ids.reshape(-1)[index], cu, S, index


# --------------------------------------------------------------------------------------------
# Attention over packed tokens

ATTENTION_BACKENDS = ("auto", "runs", "varlen", "padded")


#: The varlen kernel, resolved on first use and kept: every attention call asks for it, and the
#: lookup (imports, a signature check) is neither free nor something torch.compile should trace.
_VARLEN_KERNEL: list[Callable[..., torch.Tensor] | None] = []


def _varlen_kernel() -> Callable[..., torch.Tensor] | None:
    """torch's FlashAttention varlen entry point, else flash-attn's, else None (looked up once)."""
    if not _VARLEN_KERNEL:
        _VARLEN_KERNEL.append(_find_varlen_kernel())
    return _VARLEN_KERNEL[0]


def _find_varlen_kernel() -> Callable[..., torch.Tensor] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn

        # one split makes it batch-invariant; torch < 2.13 has no ``num_splits`` (one split there)
        if "num_splits" in inspect.signature(varlen_attn).parameters:
            return functools.partial(varlen_attn, num_splits=1)
        return varlen_attn
    except ImportError:
        pass
    try:  # pragma: no cover - optional package
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func  # pragma: no cover


def attention_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend ``requested`` resolves to for inputs on ``device`` in ``dtype``."""
    if requested == "packed":  # the former name of "runs"
        requested = "runs"
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention {requested!r}; expected one of {ATTENTION_BACKENDS}")
    if requested != "auto":
        return requested
    if device.type == "cpu":
        return "runs"
    flash_ok = device.type in ("cuda", "meta") and dtype in (torch.float16, torch.bfloat16)
    return "varlen" if flash_ok and _varlen_kernel() is not None else "padded"


def _equal_length_runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """Runs of consecutive texts with the same (non-zero) length: (first token, rows, length)."""
    runs: list[tuple[int, int, int]] = []
    token = 0
    for length in lengths:
        if length and runs and runs[-1][2] == length:
            start, rows, _ = runs[-1]
            runs[-1] = (start, rows + 1, length)
        elif length:
            runs.append((token, 1, length))
        token += length
    return runs


@dataclass
class PackedBatch:
    """What every layer needs to know about one packed batch, built once per forward.

    ``cos``/``sin`` are each token's rotary table ``[T, 1, rotary_dim/2]``; ``backend`` the
    attention kernel: ``"runs"`` (``runs`` lists ``(first token, rows, length)`` of consecutive
    equal-length texts, read from ``cu_seqlens`` on the host: CPU only), ``"varlen"``
    (FlashAttention varlen on the packed tokens, one split so that a text's result does not depend
    on its batch-mates) or ``"padded"`` (SDPA on a ``[B, max_seqlen]`` layout scattered on the
    device, with a key padding mask).
    """

    cu_seqlens: torch.Tensor
    max_seqlen: int
    cos: torch.Tensor
    sin: torch.Tensor
    backend: str
    runs: list[tuple[int, int, int]] | None = None
    freqs: torch.Tensor | None = None  # CPU float32: cos + i sin, for the in-place complex rotary
    index: torch.Tensor | None = None  # padded: flat [B * max_seqlen] position of each token
    key_mask: torch.Tensor | None = None  # padded: bool [B, 1, 1, max_seqlen], True = real

    @classmethod
    def build(
        cls, cu_seqlens: torch.Tensor, max_seqlen: int, total: int, dtype: torch.dtype,
        attention: str, rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> PackedBatch:
        """``rotary(positions)`` -> ``(cos, sin)`` per token (the model's own rotary tables)."""
        backend = attention_backend(attention, cu_seqlens.device, dtype)
        seg, pos = token_segments(cu_seqlens, total)
        cos, sin = rotary(pos)
        batch = cls(cu_seqlens, int(max_seqlen), cos, sin, backend)
        if cu_seqlens.device.type == "cpu" and dtype == torch.float32 and not is_compiling():
            batch.freqs = torch.complex(cos, sin)
        if backend == "runs":
            if cu_seqlens.device.type != "cpu":
                raise ValueError("attention='runs' reads the lengths on the host: CPU only")
            batch.runs = _equal_length_runs((cu_seqlens[1:] - cu_seqlens[:-1]).tolist())
        elif backend == "padded":
            batch.index = seg * max_seqlen + pos
            batch.key_mask = key_padding_mask(cu_seqlens, max_seqlen)[:, None, None, :]
        return batch

    def attend(self, qkv: torch.Tensor, n_head: int, head_dim: int) -> torch.Tensor:
        """Packed ``qkv`` [T, 3 * NH * Dh] (q, k rotated) -> attention output [T, NH * Dh]."""
        if self.backend == "runs":
            return _attend_runs(qkv, self.runs or [], n_head, head_dim)
        T = qkv.shape[0]
        if self.backend == "varlen":
            q, k, v = qkv.view(T, 3, n_head, head_dim).unbind(1)
            kernel = _varlen_kernel()
            if kernel is None:
                raise RuntimeError("attention='varlen' needs torch.nn.attention.varlen or flash-attn")
            cu, S = self.cu_seqlens, self.max_seqlen
            return kernel(q, k, v, cu, cu, S, S).reshape(T, n_head * head_dim)
        B, S = self.cu_seqlens.shape[0] - 1, self.max_seqlen
        padded = to_padded(qkv, self.cu_seqlens, S, index=self.index)
        q, k, v = padded.unflatten(-1, (3, n_head, head_dim)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.key_mask)  # [B, NH, S, Dh]
        return out.transpose(1, 2).reshape(B * S, n_head * head_dim).index_select(0, self.index)


def _attend_runs(
    qkv: torch.Tensor, runs: list[tuple[int, int, int]], n_head: int, head_dim: int
) -> torch.Tensor:
    """Attention per run of consecutive equal-length texts, straight on the packed tokens.

    No padding is built or computed, and each text's result depends on that text alone (the same
    shapes whatever its batch-mates), which keeps int8 embeddings batch-independent. Written as
    two batched matmuls and a softmax: for the short rows of sentence embedding this is 1.3-2x
    faster than CPU SDPA's flash kernel (whose blocking is made for long sequences) and equal to
    it within float rounding.
    """
    T = qkv.shape[0]
    NH, Dh = n_head, head_dim
    scale = Dh**-0.5
    out = qkv.new_empty(T, NH * Dh)
    for start, rows, length in runs:
        stop = start + rows * length
        q, k, v = qkv[start:stop].view(rows, length, 3, NH, Dh).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)  # [rows, NH, L, L]
        o = torch.matmul(scores.softmax(dim=-1), v)  # [rows, NH, L, Dh]
        out[start:stop].view(rows, length, NH, Dh).copy_(o.transpose(1, 2))
    return out
