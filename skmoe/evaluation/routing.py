"""Expert-routing statistics of the native MoE encoder, broken down by language (or any group).

The measurement behind "experts specialise by language family": per MoE layer, how often each
expert is among a token's top-k, with what router weight, and how far apart two groups'
expert distributions are (Jensen-Shannon divergence).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from .._stack import external_stacklevel
from ..validation import check_aligned, validate_texts
from .embeddings import as_groups

if TYPE_CHECKING:  # the encoder needs torch: imported where it runs, so that importing
    from ..encoder import SentenceEncoder  # skmoe.evaluation (or plotting) stays torch-free


def encoder_of(model: Any) -> SentenceEncoder:
    """The native :class:`~skmoe.encoder.SentenceEncoder` behind ``model``.

    Parameters
    ----------
    model : SentenceEncoder or object with ``get_encoder()``
        The encoder itself, or an estimator wrapping it (``MoEEmbeddingTransformer``).

    Returns
    -------
    SentenceEncoder

    Raises
    ------
    TypeError
        When ``model`` is neither.
    """
    from ..encoder import SentenceEncoder

    if isinstance(model, SentenceEncoder):
        return model
    if hasattr(model, "get_encoder"):
        encoder = model.get_encoder()
        if isinstance(encoder, SentenceEncoder):
            return encoder
        raise TypeError(f"{type(model).__name__}.get_encoder() returned {type(encoder).__name__}, "
                        "not a SentenceEncoder")
    raise TypeError(
        "routing_stats needs a SentenceEncoder (skmoe.load_encoder(...)) or an object with a "
        f"get_encoder() method such as MoEEmbeddingTransformer; got {type(model).__name__}"
    )


def _prompt_of(model: Any, encoder: SentenceEncoder, prompt_name: str | None,
               prompt: str | None) -> str:
    from ..embedding import resolve_prompt

    # An estimator's own prompt settings apply unless the caller overrides them.
    settings = model if hasattr(model, "get_params") else None
    return resolve_prompt(encoder, prompt_name, prompt, settings_of=settings)


@dataclass
class RoutingStats:
    """What :func:`routing_stats` measured.

    Attributes
    ----------
    experts : pandas.DataFrame
        One row per (layer, group, expert): ``count`` (tokens whose top-k holds the expert),
        ``share`` (count / (tokens x top_k): the expert's share of the group's routing slots,
        each token filling top_k of them; sums to 1 over experts, so with top-2 a share of 0.5
        means the expert is among the top 2 of every token), ``mean_weight`` (mean
        router weight of the expert when chosen; NaN if never chosen) and ``mean_prob`` (mean
        softmax probability of the expert over all the group's tokens).
    divergence : pandas.DataFrame
        One row per (layer, group_a, group_b): ``js_divergence``, the Jensen-Shannon divergence
        (base 2, in [0, 1]) between the two groups' ``share`` distributions.
    tokens : pandas.Series
        Tokens counted per group (by default prompt and special tokens included; see
        ``tokens=`` of :func:`routing_stats`), per MoE layer.
    top_k, num_experts : int
    prompt : str
        The prefix that was added to every text.
    precision : str
        The arithmetic the model ran in (``float32``, ``bfloat16``, ``int8/...``,
        ``int4/...``). The router itself runs in float32, but it routes the hidden states the
        lower precisions computed: on the full-size model with random weights, bfloat16 changed
        the top-2 choice of 1.4% of (token, layer), int8 of 2.1% and int4 of 10.2%. Measure
        routing in float32 to study the model itself.
    split_half : pandas.DataFrame or None
        With ``split_half=True``: one row per (layer, group), ``js_divergence`` between two
        seeded random halves of the group's texts, the sampling noise of the divergences
        (an overestimate: each half holds half the texts); NaN for a group of one text.
    """

    experts: pd.DataFrame
    divergence: pd.DataFrame
    tokens: pd.Series
    top_k: int
    num_experts: int
    prompt: str
    precision: str = "float32"
    split_half: pd.DataFrame | None = None

    def divergence_matrix(self, layer: int | None = None) -> pd.DataFrame:
        """Square group x group JS divergence for one layer, or averaged over layers."""
        layers = self.experts["layer"].unique()
        if layer is not None and layer not in layers:
            raise ValueError(f"layer {layer!r} is not an MoE layer; MoE layers: {layers.tolist()}")
        df = self.divergence if layer is None else self.divergence[self.divergence.layer == layer]
        mean = df.groupby(["group_a", "group_b"], sort=False)["js_divergence"].mean()
        groups = list(self.tokens.index)
        out = pd.DataFrame(0.0, index=groups, columns=groups)
        for (a, b), v in mean.items():
            out.loc[a, b] = out.loc[b, a] = v
        return out


def _text_token_mask(encoder: SentenceEncoder, ids: Any,
                     prefix: str) -> list[np.ndarray]:
    """Per row, which tokens belong to the text itself: not the special tokens at both ends,
    not the prompt's tokens after the first (checked row by row against the prompt's ids)."""
    head = encoder.tokenizer(prefix.strip(), add_special_tokens=False)["input_ids"] if prefix.strip() else []
    masks = []
    for row in ids:
        mask = np.ones(len(row), dtype=bool)
        mask[0] = mask[-1] = False  # <s> ... </s>
        if head:
            if list(row[1 : 1 + len(head)]) != list(head):
                raise ValueError(f"the prompt {prefix!r} does not tokenize the same at the start "
                                 "of every text; use tokens='all'")
            mask[1 : 1 + len(head)] = False
        masks.append(mask)
    return masks


def _count_batch(records: list, group_codes: np.ndarray, lengths: np.ndarray,
                 kept: np.ndarray | None, token_count: np.ndarray, count: dict, weight: dict,
                 prob: dict, G: int, E: int, K: int) -> None:
    """Add one forward pass's router records: rows of groups ``group_codes``, ``lengths``
    tokens each, the tokens ``kept`` counted (all when None). The records are the last ones of
    the call (an OOM retry may leave a failed call's partial records before them)."""
    token_group = np.repeat(group_codes, lengths)
    routed = len(token_group)
    if kept is not None:
        token_group = token_group[kept]
    token_count += np.bincount(token_group, minlength=G)
    for rec in records:
        top_e = rec.top_experts.numpy()
        if top_e.shape[0] != routed:
            raise RuntimeError(
                f"layer {rec.layer}: router saw {top_e.shape[0]} tokens, expected {routed}")
        top_w, probs = rec.top_weights.double().numpy(), rec.probs.double().numpy()
        if kept is not None:
            top_e, top_w, probs = top_e[kept], top_w[kept], probs[kept]
        flat = (np.repeat(token_group, K) * E + top_e.reshape(-1))
        count[rec.layer] += np.bincount(flat, minlength=G * E).reshape(G, E)
        weight[rec.layer] += np.bincount(
            flat, weights=top_w.reshape(-1), minlength=G * E).reshape(G, E)
        np.add.at(prob[rec.layer], token_group, probs)


def _last_forward(records: list, layers: list[int]) -> list:
    """The records of the batch's forward pass: the last one per MoE layer, in layer order
    (an OOM retry may leave a failed call's partial records before them). Anything else means
    the records are not this forward pass's: an error, never counts of nothing."""
    last = records[-len(layers):]
    if [rec.layer for rec in last] != list(layers):
        raise RuntimeError(
            f"routing_stats: the forward pass left records of layers {[r.layer for r in last]}, "
            f"expected one per MoE layer {list(layers)}")
    return last


def routing_stats(
    model: Any,
    texts: Any,
    groups: Any = None,
    *,
    prompt_name: str | None = None,
    prompt: str | None = None,
    max_length: int | None = None,
    long_text: str | None = None,
    chunk_overlap: int | None = None,
    tokens: str = "all",
    batch_size: int | None = None,
    max_tokens_per_batch: int | None = None,
    split_half: bool = False,
    random_state: int = 0,
) -> RoutingStats:
    """Count, per MoE layer and group, how often each expert is chosen and with what weight.

    Parameters
    ----------
    model : SentenceEncoder or object with ``get_encoder()``
        The native nomic MoE encoder (``skmoe.load_encoder(...)``) or an estimator wrapping
        it. A dense model has no router: ``TypeError``.
    texts : sequence of str
    groups : array-like of shape (n_texts,), optional
        Group of each text, e.g. its language; default one group ``"all"``.
    prompt_name, prompt : str, optional
        The task prefix, resolved as by the encoder (``prompt`` wins). Default: the
        estimator's own setting, else the model's default prompt. Its tokens are routed too
        and, with ``tokens="all"``, counted, as are the special tokens (``<s>``, ``</s>``).
    max_length : int, optional
        Token limit per text; longer texts are cut, as for their embeddings. Default: the
        estimator's ``max_length``, else the model's maximum length.
    long_text : {"truncate", "chunk"}, optional
        As for the embeddings (default: the estimator's setting, else ``"truncate"``).
        ``"chunk"`` routes every window of a long text and counts all their tokens: overlap
        tokens twice, and each window's prompt and special tokens (see ``tokens``).
    chunk_overlap : int, optional
        Tokens shared by consecutive windows (default: the estimator's, else 64).
    tokens : {"all", "text"}, default="all"
        ``"all"`` counts every token the model routes; ``"text"`` leaves out the special
        tokens at both ends and the prompt's tokens, which are the same in every language
        (7-17% of the tokens of short sentences) and would blur differences between groups.
    batch_size, max_tokens_per_batch : int, optional
        Passed to the engine (:class:`skmoe.embedding.Embedder` configures it, as for the
        embeddings).
    split_half : bool, default=False
        Also measure each group's sampling noise: the divergence between two random halves of
        its texts (``RoutingStats.split_half``; no extra forward pass). A divergence between
        two groups below it says nothing about the groups.
    random_state : int, default=0
        Seed of the split into halves.

    Returns
    -------
    RoutingStats
        For each layer and group, ``experts.count`` sums to ``tokens x top_k``.

    Notes
    -----
    Counts only this call's own forward passes: several threads may measure (or embed with)
    the same shared encoder at once. Inside a :func:`~skmoe.encoder.capture_routing` block,
    the block receives this call's records too and goes on recording afterwards.
    """
    from ..embedding import DEFAULT_CHUNK_OVERLAP, Embedder
    from ..encoder import capture_routing
    from ..engine.precision import precision_label

    if tokens not in ("all", "text"):
        raise ValueError(f"tokens must be 'all' or 'text', got {tokens!r}")
    check_aligned(texts=texts, groups=groups)
    texts = validate_texts(texts, "texts")  # texts and groups before the model is loaded
    if not texts:
        raise ValueError("routing_stats needs at least one text")
    g = as_groups(groups, len(texts), rows="texts")
    encoder = encoder_of(model)
    if not encoder.is_moe:
        raise TypeError(
            f"routing_stats needs the native Mixture-of-Experts model; {encoder.source.name!r} "
            "is a dense model without expert routing"
        )
    cfg = encoder.moe_config
    names = list(pd.unique(g))
    code = pd.Categorical(g, categories=names).codes.astype(np.int64)
    prefix = _prompt_of(model, encoder, prompt_name, prompt)
    params = model.get_params(deep=False) if hasattr(model, "get_params") else {}
    if max_length is None:
        max_length = params.get("max_length")
    if long_text is None:
        long_text = params.get("long_text", "truncate")
    if chunk_overlap is None:
        chunk_overlap = params.get("chunk_overlap", DEFAULT_CHUNK_OVERLAP)
    # the road's settings (token limit, long texts) and its engine; routing is no embedding,
    # so the forward passes are read here rather than pooled
    engine = Embedder.for_encoder(encoder, prefix, max_length=max_length, long_text=long_text,
                                  chunk_overlap=chunk_overlap, batch_size=batch_size,
                                  max_tokens_per_batch=max_tokens_per_batch).engine
    layers = cfg.moe_layers
    # counted per (group, half): the halves sum to the group's numbers, and differ by noise
    code = code * 2 + _halves(code, len(names), random_state)
    G, E, K = 2 * len(names), cfg.num_experts, cfg.moe_top_k
    count = {layer: np.zeros((G, E), dtype=np.int64) for layer in layers}
    weight = {layer: np.zeros((G, E)) for layer in layers}
    prob = {layer: np.zeros((G, E)) for layer in layers}
    token_count = np.zeros(G, dtype=np.int64)
    # the capture holds this call's forward passes only: not those of other threads on the
    # shared encoder, nor of an enclosing capture_routing block (which receives them too)
    with capture_routing(encoder) as records:
        for window_group in engine.iter_windows(texts, prefix, long_text=long_text,
                                                chunk_overlap=chunk_overlap):
            ids, lengths = window_group.ids, window_group.ids.lengths
            owner = window_group.owner
            keep = _text_token_mask(encoder, ids, prefix) if tokens == "text" else None
            for rows, _ in engine.iter_batches(ids, pipelined=False):  # records: this batch's
                _count_batch(_last_forward(records, layers), code[owner[rows]], lengths[rows],
                             None if keep is None else np.concatenate([keep[r] for r in rows]),
                             token_count, count, weight, prob, G, E, K)
                records.clear()
    halves = _divergences(count, token_count, names, K, within=True) if split_half else None
    count, weight, prob = ({layer: v.reshape(-1, 2, E).sum(1) for layer, v in d.items()}
                           for d in (count, weight, prob))
    token_count = token_count.reshape(-1, 2).sum(1)
    empty = [str(n) for n, t in zip(names, token_count, strict=True) if t == 0]
    if empty:
        warnings.warn(f"routing_stats: no token counted for group(s) {empty} (tokens={tokens!r}"
                      " leaves out the prompt and special tokens; their texts hold none): their "
                      "shares and divergences are NaN", RuntimeWarning,
                      stacklevel=external_stacklevel())
    rows_out = []
    for layer in layers:
        c, w, p = count[layer], weight[layer], prob[layer]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = c / (token_count[:, None] * K)
            mean_w = np.where(c > 0, w / np.maximum(c, 1), np.nan)
            mean_p = p / token_count[:, None]
        for gi, name in enumerate(names):
            for e in range(E):
                rows_out.append({"layer": layer, "group": name, "expert": e,
                                 "count": int(c[gi, e]), "share": float(share[gi, e]),
                                 "mean_weight": float(mean_w[gi, e]),
                                 "mean_prob": float(mean_p[gi, e])})
    experts = pd.DataFrame.from_records(rows_out)
    return RoutingStats(experts, _divergences(count, token_count, names, K),
                        pd.Series(token_count, index=names, name="tokens"), K, E, prefix,
                        precision_label(encoder), halves)


def _halves(code: np.ndarray, n_groups: int, random_state: int) -> np.ndarray:
    """0 or 1 per row: a seeded random half of its group's rows in each (sizes differ by <= 1)."""
    half = np.zeros(len(code), dtype=np.int64)
    rng = np.random.default_rng(random_state)
    for g in range(n_groups):
        rows = rng.permutation(np.flatnonzero(code == g))
        half[rows[len(rows) // 2:]] = 1
    return half


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) of two share distributions; NaN if either is."""
    if np.isnan(p).any() or np.isnan(q).any():
        return float("nan")
    return float(jensenshannon(p, q, base=2) ** 2)


def _divergences(count: dict[int, np.ndarray], token_count: np.ndarray, names: list[Any],
                 K: int, *, within: bool = False) -> pd.DataFrame:
    """JS divergence (base 2) of the share distributions: between every two groups, or
    (``within``, counts per (group, half) in consecutive rows) between each group's halves."""
    out = []
    for layer, c in count.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            share = c / (token_count[:, None] * K)  # NaN for a group without tokens
        if within:
            out += [{"layer": layer, "group": name, "js_divergence": _js(share[2 * g],
                                                                          share[2 * g + 1])}
                    for g, name in enumerate(names)]
        else:
            out += [{"layer": layer, "group_a": names[a], "group_b": names[b],
                     "js_divergence": _js(share[a], share[b])}
                    for a, b in combinations(range(len(names)), 2)]
    columns = ["layer", "group", "js_divergence"] if within else [
        "layer", "group_a", "group_b", "js_divergence"]
    return pd.DataFrame.from_records(out, columns=columns)
