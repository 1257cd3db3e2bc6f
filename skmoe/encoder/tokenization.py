"""Tokenizer and prompt table of a checkpoint folder.

Prompts come from ``config_sentence_transformers.json`` when present; for the nomic MoE model
without that file, the model's documented defaults. Truncation to ``max_length`` is reported
back to the caller, never silent.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, read_json
from .st_modules import read_pipeline

# The released model's prompt table (spec §5), used when a nomic checkpoint folder lacks
# config_sentence_transformers.json. Lookup is case-insensitive; "document" = "passage".
NOMIC_DEFAULT_PROMPTS = {
    "query": "search_query: ",
    "passage": "search_document: ",
    "Classification": "classification: ",
    "MultilabelClassification": "classification: ",
    "Clustering": "clustering: ",
    "PairClassification": "classification: ",
    "STS": "classification: ",
    "Summarization": "classification: ",
    "Speed": "search_document: ",
}
PROMPT_ALIASES = {"document": "passage", "passage": "document"}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model", "vocab.txt")
#: The files that hold a vocabulary: a folder without one has no usable tokenizer.
VOCABULARY_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model",
                    "vocab.txt", "vocab.json")


# Tokenizer classes whose transformers wrapper adds nothing to tokenizer.json for encoding
# (checked: identical ids on 1,929 SIB-200 texts in 32 languages plus edge cases). For these the
# plain fast wrapper loads ~3.5x faster than AutoTokenizer (XLM-R: 1.1 s vs 4.0 s CPU).
_PLAIN_FAST_CLASSES = {
    "XLMRobertaTokenizer", "XLMRobertaTokenizerFast", "BertTokenizer", "BertTokenizerFast",
}


def load_tokenizer(folder: Path) -> Any | None:
    """``transformers`` fast tokenizer from ``folder``, or None when it ships no tokenizer.

    A file the tokenizer libraries cannot read (truncated tokenizer.json, ...) is a
    :class:`CheckpointError` naming it.
    """
    if not any((folder / f).is_file() for f in VOCABULARY_FILES):
        # tokenizer_config.json alone loaded as a tokenizer of its 5 special tokens: every word
        # became <unk> and the vectors meant nothing, unwarned
        return None
    cfg = read_json(folder / "tokenizer_config.json") or {}
    special = read_json(folder / "special_tokens_map.json") or {}
    main = next((folder / f for f in TOKENIZER_FILES if (folder / f).is_file()), folder)
    try:
        if (folder / "tokenizer.json").is_file() and cfg.get("tokenizer_class") in _PLAIN_FAST_CLASSES:
            from transformers import PreTrainedTokenizerFast

            kwargs = {
                k: v["content"] if isinstance(v, dict) else v
                for k, v in {**cfg, **special}.items()
                if k not in ("tokenizer_class", "added_tokens_decoder", "auto_map")
                and (not isinstance(v, dict) or "content" in v)
            }
            return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **kwargs)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except OSError as exc:
        if exc.errno is not None:  # the system's (out of descriptors, permissions): as it is
            raise
        raise CheckpointError(f"{main} cannot be loaded as a tokenizer ({exc}); restore it "
                              "from the model's source") from None
    except Exception as exc:  # the tokenizers library raises a bare Exception ("EOF while parsing")
        raise CheckpointError(f"{main} cannot be loaded as a tokenizer ({type(exc).__name__}: "
                              f"{exc}); restore it from the model's source") from None


def tokenizer_id_bound(tokenizer: Any) -> int:
    """One more than the largest id the tokenizer can produce (added tokens included)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizers: no 250k-entry dict to build
        added = backend.get_added_tokens_decoder()
        return max(backend.get_vocab_size(with_added_tokens=False), max(added, default=-1) + 1)
    vocab = tokenizer.get_vocab()
    return max(vocab.values(), default=-1) + 1


def check_tokenizer_fits(tokenizer: Any | None, rows: int, where: Path | str) -> None:
    """Refuse a tokenizer whose ids would index past the model's embedding table.

    Without this a mismatched tokenizer fails at embed time with ``IndexError: index out of
    range in self`` (or, on GPU, a device-side assert), long after loading.
    """
    if tokenizer is None:
        return
    bound = tokenizer_id_bound(tokenizer)
    if bound < rows // 2:
        raise CheckpointError(
            f"the tokenizer in {where} knows {bound:,} tokens, but the model's embedding table has "
            f"{rows:,} rows: its vocabulary file is missing or belongs to another model; copy "
            "the model's own tokenizer files (tokenizer.json) there")
    if bound > rows:
        raise CheckpointError(
            f"the tokenizer in {where} produces ids up to {bound - 1:,} ({bound:,} tokens), but "
            f"the model's embedding table has {rows:,} rows (vocab_size); this tokenizer belongs "
            "to another model: use the model's own tokenizer files")


def load_model_tokenizer(folder: Path, tokenizer: str | os.PathLike[str] | None,
                         rows: int) -> Any | None:
    """The tokenizer a model's texts go through: from the folder ``tokenizer`` (default: the
    model's ``folder``), checked against the ``rows`` of its embedding table
    (:func:`check_tokenizer_fits`), and lowercasing the texts first where the model's
    ``sentence_bert_config.json`` says ``do_lower_case`` (sentence-transformers lowercases
    every text, prompt included, before tokenizing it)."""
    where = Path(tokenizer) if tokenizer else folder
    tok = load_tokenizer(where)
    check_tokenizer_fits(tok, rows, where)
    st = read_json(folder / "sentence_bert_config.json") or {}
    if tok is not None and st.get("do_lower_case"):
        lowercase_first(tok)
    return tok


def lowercase_first(tokenizer: Any) -> None:
    """Make ``tokenizer`` lowercase every text before its own normalizer, as
    sentence-transformers (6.x) does for ``do_lower_case``: the tokenizers library's
    ``Lowercase`` in front, unless the normalizer has one. It maps character by character, so
    it differs from Python's ``str.lower`` on a word-final capital sigma (``ΟΔΟΣ`` -> ``οδοσ``,
    where ``str.lower``, and sentence-transformers before 6.0, give ``οδος``)."""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    steps = list(current) if isinstance(current, normalizers.Sequence) else (
        [current] if current is not None else [])
    if not any(isinstance(n, normalizers.Lowercase) for n in steps):
        backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), *steps])


def load_prompts(folder: Path, is_nomic: bool) -> tuple[dict[str, str], str | None]:
    """(prompt table, default prompt name). Keys are kept as spelled in the file."""
    st = read_json(folder / "config_sentence_transformers.json") or {}
    prompts = dict(st.get("prompts") or {})
    if not prompts and is_nomic:
        prompts = dict(NOMIC_DEFAULT_PROMPTS)
    return prompts, st.get("default_prompt_name")


def folder_prompts(folder: Path) -> tuple[dict[str, str], str | None]:
    """:func:`load_prompts` for a model folder, telling the nomic MoE model by its config (as
    loading does), without reading weights."""
    from .config import is_nomic_moe_config

    return load_prompts(folder, is_nomic_moe_config(read_json(folder / "config.json") or {}))


class UnknownPromptError(ValueError):
    """A ``prompt_name`` the model's prompt table does not have."""

    def __init__(self, name: str, model: str, known: list[str],
                 how: str = "a raw prefix with prompt=... (e5 models take prompt='query: ')") -> None:
        self.name, self.model, self.known = name, model, known
        listed = ", ".join(known) or "none (this model has no prompt table)"
        super().__init__(f"Unknown prompt_name {name!r} for model {model!r}; known: {listed}. "
                         f"Pass {how}.")


def prompt_from_table(prompts: dict[str, str], default_name: str | None, model: str,
                      prompt_name: str | None = None, prompt: str | None = None) -> str:
    """The prefix string: ``prompt`` wins; else ``prompt_name`` (default: the table's default,
    else no prefix) looked up in ``prompts``; an unknown name raises :class:`UnknownPromptError`
    naming ``model``. The one lookup behind the encoder's and the estimator's (before loading)."""
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise TypeError(f"prompt_name must be a str or None, got {prompt_name!r} "
                        f"({type(prompt_name).__name__})")
    if prompt is not None:
        return prompt
    if prompt_name is None:
        prompt_name = default_name
        if prompt_name is None:
            return ""
    found = lookup_prompt(prompts, prompt_name)
    if found is None:
        raise UnknownPromptError(prompt_name, model, sorted(prompts))
    return found


def lookup_prompt(prompts: dict[str, str], name: str) -> str | None:
    """Case-insensitive lookup with ``document`` = ``passage``; None when unknown."""
    lowered = {k.lower(): v for k, v in prompts.items()}
    key = name.lower()
    if key in lowered:
        return lowered[key]
    alias = PROMPT_ALIASES.get(key)
    return lowered.get(alias) if alias else None


def load_pooling(folder: Path) -> str:
    """Pooling mode from the sentence-transformers side files (``mean`` when absent).

    The whole module list is read and checked (:func:`.st_modules.read_pipeline`): a module or
    pooling mode skmoe does not run is refused by name.
    """
    return read_pipeline(folder).pooling


def load_max_length(folder: Path, tokenizer: Any | None, default: int = 512) -> int:
    st = read_json(folder / "sentence_bert_config.json") or {}
    if st.get("max_seq_length"):
        return int(st["max_seq_length"])
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 100_000:
        return int(tok_max)
    return default


# Texts per tokenizer call, at most TOKENIZE_SLICE and TOKENIZE_CHARS characters (after the cut
# below): a call's encodings (ids, token strings) all live until it returns, and long documents
# made that a GB for a few thousand texts in one call. Short texts go 2,048 at a time: on a
# 16-core GPU host that is +10% texts/s on the road against 256 (H200 run, 2026-12-04:
# benchmarks/gpu_experiments.py), where the tokenizer's threads share the host with the GPU's
# feeding; documents cut to 512 tokens still go about 240 at a time (+58 MB for 2,000 of them).
TOKENIZE_SLICE = 2048
TOKENIZE_CHARS = 2**20
# A long text is cut to (max_length + 1 + CUT_GUARD_TOKENS) * CHARS_PER_TOKEN characters before it
# is tokenized (a 20 MB text was tokenized in full, +2.9 GB and 23 s, to keep 512 tokens). The cut
# is kept only when the prefix still has CUT_GUARD_TOKENS tokens beyond what is kept, so the cut
# (which may split a word) is far from every kept token; otherwise the prefix doubles (texts of
# whitespace runs or other characters that make no tokens end up tokenized in full, as before).
CHARS_PER_TOKEN = 8
CUT_GUARD_TOKENS = 32


def encode_ids(tokenizer: Any, texts: list[str], max_length: int | None, *,
               add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of ``texts``, each cut to ``max_length`` on the tokenizer's truncation side
    (``None``: not cut), without padding: what ``tokenizer(texts, ...)["input_ids"]`` returns.

    A ``transformers`` fast tokenizer is asked through its ``tokenizers`` backend with the
    settings its ``__call__`` would give it (truncation, no padding, special-token splitting),
    skipping the wrapper's per-row conversion (attention masks, type ids) and, where the
    backend has ``encode_batch_fast``, the character offsets: 1.2-1.3x the wrapper's speed on
    two cores and 1.39x on a 16-core GPU host (``benchmarks/tokenize_paths.py``). Any other
    tokenizer is called as it is.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        out = tokenizer(texts, add_special_tokens=add_special_tokens,
                        truncation=max_length is not None, max_length=max_length, verbose=False)
        return out["input_ids"]
    # The backend's truncation is its state, shared by every estimator of this model: set and
    # used under one lock, or a thread's call cuts at another thread's max_length.
    with _BACKEND_LOCK:
        return _encode_backend(backend, tokenizer, texts, max_length, add_special_tokens)


#: Held while a ``tokenizers`` backend is configured and called (it encodes on its own threads).
_BACKEND_LOCK = threading.Lock()


def _encode_backend(backend: Any, tokenizer: Any, texts: list[str], max_length: int | None,
                    add_special_tokens: bool) -> list[list[int]]:
    if max_length is None:
        if backend.truncation is not None:
            backend.no_truncation()
    else:
        target = {"max_length": max_length, "stride": 0, "strategy": "longest_first",
                  "direction": getattr(tokenizer, "truncation_side", "right")}
        current = backend.truncation
        if current is None or {k: current.get(k) for k in target} != target:
            backend.enable_truncation(**target)
    if backend.padding is not None:
        backend.no_padding()
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    if getattr(backend, "encode_special_tokens", split) != split:
        backend.encode_special_tokens = split
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=add_special_tokens)]


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids with special tokens, cut to ``max_length``; also the rows that were cut.

    Cutting keeps the closing special token (``<s> ... </s>``), which is what the tokenizer's
    own truncation does for a single sequence.

    The tokenizer itself cuts each row to ``max_length + 1`` tokens (a row of that length was
    too long), so a long document never returns its thousands of token ids; and a text much
    longer than that is cut by characters first (see :data:`CHARS_PER_TOKEN`), with the same
    ids kept and the same rows reported cut. Tokenizers that truncate on the left are cut here
    instead, from the full text.
    """
    own_cut = getattr(tokenizer, "truncation_side", "right") == "right"
    texts = list(texts)
    chars = (max_length + 1 + CUT_GUARD_TOKENS) * CHARS_PER_TOKEN
    ids: list[list[int]] = []
    for start, stop in _slices([min(len(t), chars) if own_cut else len(t) for t in texts]):
        batch = texts[start:stop]
        long = [i for i, t in enumerate(batch) if len(t) > chars] if own_cut else []
        if long:
            cut = _cut_long_texts(tokenizer, [batch[i] for i in long], max_length, chars)
            for i, text in zip(long, cut, strict=True):
                batch[i] = text
        ids += encode_ids(tokenizer, batch, max_length + 1 if own_cut else None)
    truncated = []
    for i, row in enumerate(ids):
        if len(row) > max_length:
            ids[i] = row[: max_length - 1] + row[-1:]
            truncated.append(i)
    return ids, truncated


def _slices(sizes: list[int]) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive slices of at most :data:`TOKENIZE_SLICE` texts and about
    :data:`TOKENIZE_CHARS` characters (a text longer than that alone)."""
    start, chars = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start == TOKENIZE_SLICE or chars + size > TOKENIZE_CHARS):
            yield start, i
            start, chars = i, 0
        chars += size
    if start < len(sizes):
        yield start, len(sizes)


def _cut_long_texts(tokenizer: Any, texts: list[str], max_length: int, chars: int) -> list[str]:
    """Prefixes of ``texts`` that tokenize to the same first ``max_length + 1`` tokens.

    A prefix is kept once it holds ``CUT_GUARD_TOKENS`` content tokens beyond those; otherwise
    it doubles, up to the whole text. One tokenizer call per round for all pending texts.
    """
    need = max_length + 1 + CUT_GUARD_TOKENS
    out = list(texts)
    size = [chars] * len(texts)
    pending = [i for i, t in enumerate(texts) if len(t) > chars]
    while pending:
        prefixes = [_word_prefix(texts[i], size[i]) for i in pending]
        # content tokens only, at most need + 1 of them: the specials do not depend on the text
        counts = [len(row) for row in encode_ids(tokenizer, prefixes, need + 1,
                                                 add_special_tokens=False)]
        still = []
        for i, prefix, n in zip(pending, prefixes, counts, strict=True):
            if n > need:
                out[i] = prefix
            else:
                size[i] *= 2
                if size[i] < len(texts[i]):
                    still.append(i)
        pending = still
    return out


#: Characters every supported tokenizer splits words at (XLM-R's normaliser turns them into the
#: space its pre-tokenizer splits on; BERT's basic tokenizer splits on them).
_WORD_GAP = re.compile(r"[ \t\n\r]")
#: How far past the cut a word may run before it is cut inside (a text of one huge "word").
WORD_CHARS = 2**16


def _word_prefix(text: str, size: int) -> str:
    """``text[:size]`` extended to the end of the word it cuts. Words are tokenized one by one,
    so a prefix that ends between words has exactly the text's tokens for them (a cut inside a
    word changed the segmentation of a long run of one character from its 4th token on). A
    word running on more than :data:`WORD_CHARS` past ``size`` (e.g. Chinese without spaces)
    is cut at ``size``: the guard tokens keep that cut away from the kept tokens."""
    gap = _WORD_GAP.search(text, size, size + WORD_CHARS)
    if gap is not None:
        return text[: gap.start()]
    return text if len(text) <= size + WORD_CHARS else text[:size]
