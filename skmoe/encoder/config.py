"""Typed configuration for the NomicBERT-MoE architecture, parsed from ``config.json``.

The field names are those of the checkpoint (``n_embd``, ``n_head``, ...). Fields whose value
would make this implementation compute a *different* model raise :class:`UnsupportedConfigError`
naming the field: a silently different model is worse than no model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn


class UnsupportedConfigError(ValueError):
    """A ``config.json`` field has a value this implementation does not support."""


# Upstream's encoder blocks run exact erf GELU for every non-gated activation name: the name only
# picks the approximation in the (absent) MLM head. Gated names (glu, swiglu, geglu) change the MLP.
_GELU_NAMES = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")

# field -> (allowed check, human description of what is supported). Checked on the value the
# upstream code would see, i.e. after filling absent fields with upstream's defaults.
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
    "rotary_head_dim": (lambda v: not v, "false"),
    "activation_function": (lambda v: v in _GELU_NAMES, f"one of {_GELU_NAMES} (exact erf GELU)"),
    "type_vocab_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "add_pooling_layer": (lambda v: not v, "false"),
    "model_type": (lambda v: v == "nomic_bert", "'nomic_bert'"),
    "moe_top_k": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "num_experts": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "moe_every_n_layers": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "moe_normalize_expert_weights": (
        lambda v: v is None or v is False or (isinstance(v, (int, float)) and v > 0),
        "false/null (no renormalisation) or a positive number q (divide by the q-norm)",
    ),
}

# Integer sizes: (smallest, largest) accepted. The upper bounds are far beyond any released
# encoder and keep a typo (``n_layer: 100000``) from building modules for minutes, or a size from
# asking for terabytes, before the checkpoint is compared with the config.
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 24),
    "n_embd": (1, 1 << 16),
    "n_head": (1, 1024),
    "n_layer": (1, 1024),
    "n_inner": (1, 1 << 20),
    "n_positions": (1, 1 << 20),
    "type_vocab_size": (1, 1024),
    "num_experts": (0, 1024),
    "moe_top_k": (1, 1024),
    "moe_every_n_layers": (0, 1024),
    "pad_vocab_size_multiple": (0, 1 << 16),
}
_POSITIVE_FLOATS = ("layer_norm_epsilon", "rotary_emb_base")

# What upstream (NomicBertConfig on top of GPT2Config) assumes when config.json omits a field.
# Several differ from the released model's values, so an absent field must not silently take the
# released value: it takes upstream's, and the checks above then accept or reject it.
_UPSTREAM_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_inner": None,  # -> 4 * n_embd
    "type_vocab_size": 2,
    "layer_norm_epsilon": 1e-5,
    "rotary_emb_fraction": 0.0,  # learned absolute positions: rejected below
    "rotary_emb_base": 1000,
    "activation_function": "gelu_new",
    "moe_every_n_layers": 0,
    "num_experts": 0,
    "moe_normalize_expert_weights": None,
    "pad_vocab_size_multiple": 1,
}


@dataclass(frozen=True)
class NomicMoEConfig:
    """The subset of a nomic_bert ``config.json`` that the forward pass reads.

    Parameters mirror the checkpoint's field names; see the architecture spec §1. The dataclass
    defaults are the released nomic-embed-text-v2-moe values (``NomicMoEConfig()`` is that
    model); :meth:`from_dict` fills absent fields with upstream's defaults instead.

    ``moe_normalize_expert_weights`` false/null keeps the top-k softmax weights as they are (the
    released model); a number q divides them by their q-norm, as megablocks' dMoE (the training
    code and upstream's optional fast path) does. Upstream's pure-torch fallback ignores the field.
    ``rotary_scaling_factor`` absent is read as null; upstream's default (1.0, dynamic NTK) only
    differs beyond ``max_trained_positions`` (2048) positions.
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
    num_experts: int = 8
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
        """Validate and parse a ``config.json`` dictionary.

        Absent fields take the defaults of the upstream ``NomicBertConfig`` (not the released
        model's values). Raises :class:`UnsupportedConfigError` naming the first field whose
        value would make skmoe compute a different model than upstream.
        """
        if not isinstance(raw, dict):
            raise UnsupportedConfigError(f"config.json must be a JSON object, got {type(raw).__name__}")
        full = {**_UPSTREAM_DEFAULTS, **raw}
        _check_numbers(full)
        for name, (ok, supported) in _SUPPORTED.items():
            if name in full and not ok(full[name]):
                _unsupported(name, full[name], f"skmoe implements {name} = {supported}")
        frac = full["rotary_emb_fraction"]
        if not (isinstance(frac, (int, float)) and 0 < frac <= 1):
            _unsupported("rotary_emb_fraction", frac, "it must be in (0, 1] (rotary positions)")
        if full["n_embd"] % full["n_head"]:
            _unsupported("n_head", full["n_head"], f"it must divide n_embd = {full['n_embd']}")
        head_dim = full["n_embd"] // full["n_head"]
        if int(head_dim * frac) % 2:
            _unsupported("rotary_emb_fraction", frac, f"head_dim * fraction must be even (head_dim {head_dim})")
        if full.get("num_heads_kv") not in (None, full["n_head"]):
            _unsupported("num_heads_kv", full["num_heads_kv"], "skmoe implements num_heads_kv = n_head")
        if full["num_experts"] and full["moe_every_n_layers"] and "moe_top_k" not in full:
            _unsupported("moe_top_k", None, "it is required when num_experts > 0")
        if full["num_experts"] and full.get("moe_top_k", 0) > full["num_experts"]:
            _unsupported("moe_top_k", full["moe_top_k"], f"it exceeds num_experts = {full['num_experts']}")
        if full["n_inner"] is None:
            full["n_inner"] = 4 * full["n_embd"]  # upstream's MLP default width
        if full["moe_normalize_expert_weights"] is True:
            full["moe_normalize_expert_weights"] = 1.0  # JSON true = L1 (sum) renormalisation
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: full[k] for k in known if k in full and full[k] is not None}
        mult = full["pad_vocab_size_multiple"] or 1
        kwargs["vocab_size"] = -(-kwargs["vocab_size"] // mult) * mult  # the model rounds up
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


def _check_numbers(full: dict[str, Any]) -> None:
    """Sizes are integers in :data:`_INT_BOUNDS`, epsilons and bases positive numbers."""
    for name, (low, high) in _INT_BOUNDS.items():
        value = full.get(name)
        if value is None and name in ("n_inner", "moe_top_k", "pad_vocab_size_multiple"):
            continue  # optional: a default applies
        if isinstance(value, bool) or not isinstance(value, int):
            _unsupported(name, value, "it must be an integer")
        if not low <= value <= high:
            _unsupported(name, value, f"it must be between {low} and {high:,}")
    for name in _POSITIVE_FLOATS:
        value = full.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            _unsupported(name, value, "it must be a positive number")


def _unsupported(name: str, value: Any, why: str) -> NoReturn:
    raise UnsupportedConfigError(f"config.json field {name!r} = {value!r} is not supported: {why}")


def is_nomic_moe_config(raw: dict[str, Any]) -> bool:
    """True for configs that must go to skmoe's native MoE model, never to ``AutoModel``."""
    return raw.get("model_type") == "nomic_bert" or "num_experts" in raw
