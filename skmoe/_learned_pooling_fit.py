"""Training of :class:`~skmoe.learned_pooling.LearnedPooling` (torch, CPU or the encoder's device).

A text's pooled vector is written ``mean + (weights - 1/L) @ states``: the float32 mean of its
token states plus the learned deviation from uniform weights applied to the float16 states. At
zero scores the deviation is exactly zero, so mean pooling is reproduced to float32 precision
although the states are held in float16.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.multiclass import type_of_target
from torch import nn

from ._stack import external_stacklevel
from .engine.batching import plan_batches
from .engine.windows import check_long_text
from .postprocessing import normalize_mode
from .validation import (
    check_bool,
    check_int,
    check_label_types,
    check_no_missing,
    check_number,
    check_verbose,
    is_int_at_least,
)

OBJECTIVES = ("auto", "cross_entropy", "infonce", "cosine_mse", "cosent")
_SCORED = ("cosine_mse", "cosent")  # pair objectives that need scores


#: The length of the pooled rows the jointly trained classifier sees: the scale its defaults
#: (``learning_rate``, ``alpha``) were tuned at, whatever ``normalize`` gives ``transform``.
TRAIN_ROW_LENGTH = 2.0


_STATE_SAMPLE = 200_000  # tokens used to estimate the standardisation

#: Fewer held-out rows than this give a loss too noisy to stop on (at 8 texts per label, 6
#: held-out rows kept the first epoch, a single optimizer step, in every fit checked): then
#: every row trains and there is no early stopping.
MIN_VALIDATION_ROWS = 50
#: ``max_iter="auto"``: epochs with early stopping on a held-out split, and for pairs.
AUTO_EPOCHS = 10
#: ``max_iter="auto"``: epochs for labelled texts too few for a held-out split (a batch of 64
#: is then at most 8 steps an epoch; measured on SIB-200 few-shot, docs/evaluation-results.md).
AUTO_EPOCHS_SMALL = 50


class Pooler(nn.Module):
    """Attention pooling (scores zero-initialised) with the fitted standardisation."""

    def __init__(self, dim: int, heads: int, center: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.score = nn.Parameter(torch.zeros(dim, heads))
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32))
        self.register_buffer("inv_scale", 1.0 / torch.as_tensor(scale, dtype=torch.float32))

    @classmethod
    def from_fitted(cls, fitted: Any) -> Pooler:
        """The pooler of fitted attributes: an estimator, or ``train``'s dict of them."""
        get = fitted.get if isinstance(fitted, dict) else lambda name: getattr(fitted, name)
        attention = get("attention_")
        p = cls(attention.shape[0], attention.shape[1], get("state_mean_"), get("state_scale_"))
        p.score.data = torch.as_tensor(attention, dtype=torch.float32).clone()
        return p

    def weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token weights ``[B, S]`` (zero at padding, each row sums to 1)."""
        scores = ((h.float() - self.center) * self.inv_scale) @ self.score  # [B, S, heads]
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.softmax(scores, dim=1).mean(-1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, means: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(h, mask)
        uniform = mask.float() / mask.sum(1, keepdim=True).float()
        pooled = means + torch.einsum("bs,bsd->bd", w - uniform, h.float())
        return pooled, w


def pad(states: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded float16 states ``[B, S, H]``, bool mask ``[B, S]`` and float32 means ``[B, H]``."""
    h = nn.utils.rnn.pad_sequence([s for s, _ in states], batch_first=True)
    lengths = torch.tensor([len(s) for s, _ in states])
    mask = torch.arange(h.shape[1])[None, :] < lengths[:, None]
    means = torch.from_numpy(np.stack([m for _, m in states]))
    return h, mask, means


#: Padded tokens in one ``[B, S, H]`` tensor the pooler works on (a float32 copy at 768-d:
#: 100 MB). A text with more tokens is padded alone. Padding every batch to its longest text
#: made one long ``long_text="chunk"`` document cost ``B x L_long x H`` per batch: 6.2 GB for
#: 1 long + 255 short texts on a 64-d model (12x that at 768-d).
PAD_TOKENS = 32_768


def pool(pooler: Pooler, states: list, max_rows: int
         ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Pool ``states`` in groups of similar length; results in the order of ``states``.

    The texts are grouped by :func:`~skmoe.engine.batching.plan_batches` (sorted by token count,
    at most ``max_rows`` texts and :data:`PAD_TOKENS` padded tokens a group), so a long text is
    never padded together with many short ones. Each text's vector depends on its own tokens
    only, so the grouping changes no result beyond float rounding; gradients flow through.

    Returns
    -------
    pooled : Tensor of shape (n, H)
        float32 pooled vectors.
    kl : Tensor of shape (n,)
        Each text's KL divergence of its weights from uniform (the attention penalty).
    weights : list of Tensor
        Each text's token weights (its real tokens only).
    """
    if not states:
        dim = pooler.score.shape[0]
        return torch.zeros(0, dim), torch.zeros(0), []
    pooled, kl, weights, order = [], [], [], []
    for batch in plan_batches([len(s) for s, _ in states], max_rows, PAD_TOKENS):
        h, mask, means = pad([states[i] for i in batch.rows])
        p, w = pooler(h, mask, means)
        n_real = mask.sum(1)
        pooled.append(p)
        kl.append((w * torch.log(w.clamp(min=1e-12))).sum(1) + torch.log(n_real.float()))
        weights += [w[j, :n] for j, n in enumerate(n_real.tolist())]
        order.append(batch.rows)
    inverse = np.argsort(np.concatenate(order))  # row i of the groups' output is text order[i]
    back = torch.from_numpy(inverse)
    return torch.cat(pooled)[back], torch.cat(kl)[back], [weights[i] for i in inverse]


def check_fit_params(est: Any, pairs: bool, y: Any, n: int) -> str:
    """Validate the training parameters and the data's shape (``n`` texts or pairs, ``y``);
    return the objective to use. Runs before the encoder loads."""
    if est.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {est.objective!r}")
    check_output_params(est)
    for name, low in (("heads", 1), ("batch_size", 2), ("n_iter_no_change", 1)):
        check_int(name, getattr(est, name), low)
    if est.max_iter != "auto" and not is_int_at_least(est.max_iter, 0):
        raise ValueError(f"max_iter must be an int >= 0 or 'auto', got {est.max_iter!r}")
    for name in ("learning_rate", "temperature"):
        check_number(name, getattr(est, name), low=0, low_open=True)
    for name in ("attention_penalty", "alpha", "validation_fraction"):
        check_number(name, getattr(est, name), low=0)
    if not est.validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {est.validation_fraction!r}")
    check_int("random_state", est.random_state, 0, optional=True)
    check_int("max_length", est.max_length, 2, optional=True)
    check_long_text(est.long_text, est.chunk_overlap, est.max_length)
    check_int("batch_tokens", est.batch_tokens, 1, optional=True)
    check_verbose(est.verbose)
    objective = est.objective
    if objective == "auto":
        objective = ("cosent" if y is not None else "infonce") if pairs else "cross_entropy"
    if pairs != (objective in ("infonce", *_SCORED)):
        raise ValueError(f"objective={objective!r} needs "
                         f"{'an (n, 2) array of text pairs' if not pairs else 'single texts'}")
    if objective == "cross_entropy" and y is None:
        raise ValueError("fit(texts, y) needs labels y for objective='cross_entropy' (or pass an "
                         "(n, 2) array of (anchor, positive) pairs for InfoNCE)")
    if objective in _SCORED and y is None:
        raise ValueError(f"objective={objective!r} needs similarity scores y, one per pair")
    _check_data(objective, y, n)
    if est.objective == "auto" and objective == "cosent":
        _warn_if_labels(y)
    return objective


_PAIRS_NOTE = ("a 2-column table is read as text pairs: to classify texts, pass one text column")


def _warn_if_labels(y: Any) -> None:
    """``fit(pairs, y)`` ranks pairs by ``y``; integer ``y`` with a few values looks like class
    labels given with a 2-column table meant as texts (one text and one other column)."""
    values = np.asarray(y, dtype=np.float64)
    distinct = np.unique(values)
    if 2 < len(distinct) <= 50 and np.array_equal(distinct, np.round(distinct)):
        warnings.warn(f"fit(pairs, y) reads y as similarity scores and trains CoSENT (pairs "
                      f"ranked by y); y holds {len(distinct)} distinct integers, like class "
                      f"labels. If so, {_PAIRS_NOTE}; pass objective='cosent' to keep scores "
                      "without this warning", UserWarning, stacklevel=external_stacklevel())


def _check_data(objective: str, y: Any, n: int) -> None:
    """What each objective needs to learn anything: two classes, two pairs, two scores."""
    what = "pairs" if objective != "cross_entropy" else "texts"
    if n < 2:
        raise ValueError(f"objective={objective!r} needs at least 2 {what}, got {n}")
    if y is None:
        return
    values = np.asarray(y, dtype=object)
    if values.shape != (n,):
        raise ValueError(f"y must have one entry per {what[:-1]} ({n}), got shape {values.shape}")
    if objective == "cross_entropy":
        check_no_missing(values, "y")
        check_label_types(values, "y")
        if type_of_target(np.asarray(y)) == "continuous":
            raise ValueError(f"y holds continuous values (e.g. {values[0]!r}): cross-entropy "
                             "needs class labels; similarity scores go with (n, 2) text pairs")
        if len(pd.unique(values)) < 2:
            raise ValueError(f"objective='cross_entropy' needs at least 2 classes in y, got "
                             f"only {values[0]!r}")
        return
    for i, v in enumerate(values):
        if not isinstance(v, (numbers.Real, np.number, np.bool_)):
            raise ValueError(f"scores y must be numbers (one similarity score per pair); row {i} "
                             f"is {v!r} ({_PAIRS_NOTE})")
        if not np.isfinite(float(v)):
            raise ValueError(f"scores y must be finite; row {i} is {v!r}")
    scores = values.astype(np.float64)
    if not scores.max() > scores.min():
        raise ValueError(f"scores must not all be equal (all {float(scores[0])!r}): nothing to "
                         "rank")


def check_output_params(est: Any) -> None:
    """What ``transform`` reads: ``normalize`` and ``center`` (checked by fit and transform)."""
    normalize_mode(est.normalize)
    check_bool("center", est.center)


def train(est: Any, texts: list[str], states: list, pairs: np.ndarray | None, y: Any,
          objective: str, dim: int) -> dict[str, Any]:
    """Train the pooling (and classifier) on the texts' ``dim``-wide token states with ``est``'s
    parameters; return the fitted attributes (``est`` is not touched: ``fit`` sets them all at
    once, so an interrupted fit leaves the previous one as it was)."""
    fitted: dict[str, Any] = {}
    rng = np.random.default_rng(est.random_state)
    init_seed = int(rng.integers(2**31))  # drawn first, so the split and batch order stay put
    flat = torch.cat([s for s, _ in states]) if states else torch.zeros(1, dim)
    sample = flat[torch.from_numpy(rng.choice(len(flat), min(len(flat), _STATE_SAMPLE),
                                              replace=False))].float()
    fitted["state_mean_"] = sample.mean(0).numpy()
    fitted["state_scale_"] = np.maximum(sample.std(0).numpy(), 1e-6).astype(np.float32)
    pooler = Pooler(dim, est.heads, fitted["state_mean_"], fitted["state_scale_"])
    if est.heads > 1 and est.max_iter != 0:  # zero scores give every head the same gradient
        _break_symmetry(pooler, init_seed)
    index = {t: i for i, t in enumerate(texts)}
    if pairs is not None:
        rows = np.array([[index[a], index[b]] for a, b in pairs])
        target = None if y is None else _scaled_scores(y)
    else:
        from sklearn.preprocessing import LabelEncoder

        labels = np.asarray(y)  # one per text: checked by check_fit_params
        enc = LabelEncoder().fit(labels)
        fitted["classes_"] = enc.classes_
        target = torch.from_numpy(enc.transform(labels).astype(np.int64))
        rows = np.arange(len(texts))
    classifier = None
    if objective == "cross_entropy":  # zeroed below: skip the default init's global-RNG draws
        classifier = nn.utils.skip_init(nn.Linear, dim, len(fitted["classes_"]))
    train_idx, val_idx = _split(len(rows), est, None if classifier is None else target.numpy(), rng)
    epochs = _epochs(est.max_iter, classifier is not None, len(val_idx))
    params = [{"params": pooler.parameters()}]
    if classifier is not None:
        nn.init.zeros_(classifier.weight)
        nn.init.zeros_(classifier.bias)
        params.append({"params": classifier.parameters(), "weight_decay": est.alpha})
    opt = torch.optim.Adam(params, lr=est.learning_rate)

    def loss_of(batch: np.ndarray) -> torch.Tensor:
        idx = rows[batch].ravel()  # pairs: anchor, positive, anchor, ...
        pooled, kl, _ = pool(pooler, [states[i] for i in idx], len(idx))
        penalty = est.attention_penalty * kl.mean()
        if objective == "cross_entropy":
            logits = classifier(nn.functional.normalize(pooled, dim=-1) * TRAIN_ROW_LENGTH)
            return nn.functional.cross_entropy(logits, target[batch]) + penalty
        unit = nn.functional.normalize(pooled, dim=-1).reshape(len(batch), 2, -1)
        if objective == "infonce":
            sims = unit[:, 0] @ unit[:, 1].T / est.temperature
            labels_ = torch.arange(len(batch))
            loss = 0.5 * (nn.functional.cross_entropy(sims, labels_)
                          + nn.functional.cross_entropy(sims.T, labels_))
        elif objective == "cosent":
            loss = cosent_loss((unit[:, 0] * unit[:, 1]).sum(-1), target[batch], est.temperature)
        else:
            loss = nn.functional.mse_loss((unit[:, 0] * unit[:, 1]).sum(-1), target[batch])
        return loss + penalty

    def evaluate(idx: np.ndarray) -> float:
        with torch.no_grad():
            parts = [(loss_of(b).item(), len(b)) for b in _batches(idx, est.batch_size)]
        return sum(v * n for v, n in parts) / max(sum(n for _, n in parts), 1)

    loss_curve: list[float] = []
    best, best_state, stale, epoch, best_epoch = np.inf, None, 0, 0, 0
    for epoch in range(1, epochs + 1):  # noqa: B007 - epoch is n_iter_ below
        total = 0.0
        for batch in _batches(rng.permutation(train_idx), est.batch_size):
            if len(batch) < 2 and objective == "infonce":
                continue
            opt.zero_grad()
            loss = loss_of(batch)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        loss_curve.append(total / max(len(train_idx), 1))
        current = evaluate(val_idx) if len(val_idx) else loss_curve[-1]
        if current < best - 1e-6:
            best, stale, best_epoch = current, 0, epoch
            best_state = _snapshot(pooler, classifier)
        else:
            stale += 1
            if stale >= est.n_iter_no_change:
                break
    if best_state is not None:
        pooler.score.data, cls_state = best_state
        if classifier is not None:
            classifier.load_state_dict(cls_state)
    fitted["loss_curve_"] = loss_curve
    fitted["n_iter_"] = epoch if epochs else 0
    fitted["best_iter_"] = best_epoch
    fitted["best_loss_"] = float(best) if np.isfinite(best) else float("nan")
    fitted["attention_"] = pooler.score.detach().numpy().copy()
    if classifier is not None:
        fitted["coef_"] = classifier.weight.detach().numpy().copy()
        fitted["intercept_"] = classifier.bias.detach().numpy().copy()
    return fitted


#: Standard deviation of a token's initial score under each head when ``heads > 1``: small,
#: so the weights start near uniform (mean pooling), but different, so heads learn apart.
HEAD_INIT_SCORE_STD = 0.1


def _break_symmetry(pooler: Pooler, seed: int) -> None:
    """Seeded scores of std :data:`HEAD_INIT_SCORE_STD` per head on standardised states (from
    zero scores every head got the same gradient and stayed the same: ``heads`` did nothing).
    A generator of its own: torch's global seed is the user's."""
    generator = torch.Generator().manual_seed(seed)
    dim = pooler.score.shape[0]
    with torch.no_grad():
        pooler.score.normal_(0.0, HEAD_INIT_SCORE_STD / dim**0.5, generator=generator)


def cosent_loss(cos: torch.Tensor, scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """CoSENT: ``log(1 + sum over pairs i, j with scores[i] > scores[j] of
    exp((cos[j] - cos[i]) / temperature))``.

    Only the order of the scores matters (scale-free): it asks every better-scored pair to
    have the higher cosine, not a cosine equal to the rescaled score. Zero (no gradient) when
    the batch holds no two different scores.
    """
    diff = (cos[None, :] - cos[:, None]) / temperature  # [i, j]: cos_j - cos_i
    ordered = scores[:, None] > scores[None, :]
    terms = torch.cat([torch.zeros(1, dtype=diff.dtype), diff[ordered]])
    return torch.logsumexp(terms, dim=0)


def _snapshot(pooler: Pooler, classifier: nn.Module | None) -> tuple:
    cls_state = None if classifier is None else {k: v.clone() for k, v in
                                                 classifier.state_dict().items()}
    return pooler.score.data.clone(), cls_state


def _batches(idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def _epochs(max_iter: int | str, labelled: bool, n_val: int) -> int:
    """Epochs to run: ``max_iter``, or for ``"auto"`` :data:`AUTO_EPOCHS_SMALL` for labelled
    texts without a held-out split and :data:`AUTO_EPOCHS` otherwise."""
    if max_iter != "auto":
        return int(max_iter)
    return AUTO_EPOCHS_SMALL if labelled and n_val == 0 else AUTO_EPOCHS


def _split(n: int, est: Any, labels: np.ndarray | None,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out rows (stratified by label when every class has 2 rows); no
    held-out rows when fewer than :data:`MIN_VALIDATION_ROWS` would be held out."""
    n_val = int(round(n * est.validation_fraction))
    if n_val < MIN_VALIDATION_ROWS or est.max_iter == 0:
        return np.arange(n), np.arange(0)
    from sklearn.model_selection import train_test_split

    stratify = None
    if labels is not None:
        counts = np.bincount(labels)
        if counts.min() >= 2 and n_val >= len(counts):
            stratify = labels
    tr, va = train_test_split(np.arange(n), test_size=n_val, stratify=stratify,
                              random_state=int(rng.integers(2**31)))
    return np.sort(tr), np.sort(va)


def _scaled_scores(y: Any) -> torch.Tensor:
    """Scores mapped to [0, 1] (shape, finiteness and spread checked by check_fit_params)."""
    scores = np.asarray(y, dtype=np.float64)
    low, high = scores.min(), scores.max()
    return torch.from_numpy(((scores - low) / (high - low)).astype(np.float32))
