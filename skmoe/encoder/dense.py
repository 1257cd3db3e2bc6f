"""Dense transformers encoders (BERT / XLM-R family) behind the same call as the MoE model.

These are the baselines users compare against and the real small models the tests use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import is_nomic_moe_config


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


def load_dense(folder: Path, raw_config: dict[str, Any]) -> DenseBackbone:
    """Load with ``AutoModel`` from safetensors only, no remote code, strict about missing weights."""
    if is_nomic_moe_config(raw_config):
        # transformers >= 5 has a native dense `nomic_bert` class that loads MoE checkpoints as
        # garbage with only a warning (spec §10). Never hand it such a config.
        raise ValueError(
            f"{folder}: a nomic_bert / Mixture-of-Experts config must be loaded by skmoe's native "
            "model, not transformers.AutoModel"
        )
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
    return DenseBackbone(model.float().eval())


def check_loading_info(folder: Path, model: nn.Module, info: dict[str, Any]) -> None:
    """Refuse what would silently change the encoder; tolerate unused heads (pooler, MLM, ...).

    Missing or wrongly shaped tensors would be randomly initialised; unexpected tensors *inside*
    the backbone's own modules (say ``encoder.layer.9.*`` for a 6-layer config) mean the config
    does not describe the checkpoint. Extra heads of other tasks are ignored.
    """
    from .loading import CheckpointError

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
