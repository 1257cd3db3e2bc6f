"""Typed configuration for the NomicBERT-MoE architecture, parsed from ``config.json``.

The field names are those of the checkpoint (``n_embd``, ``n_head``, ...). Fields whose value
would make this implementation compute a *different* model raise :class:`UnsupportedConfigError`
naming the field: a silently different model is worse than no model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class UnsupportedConfigError(ValueError):
    """A ``config.json`` field has a value this implementation does not support."""


# field -> (allowed check, human description of what is supported)
_SUPPORTED: dict[str, tuple[Any, str]] = {
    "prenorm": (lambda v: not v, "false (post-LayerNorm blocks)"),
    "rotary_emb_interleaved": (lambda v: not v, "false (rotate-half rotary)"),
    "expert_choice_router": (lambda v: not v, "false (token-choice routing)"),
    "num_shared_experts": (lambda v: not v, "0"),
    "causal": (lambda v: not v, "false (bidirectional encoder)"),
    "parallel_block": (lambda v: not v, "false"),
    "use_rms_norm": (lambda v: not v, "null/false (LayerNorm)"),
    "rotary_emb_scale_base": (lambda v: v is None, "null (no xPos scaling)"),
    "rotary_scaling_factor": (lambda v: v is None, "null (plain rotary, no NTK scaling)"),
    "activation_function": (lambda v: v in ("gelu",), "'gelu' (exact erf GELU)"),
    "type_vocab_size": (lambda v: v >= 1, ">= 1"),
    "add_pooling_layer": (lambda v: not v, "false"),
    "model_type": (lambda v: v == "nomic_bert", "'nomic_bert'"),
}


@dataclass(frozen=True)
class NomicMoEConfig:
    """The subset of a nomic_bert ``config.json`` that the forward pass reads.

    Parameters mirror the checkpoint's field names; see the architecture spec §1.
    """

    vocab_size: int = 250048
    n_embd: int = 768
    n_head: int = 12
    n_inner: int = 3072
    n_layer: int = 12
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_epsilon: float = 1e-5
    qkv_proj_bias: bool = True
    mlp_fc1_bias: bool = True
    mlp_fc2_bias: bool = True
    rotary_emb_fraction: float = 1.0
    rotary_emb_base: float = 10000.0
    num_experts: int = 0
    moe_top_k: int = 2
    moe_every_n_layers: int = 2
    moe_normalize_expert_weights: float | bool | None = False
    n_positions: int = 2048
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_emb_fraction)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, i: int) -> bool:
        """Layer ``i`` is MoE iff ``i % moe_every_n_layers == 1``, exactly as upstream.

        With the real value 2 that is layers 1, 3, 5, ... (layer 0 is dense); with 3 it is
        1, 4, 7, ...; upstream's rule makes ``moe_every_n_layers = 1`` an all-dense model.
        """
        n = self.moe_every_n_layers
        return self.is_moe and n > 0 and i % n == 1

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.n_layer) if self.is_moe_layer(i)]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NomicMoEConfig:
        """Validate and parse a ``config.json`` dictionary."""
        for name, (ok, supported) in _SUPPORTED.items():
            if name in raw and not ok(raw[name]):
                raise UnsupportedConfigError(
                    f"config.json field {name!r} = {raw[name]!r} is not supported; "
                    f"skmoe implements {name} = {supported}"
                )
        frac = raw.get("rotary_emb_fraction", 1.0)
        if not (0 < frac <= 1):
            raise UnsupportedConfigError(
                f"config.json field 'rotary_emb_fraction' = {frac!r} must be in (0, 1]"
            )
        if raw.get("n_embd", 768) % raw.get("n_head", 12):
            raise UnsupportedConfigError(
                "config.json field 'n_head' must divide 'n_embd' "
                f"(got n_embd={raw.get('n_embd')}, n_head={raw.get('n_head')})"
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: raw[k] for k in known if k in raw and raw[k] is not None}
        vocab = kwargs.get("vocab_size", cls.vocab_size)
        mult = raw.get("pad_vocab_size_multiple") or 1
        kwargs["vocab_size"] = ((vocab + mult - 1) // mult) * mult  # the model rounds up
        if kwargs.get("num_experts", 0) and kwargs.get("moe_top_k", 2) > kwargs["num_experts"]:
            raise UnsupportedConfigError(
                f"config.json field 'moe_top_k' = {kwargs['moe_top_k']} exceeds "
                f"'num_experts' = {kwargs['num_experts']}"
            )
        extra = {k: v for k, v in raw.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_file(cls, path: str | Path) -> NomicMoEConfig:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        out["model_type"] = "nomic_bert"
        return out


def is_nomic_moe_config(raw: dict[str, Any]) -> bool:
    """True for configs that must go to skmoe's native MoE model, never to ``AutoModel``."""
    return raw.get("model_type") == "nomic_bert" or "num_experts" in raw
