"""Tokenizer and prompt table of a checkpoint folder.

Prompts come from ``config_sentence_transformers.json`` when present; for the nomic MoE model
without that file, the model's documented defaults. Truncation to ``max_length`` is reported
back to the caller, never silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .loading import read_json

# The model card's prompt table (spec §5); "document" is accepted as an alias of "passage".
NOMIC_DEFAULT_PROMPTS = {
    "query": "search_query: ",
    "passage": "search_document: ",
    "classification": "classification: ",
    "clustering": "clustering: ",
}
PROMPT_ALIASES = {"document": "passage", "passage": "document"}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model", "vocab.txt")


def load_tokenizer(folder: Path) -> Any | None:
    """``transformers`` fast tokenizer from ``folder``, or None when it ships no tokenizer."""
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def load_prompts(folder: Path, is_nomic: bool) -> tuple[dict[str, str], str | None]:
    """(prompt table, default prompt name). Keys are kept as spelled in the file."""
    st = read_json(folder / "config_sentence_transformers.json") or {}
    prompts = dict(st.get("prompts") or {})
    if not prompts and is_nomic:
        prompts = dict(NOMIC_DEFAULT_PROMPTS)
    return prompts, st.get("default_prompt_name")


def lookup_prompt(prompts: dict[str, str], name: str) -> str | None:
    """Case-insensitive lookup with ``document`` = ``passage``; None when unknown."""
    lowered = {k.lower(): v for k, v in prompts.items()}
    key = name.lower()
    if key in lowered:
        return lowered[key]
    alias = PROMPT_ALIASES.get(key)
    return lowered.get(alias) if alias else None


def load_pooling(folder: Path) -> str:
    """Pooling mode from the sentence-transformers side files (``mean`` when absent)."""
    modules = read_json(folder / "modules.json") or []
    pool_dir = next((m.get("path") for m in modules if m.get("type", "").endswith("Pooling")), None)
    cfg = read_json(folder / (pool_dir or "1_Pooling") / "config.json") or {}
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def load_max_length(folder: Path, tokenizer: Any | None, default: int = 512) -> int:
    st = read_json(folder / "sentence_bert_config.json") or {}
    if st.get("max_seq_length"):
        return int(st["max_seq_length"])
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 100_000:
        return int(tok_max)
    return default


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids with special tokens, cut to ``max_length``; also the rows that were cut.

    Cutting keeps the closing special token (``<s> ... </s>``), which is what the tokenizer's
    own truncation does for a single sequence.
    """
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    truncated = []
    for i, row in enumerate(ids):
        if len(row) > max_length:
            ids[i] = row[: max_length - 1] + row[-1:]
            truncated.append(i)
    return ids, truncated
