"""Pooling of token states into one vector per text (before truncation and normalisation)."""

from __future__ import annotations

import torch


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


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return torch.nn.functional.normalize(x, p=2.0, dim=-1, eps=eps)
