"""Dense transformers encoders (BERT / XLM-R family) behind the same call as the MoE model.

These are the baselines users compare against and the real small models the tests use.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, check_finite_tensors, compare_with_header
from .config import UnsupportedConfigError, is_nomic_moe_config

# Sizes beyond these are not an encoder skmoe can run on one machine: refused before anything
# is built (a 1e9-row vocabulary would ask for 768 GB before the checkpoint is even opened).
_DENSE_BOUNDS = {
    "vocab_size": 1 << 24, "hidden_size": 1 << 16, "num_hidden_layers": 1024,
    "num_attention_heads": 1024, "intermediate_size": 1 << 20,
    "max_position_embeddings": 1 << 20, "type_vocab_size": 1024,
}
_DECODER_ARCHITECTURE = re.compile(r"(CausalLM|LMHeadModel|ForConditionalGeneration)$")


class DenseBackbone(nn.Module):
    """Wraps a ``transformers`` encoder so that ``module(ids, mask)`` returns ``[B, S, H]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def check_dense_config(folder: Path, raw: dict[str, Any]) -> None:
    """Refuse what cannot be an encoder skmoe runs: decoders, absurd sizes, unknown activations."""
    path = folder / "config.json"

    def refuse(name: str, why: str) -> None:
        raise UnsupportedConfigError(f"{path}: field {name!r} = {raw.get(name)!r} is not "
                                     f"supported: {why}")

    if raw.get("is_decoder"):
        refuse("is_decoder", "skmoe embeds with bidirectional encoders; a decoder (causal "
                             "attention) gives different vectors")
    decoders = [a for a in raw.get("architectures") or [] if isinstance(a, str)
                and _DECODER_ARCHITECTURE.search(a)]
    if decoders:
        refuse("architectures", f"{decoders[0]} is a decoder/generation model, not an encoder")
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = raw.get("model_type")
    auto_map = raw.get("auto_map")
    custom = auto_map.get("AutoModel") if isinstance(auto_map, dict) else None
    if custom:  # its tensors may well fit the stock class, which then computes another model
        refuse("auto_map", f"the model's own code ({custom}) computes it, and skmoe runs no code "
                           f"from a model folder; the stock {model_type!r} class would load its "
                           "tensors and give other vectors")
    if (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        refuse("model_type", "a decoder-only architecture, not an encoder")
    for name, bound in _DENSE_BOUNDS.items():
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            refuse(name, "it must be a positive integer")
        if value > bound:
            refuse(name, f"it exceeds {bound:,}, beyond any encoder skmoe can run")
    heads, hidden = raw.get("num_attention_heads"), raw.get("hidden_size")
    if heads and hidden and hidden % heads:
        refuse("num_attention_heads", f"it must divide hidden_size = {hidden}")
    act = raw.get("hidden_act")
    if isinstance(act, str):
        from transformers.activations import ACT2CLS

        if act not in ACT2CLS:
            refuse("hidden_act", f"unknown activation; known: {', '.join(sorted(ACT2CLS))}")


def _skeleton(folder: Path) -> nn.Module:
    """The model ``from_pretrained`` would build, on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise CheckpointError(f"{folder / 'config.json'} cannot be read by transformers "
                              f"({type(exc).__name__}: {exc})") from None
    with torch.device("meta"):
        try:
            return AutoModel.from_config(config, add_pooling_layer=False)
        except TypeError:  # architectures without a pooler option
            return AutoModel.from_config(config)


def load_dense(
    folder: Path, raw_config: dict[str, Any],
    header: dict[str, tuple[str, tuple[int, ...], Path]] | None = None,
) -> DenseBackbone:
    """Load with ``AutoModel`` from safetensors only, no remote code, strict about missing weights.

    With the checkpoint's ``header`` (:func:`.checkpoint.read_headers`), every tensor's shape and
    dtype is compared with the model built on ``meta`` first, so a config that disagrees with its
    weights is refused before its sizes are allocated. Weights holding NaN/inf are refused.
    """
    if is_nomic_moe_config(raw_config):
        # transformers >= 5 has a native dense `nomic_bert` class that loads MoE checkpoints as
        # garbage with only a warning (spec §10). Never hand it such a config.
        raise ValueError(
            f"{folder}: a nomic_bert / Mixture-of-Experts config must be loaded by skmoe's native "
            "model, not transformers.AutoModel"
        )
    check_dense_config(folder, raw_config)
    if header is not None:
        skeleton = _skeleton(folder)
        expected = skeleton.state_dict()
        prefix = getattr(skeleton, "base_model_prefix", "")
        rename = {k: f"{prefix}.{k}" for k in expected if k not in header and f"{prefix}.{k}" in header}
        if not any(rename.get(k, k) in header for k in expected):
            raise CheckpointError(f"{folder}: none of the checkpoint's tensors belongs to the "
                                  f"{type(skeleton).__name__} its config.json describes")
        compare_with_header(expected, header, folder, strict=False, rename=rename)
        del skeleton, expected
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = dict(
        use_safetensors=True,
        trust_remote_code=False,
        output_loading_info=True,
        ignore_mismatched_sizes=True,  # reported below as a CheckpointError, with the names
    )
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # we report problems ourselves, below
    hf_logging.disable_progress_bar()  # no per-load weight bar on stderr
    try:
        try:
            model, info = AutoModel.from_pretrained(folder, add_pooling_layer=False, **kwargs)
        except TypeError:  # architectures without a pooler option
            model, info = AutoModel.from_pretrained(folder, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    check_loading_info(folder, model, info)
    check_finite_tensors(model.named_parameters(), folder)
    return DenseBackbone(model.float().eval())


def check_loading_info(folder: Path, model: nn.Module, info: dict[str, Any]) -> None:
    """Refuse what would silently change the encoder; tolerate unused heads (pooler, MLM, ...).

    Missing or wrongly shaped tensors would be randomly initialised; unexpected tensors *inside*
    the backbone's own modules (say ``encoder.layer.9.*`` for a 6-layer config) mean the config
    does not describe the checkpoint. Extra heads of other tasks are ignored.
    """
    problems = []
    missing = sorted(k for k in info.get("missing_keys", []) if "pooler" not in k)
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing[:5])}")
    mismatched = sorted(info.get("mismatched_keys", []), key=str)
    if mismatched:
        shown = [
            f"{m[0]}: checkpoint {tuple(m[1])} vs model {tuple(m[2])}"
            if isinstance(m, (tuple, list)) and len(m) == 3 else str(m)
            for m in mismatched[:5]
        ]
        problems.append("wrong shape: " + "; ".join(shown))
    own = {name for name, _ in model.named_children()} - {"pooler"}
    unexpected = sorted(info.get("unexpected_keys", []))
    inside = [k for k in unexpected if k.split(".", 1)[0] in own]
    if inside:
        problems.append(f"unexpected tensor(s): {', '.join(inside[:5])}")
    if problems:
        raise CheckpointError(f"{folder}: checkpoint does not match its config.json: " + " | ".join(problems))
    ignored = [k for k in unexpected if k not in inside]
    if ignored:
        logging.getLogger(__name__).info("ignored tensors of other heads: %s", ignored[:5])
