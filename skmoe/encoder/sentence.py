"""A loaded sentence encoder: backbone + tokenizer + prompts + pooling (+ the sentence-transformers
Dense / Normalize modules after it), and ``load_encoder``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import NomicMoEConfig
from .loading import (
    ModelSource,
    embedding_rows,
    load_backbone,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    weights_fingerprint,
)
from .nomic_moe import NomicMoEModel
from .packing import key_padding_mask, pad_index, to_padded
from .parts import cast_floats
from .pooling import pool, pool_packed
from .st_modules import SentenceHead, load_head, read_pipeline
from .tokenization import UnknownPromptError as UnknownPromptError  # its public home since round 1
from .tokenization import (
    load_max_length,
    load_model_tokenizer,
    load_prompts,
    prompt_from_table,
    tokenize,
)


class SentenceEncoder(nn.Module):
    """A backbone plus what turns texts into vectors with it.

    :meth:`forward_packed` ``(input_ids [T], cu_seqlens [B+1], max_seqlen)`` returns the last
    hidden states of packed tokens ``[T, H]`` (the engine's entry point; dense transformers
    backbones pad internally behind it); ``encoder(input_ids, attention_mask)`` those of a padded
    batch ``[B, S, H]`` (zeros at padded positions for the MoE model). :meth:`tokenize`,
    :meth:`pool_packed`/:meth:`pool` and :meth:`resolve_prompt` are the other steps of the
    sentence-embedding recipe; the engine strings them together.

    ``head`` holds the sentence-transformers ``Dense`` / ``Normalize`` modules that follow
    pooling in the model's ``modules.json`` (:mod:`.st_modules`); the pooled vectors go through
    it in float32, so :attr:`embedding_dim` is its output width (``Dense.out_features``) and
    :attr:`hidden_size` the width of the token states.

    ``precision`` is the arithmetic mode the encoder runs in (``None``: plain floats of its
    dtype); :func:`skmoe.engine.precision.apply_precision` sets it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        source: ModelSource,
        tokenizer: Any | None,
        prompts: dict[str, str],
        default_prompt_name: str | None,
        pooling: str,
        max_length: int,
        config: dict[str, Any],
        head: SentenceHead | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.source = source
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.default_prompt_name = default_prompt_name
        self.pooling = pooling
        self.max_length = max_length
        self.raw_config = config
        self.head = head
        self.precision: str | None = None

    # -- what the model is ----------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return isinstance(self.backbone, NomicMoEModel)

    @property
    def moe_config(self) -> NomicMoEConfig | None:
        return self.backbone.config if self.is_moe else None

    @property
    def embedding_dim(self) -> int:
        """Width of the vectors: the last Dense module's ``out_features``, else the hidden size."""
        return int(self.head.out_features) if self.head is not None else self.hidden_size

    @property
    def hidden_size(self) -> int:
        """Width of the token states (what pooling averages, before any Dense module)."""
        return int(self.backbone.hidden_size)

    @property
    def modules_description(self) -> str:
        """The sentence recipe, e.g. ``mean pooling -> Dense 768->256 Tanh -> Normalize``."""
        head = f" -> {self.head.describe()}" if self.head is not None else ""
        return f"{self.pooling} pooling{head}"

    @property
    def recipe(self) -> str:
        """What a pooled vector means, for cache keys: the pooling mode alone when nothing follows
        it (so those keys never change), else the whole recipe with the Dense/Normalize modules."""
        return self.pooling if self.head is None else self.modules_description

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    # -- the recipe -----------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.backbone(input_ids, attention_mask)

    def forward_packed(
        self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of packed tokens (text ``b``: ``cu_seqlens[b]:cu_seqlens[b+1]``).

        Backbones without a packed entry point (the dense transformers encoders) get a
        right-padded batch built on the device and their real tokens' states are gathered back.
        """
        packed = getattr(self.backbone, "forward_packed", None)
        if packed is not None:
            return packed(input_ids, cu_seqlens, max_seqlen)
        index = pad_index(cu_seqlens, input_ids.shape[0], max_seqlen)
        ids = to_padded(input_ids, cu_seqlens, max_seqlen, fill=self.pad_token_id, index=index)
        mask = key_padding_mask(cu_seqlens, max_seqlen).to(input_ids.dtype)
        hidden = self.backbone(ids, mask)
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prefix string: ``prompt`` wins; else ``prompt_name`` looked up in the table."""
        return prompt_from_table(self.prompts, self.default_prompt_name, self.source.name,
                                 prompt_name, prompt)

    def tokenize(
        self, texts: Sequence[str], max_length: int | None = None
    ) -> tuple[list[list[int]], list[int]]:
        """Token ids cut to ``max_length`` (default and upper bound: the model's limit)."""
        if self.tokenizer is None:
            raise RuntimeError(
                f"{self.source.path} ships no tokenizer files; pass tokenizer=PATH to load_encoder"
            )
        limit = min(max_length or self.max_length, self.max_length)
        return tokenize(self.tokenizer, texts, limit)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One fp32 vector per text from padded states (pooling, then the head's modules)."""
        return self.apply_head(pool(hidden, attention_mask, self.pooling))

    def pool_packed(
        self, hidden: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int
    ) -> torch.Tensor:
        """One fp32 vector per text from packed states ``[T, H]`` (see :func:`pool_packed`),
        through the head's Dense / Normalize modules when the model has them."""
        return self.apply_head(pool_packed(hidden, cu_seqlens, max_seqlen, self.pooling))

    def apply_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """The modules after pooling (Dense, Normalize) on pooled fp32 vectors ``[B, H]``."""
        return pooled if self.head is None else self.head(pooled)

    @property
    def pad_token_id(self) -> int:
        tok_pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(tok_pad if tok_pad is not None else self.raw_config.get("pad_token_id", 0) or 0)


def load_encoder(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
    tokenizer: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SentenceEncoder:
    """Load a sentence encoder from a local folder or a Hugging Face hub id.

    Parameters
    ----------
    model : str or path
        Folder with ``config.json`` and ``model.safetensors`` (or a sharded index), or a hub id.
    revision : str, optional
        Hub branch, tag or commit. The resolved commit is recorded in ``encoder.source``.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
    dtype : str or torch.dtype, optional
        ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (fp32 on CPU, bf16 on GPU).
        The MoE routers stay float32 in every dtype, as in
        :func:`~skmoe.engine.precision.apply_precision` (the same tensors, the same cache
        namespace).
    local_files_only : bool
        Never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
    tokenizer : path, optional
        Take the tokenizer from another folder (e.g. a weights-only checkpoint).
    cache_dir : path, optional
        Hugging Face cache folder (default: the standard ``HF_HOME`` cache).

    Returns
    -------
    SentenceEncoder
        A ``torch.nn.Module`` in eval mode; ``encoder(input_ids, attention_mask)`` returns the
        last hidden states.
    """
    folder, resolved = resolve_model_path(model, revision, local_files_only, cache_dir)
    pipeline = read_pipeline(folder)  # refuses modules skmoe cannot run, before any weights
    backbone, raw, files = load_backbone(folder)
    dev = resolve_device(device)
    # cast where the weights were read, then move: no float32 copy on the device
    backbone = cast_floats(backbone, resolve_dtype(dtype, dev)).to(device=dev).eval()
    head = load_head(folder, pipeline, int(backbone.hidden_size))
    if head is not None:
        head = head.to(device=dev)  # float32 whatever the backbone's dtype
    tok = load_model_tokenizer(folder, tokenizer, embedding_rows(backbone))
    is_nomic = isinstance(backbone, NomicMoEModel)
    prompts, default_prompt = load_prompts(folder, is_nomic)
    source = ModelSource(
        name=str(model), path=str(folder), revision=resolved,
        fingerprint=weights_fingerprint(folder, files),
    )
    encoder = SentenceEncoder(
        backbone,
        source=source,
        tokenizer=tok,
        prompts=prompts,
        default_prompt_name=default_prompt,
        pooling=pipeline.pooling,
        max_length=load_max_length(folder, tok),
        config=raw,
        head=head,
    )
    return encoder.eval().requires_grad_(False)
