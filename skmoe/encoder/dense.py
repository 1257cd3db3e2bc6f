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
        use_safetensors=True, trust_remote_code=False, output_loading_info=True
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # we report problems ourselves, below
    hf_logging.disable_progress_bar()  # a 'Loading weights' bar per load is noise here
    try:
        try:
            model, info = AutoModel.from_pretrained(folder, add_pooling_layer=False, **kwargs)
        except TypeError:  # architectures without a pooler option
            model, info = AutoModel.from_pretrained(folder, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing:
        from .loading import CheckpointError

        raise CheckpointError(
            f"{folder}: checkpoint lacks tensor(s) the model needs: {', '.join(sorted(missing)[:5])}"
        )
    unexpected = [k for k in info.get("unexpected_keys", []) if "pooler" not in k]
    if unexpected:
        logging.getLogger(__name__).info("ignored unused tensors: %s", unexpected[:5])
    return DenseBackbone(model.float().eval())
