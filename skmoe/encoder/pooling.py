"""Pooling of token states into one vector per text (before truncation and normalisation)."""

from __future__ import annotations

import torch

from .packing import pad_index, to_padded


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool ``hidden`` [B, S, H] over real tokens (``mask`` [B, S] 1 = real) in fp32.

    ``mean`` averages every real position, prompt and special tokens included (the
    sentence-transformers ``include_prompt=True`` recipe of the model card).
    """
    h = hidden.float()
    m = mask.to(h.dtype).unsqueeze(-1)
    if mode == "mean":
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return h.masked_fill(m == 0, float("-inf")).amax(1)
    raise ValueError(f"unknown pooling mode {mode!r}; expected 'mean', 'cls' or 'max'")


def pool_packed(
    hidden: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, mode: str = "mean"
) -> torch.Tensor:
    """Pool packed states ``hidden`` [T, H] per text (``cu_seqlens`` [B+1]) in fp32 -> [B, H].

    Same recipe as :func:`pool`, on the device without a host sync and without atomics: the
    states are laid out ``[B, max_seqlen, H]`` (padding: zeros, or -inf for ``max``) and reduced
    over the sequence axis, so a text's vector depends on its own tokens only.
    """
    if mode == "cls":
        return hidden[cu_seqlens[:-1].long()].float()
    if mode not in ("mean", "max"):
        raise ValueError(f"unknown pooling mode {mode!r}; expected 'mean', 'cls' or 'max'")
    h = hidden.float()
    index = pad_index(cu_seqlens, h.shape[0], max_seqlen)
    if mode == "max":
        return to_padded(h, cu_seqlens, max_seqlen, float("-inf"), index).amax(1)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(h.dtype).clamp(min=1e-9)
    return to_padded(h, cu_seqlens, max_seqlen, 0.0, index).sum(1) / lengths[:, None]

