"""``LearnedPooling``: attention-weighted pooling over the frozen encoder's token states.

Each head scores every token with a linear function of its (standardised) state; a text's
weights are the heads' softmaxes averaged, and its vector is the weighted sum of its token states.
Scores start at zero, so an untrained estimator is exactly mean pooling. ``fit(texts, y)`` trains
the scores jointly with a linear softmax classifier (cross-entropy); ``fit(pairs)`` with an
``(n, 2)`` array of (anchor, positive) texts trains them with InfoNCE over in-batch negatives, and
``fit(pairs, scores)`` regresses the pairs' cosine on the scores. A penalty (KL divergence from
uniform weights) keeps the attention near mean pooling unless the data says otherwise; early
stopping watches the loss on a held-out part of the training data.

Only the scores, the standardisation and the classifier are fitted (a few thousand floats): the
encoder stays frozen and shared through :mod:`skmoe.registry`, token states come from
:mod:`skmoe.token_states` (computed once per text per process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted

from ._encoder_params import EncoderParams
from ._text_features import TextFeaturesMixin
from .embedding import check_token_limit, resolve_prompt
from .encoder import SentenceEncoder
from .encoder.st_modules import NormalizeModule
from .postprocessing import (
    DEFAULT_CENTER,
    DEFAULT_NORMALIZE,
    cosine_matrix,
    fit_center,
    truncate_and_normalize,
)
from .registry import get_encoder
from .token_states import token_states, tokens
from .validation import split_pairs, validate_texts

if TYPE_CHECKING:
    from ._learned_pooling_fit import Pooler


@dataclass(eq=False, repr=False, kw_only=True)
class LearnedPooling(EncoderParams, TextFeaturesMixin, TransformerMixin, BaseEstimator):
    """Sentence vectors pooled with learned token attention over a frozen encoder.

    Parameters
    ----------
    model : str or path, default="nomic-ai/nomic-embed-text-v2-moe"
        As in :class:`~skmoe.MoEEmbeddingTransformer`, for a model whose vectors are the mean
        of its token states (mean pooling, no Dense module after it; a Normalize module is
        applied): LearnedPooling replaces that mean. ``fit`` refuses a model with CLS or max
        pooling or a Dense module, whose own vectors it would not give.
    revision : str, optional
        Hub branch, tag or commit.
    prompt_name : str or None, default="classification"
        Key of the model's prompt table.
    prompt : str, optional
        A raw prefix; wins over ``prompt_name`` (``"query: "`` for e5).
    max_length : int, optional
        Token limit per text, as in the transformer (default: the model's own).
    long_text : {"truncate", "chunk"}, default="truncate"
        As in the transformer; ``"chunk"`` pools over the states of all windows of a long
        text, concatenated (:mod:`skmoe.token_states`).
    chunk_overlap : int, default=64
        Tokens shared by consecutive windows (``"chunk"``).
    normalize : float, {"l2", "rms"} or bool, default=1.25
        Row normalisation of ``transform``'s pooled vectors, as in the transformer.
    center : bool, default=True
        As in the transformer: ``fit`` learns the mean unit vector of its texts' pooled
        vectors, ``transform`` subtracts it before ``normalize``. The centre is learned whatever
        ``center`` says, so it may be switched after fit either way without refitting; the
        warning about a centre learned from few texts comes only with ``center=True``.
        :meth:`similarity` and the training objectives use the uncentred pooled vectors.
    heads : int, default=1
        Attention heads; a token's weight is the mean of the heads' softmax weights. With
        more than one, each head starts from small seeded random scores (weights near uniform),
        so that the heads can learn apart; one head starts at zero (exactly mean pooling).
    objective : {"auto", "cross_entropy", "infonce", "cosine_mse", "cosent"}, default="auto"
        ``auto``: cross-entropy for ``fit(texts, labels)``, InfoNCE for ``fit(pairs)``,
        ``cosent`` for ``fit(pairs, scores)``: a ranking loss that asks only that
        better-scored pairs get higher cosines (scale-free; ``temperature`` divides the cosine
        differences). ``cosine_mse`` regresses the cosine on the scores rescaled to 0-1 (it
        measured worse on STS17, docs/evaluation-results.md).
    max_iter : int or "auto", default="auto"
        Maximum epochs; ``0`` leaves the pooling at mean pooling (nothing is trained).
        ``"auto"``: 50 for labelled texts too few for a held-out split (fewer than 500 at the
        default ``validation_fraction``: a few-shot set is then at most 8 steps an epoch), 10
        otherwise (with early stopping) and for pairs. Measured on SIB-200 few-shot with
        e5-small: 10 epochs gained +0.0 / +0.4 / +0.3 points over mean pooling at k = 8 / 16 /
        32 per label on the dev split, 50 epochs +2.2 / +3.5 / +2.3 (docs/evaluation-results.md).
    learning_rate : float, default=1e-3
        Adam step size.
    batch_size : int, default=64
        Texts (or pairs: in-batch negatives) per step.
    attention_penalty : float, default=0.1
        Weight of the mean KL divergence of each text's weights from uniform.
    alpha : float, default=1e-4
        L2 penalty (weight decay) of the classifier.
    temperature : float, default=0.05
        InfoNCE temperature (cosine similarities are divided by it).
    validation_fraction : float, default=0.1
        Share of the training rows held out for early stopping; none when fewer than 50 rows
        would be held out (a loss over fewer is too noisy to stop on): every row trains.
    n_iter_no_change : int, default=5
        Epochs without a better held-out loss before stopping; the best epoch's parameters
        are kept.
    random_state : int, optional
        Seeds the held-out split, the batch order and (``heads > 1``) the heads' initial
        scores; torch's global random state is left alone.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default CUDA when available.
    dtype : str, optional
        The encoder's compute precision, as in the transformer.
    cache : ignored
        Accepted for symmetry with the transformer; token states are memoised in-process, up
        to ``token_states.MEMO_MAX_BYTES`` (2 GiB) kept after ``fit`` until
        ``token_states.clear_memo()`` (see :mod:`skmoe.token_states` for why there is no
        persistent token-state cache).
    batch_tokens : int, optional
        Padded tokens per forward pass of the frozen encoder (default per device).
    local_files_only : bool, default=False
        Never download.
    verbose : int, default=1
        Progress bar while token states are computed, as the transformer's: ``1`` after 2 s,
        ``2`` at once, ``0`` none.

    Attributes
    ----------
    attention_ : ndarray of shape (n_features, heads)
        Token scores ``standardised_state @ attention_`` (zeros: mean pooling).
    state_mean_, state_scale_ : ndarray of shape (n_features,)
        Standardisation of token states before scoring.
    classes_, coef_, intercept_ : ndarray
        The jointly trained softmax classifier (cross-entropy objective only), over pooled
        vectors scaled to length ``TRAIN_ROW_LENGTH`` (2.0), uncentred.
    center_ : ndarray of shape (n_features,) or None
        The mean unit vector of the fit texts' pooled vectors (None from fewer than 2 texts);
        ``transform`` subtracts it when ``center=True``.
    n_iter_ : int
        Epochs run. ``best_loss_``: held-out (else training) loss of the kept epoch.
    best_iter_ : int
        The kept epoch (its parameters are restored at the end of ``fit``; ``0``: none).
    loss_curve_ : list of float
        Training loss per epoch.
    """

    _feature_prefix = "pooled"

    # model, revision, prompt_name, prompt, max_length, long_text, chunk_overlap: EncoderParams
    normalize: bool | str | float = DEFAULT_NORMALIZE
    center: bool = DEFAULT_CENTER
    heads: int = 1
    objective: str = "auto"
    max_iter: int | str = "auto"
    learning_rate: float = 1e-3
    batch_size: int = 64
    attention_penalty: float = 0.1
    alpha: float = 1e-4
    temperature: float = 0.05
    validation_fraction: float = 0.1
    n_iter_no_change: int = 5
    random_state: int | None = None
    device: str | None = None
    dtype: str | None = None
    cache: Any = None
    batch_tokens: int | None = None
    local_files_only: bool = False
    verbose: int = 1

    def __sklearn_tags__(self) -> Tags:  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # labels for texts (pairs for InfoNCE need none)
        return tags

    # -- the frozen encoder ------------------------------------------------------------------
    def get_encoder(self) -> SentenceEncoder:
        """The shared loaded encoder (the weights never live on the estimator)."""
        encoder = get_encoder(self.model, revision=self.revision, device=self.device,
                              precision=self.dtype, local_files_only=self.local_files_only)
        self._check_source(encoder.source)
        return encoder

    def _encoder(self) -> SentenceEncoder:
        """:meth:`get_encoder`, refused unless its vectors are a mean of its token states."""
        encoder = self.get_encoder()
        check_mean_pooling(encoder, self.model)
        return encoder

    def _states(self, texts: list[str], encoder: SentenceEncoder,
                prompt: str | None = None) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Token states of ``texts`` with ``prompt`` (fit's), else the fitted prompt, which the
        parameters must still give."""
        if prompt is None:
            prompt = resolve_prompt(encoder, self.prompt_name, self.prompt)
            if prompt != self.prompt_:
                raise ValueError(f"prompt_name/prompt changed after fit (fitted with "
                                 f"{self.prompt_!r}, now {prompt!r}); call fit again.")
        return token_states(encoder, texts, prompt, self.max_length, long_text=self.long_text,
                            chunk_overlap=self.chunk_overlap, max_tokens_per_batch=self.batch_tokens,
                            verbose=self.verbose)

    # -- sklearn API ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> LearnedPooling:
        """Train the pooling.

        Parameters
        ----------
        X : list of str, or array-like of shape (n, 2) of text pairs
            Texts (with ``y`` labels) or (anchor, positive) pairs.
        y : array-like of shape (n,), optional
            Class labels for texts; for pairs, optional similarity scores.

        Returns
        -------
        self

        Notes
        -----
        Atomic, as :meth:`MoEEmbeddingTransformer.fit`: everything is computed into locals and
        replaces the fitted state in one step at the end, so a fit that raises (a refused
        parameter or model, an interrupt while computing token states or training) leaves the
        previous fit (or no fit) exactly as it was.
        """
        from ._learned_pooling_fit import Pooler, check_fit_params, train

        pairs = _as_pairs(X)
        texts = list(dict.fromkeys(pairs.ravel())) if pairs is not None else validate_texts(X)
        objective = check_fit_params(self, pairs is not None, y,
                                     len(pairs) if pairs is not None else len(texts))
        with self._fitting():  # a refit may change the model: not checked against the last fit
            encoder = self._encoder()
            if self.max_length is not None:
                check_token_limit(encoder, self.max_length)
            self.__dict__["_fit_source"] = encoder.source  # a model loaded below: these files
            prompt = resolve_prompt(encoder, self.prompt_name, self.prompt)
            states = self._states(texts, encoder, prompt)
            width = encoder.hidden_size  # pools token states (check_mean_pooling: no Dense)
            fitted: dict[str, Any] = {
                "prompt_": prompt, "model_fingerprint_": encoder.source.fingerprint,
                "embedding_dim_": width, "n_features_out_": width, "objective_": objective,
                **train(self, texts, states, pairs, y, objective, width)}
            pooled, _ = _pool_numpy(Pooler.from_fitted(fitted), states)
            # distinct texts, as the transformer counts them (30 copies of one text would
            # centre it to a zero vector; "8 texts" were said for 4 distinct); learned for a
            # later center=True too, when it gets no advice about center
            fitted["center_"] = fit_center(pooled, None, len(set(texts)), warn=bool(self.center))
        # One assignment: an interrupt lands before it (the old state) or after (the new one).
        kept = {k: v for k, v in vars(self).items() if not _is_fitted(k)}
        self.__dict__ = {**kept, **fitted}
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X, y).transform(X)`` for texts; pairs are refused before training (their
        pooled vectors are per text: ``fit(pairs)``, then ``transform(texts)``)."""
        if _as_pairs(X) is not None:
            raise ValueError("fit_transform takes texts; after fit(pairs) (InfoNCE, CoSENT), "
                             "call transform on the texts to pool")
        return self.fit(X, y, **fit_params).transform(X)

    def transform(self, X: Any) -> np.ndarray:
        """Pooled vectors ``[n, n_features_out_]``, centred and normalised as ``center`` and
        ``normalize`` say."""
        from ._learned_pooling_fit import check_output_params

        check_output_params(self)
        center = getattr(self, "center_", None) if self.center else None  # absent: pickled before
        return truncate_and_normalize(self._pooled(X), None, self.normalize, center)

    def similarity(self, a: Any, b: Any = None) -> np.ndarray:
        """Cosine similarity matrix ``[len(a), len(b)]`` of the (uncentred) pooled vectors."""
        ea = self._pooled(a)
        return cosine_matrix(ea, ea if b is None else self._pooled(b))

    def _pooled(self, X: Any) -> np.ndarray:
        """Pooled vectors, :data:`POOL_CHUNK` texts at a time: only one chunk's token states
        are held (all of them at once grew with the input: +365 MB for 2,000 short texts on a
        64-d model, about 20 GB for 100k texts at 768-d)."""
        from ._learned_pooling_fit import Pooler

        check_is_fitted(self, "attention_")
        texts = validate_texts(X)
        encoder, pooler = self._encoder(), Pooler.from_fitted(self)
        out = np.empty((len(texts), self.n_features_out_), dtype=np.float32)
        for start in range(0, len(texts), POOL_CHUNK):
            part = texts[start : start + POOL_CHUNK]
            pooled = torch.from_numpy(_pool_numpy(pooler, self._states(part, encoder))[0])
            # a Normalize module after pooling (the only head check_mean_pooling lets through)
            # is the model's: applied, raw vectors (normalize=False) are the model's too
            out[start : start + len(part)] = encoder.apply_head(pooled).numpy()
        return out

    def token_weights(self, X: Any) -> pd.DataFrame:
        """Each text's tokens with their pooling weights (a text's weights sum to 1).

        Returns
        -------
        pandas.DataFrame
            Columns ``text`` (row of ``X``), ``position``, ``token``, ``weight`` and
            ``relative`` (weight times the text's token count: 1 = mean pooling's weight).
        """
        from ._learned_pooling_fit import Pooler

        check_is_fitted(self, "attention_")
        texts = validate_texts(X)
        encoder = self._encoder()
        _, weights = _pool_numpy(Pooler.from_fitted(self), self._states(texts, encoder))
        toks = tokens(encoder, texts, self.prompt_, self.max_length,
                      long_text=self.long_text, chunk_overlap=self.chunk_overlap)
        frames = [pd.DataFrame({"text": i, "position": np.arange(len(w)), "token": t,
                                "weight": w, "relative": w * len(w)})
                  for i, (t, w) in enumerate(zip(toks, weights, strict=True))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["text", "position", "token", "weight", "relative"])


#: Texts whose token states ``transform`` holds at a time (512 texts of 128 tokens at 768-d:
#: 100 MB of float16 states).
POOL_CHUNK = 512


def _as_pairs(X: Any) -> np.ndarray | None:
    """``X`` as an ``(n, 2)`` object array of text pairs, or None when it holds single texts
    (a 2-column DataFrame, or a 2-D table of non-``str`` rows, is pairs: checked by
    :func:`~skmoe.validation.split_pairs`)."""
    if isinstance(X, np.ndarray) and X.shape == (0, 2):
        return np.empty((0, 2), dtype=object)  # no pairs: fit says how many it needs
    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 2:
            return None
    elif isinstance(X, (list, tuple, np.ndarray)) and len(X) and not isinstance(X[0], str):
        table = np.asarray(X, dtype=object)
        if table.ndim != 2 or table.shape[1] == 1:
            return None  # texts (one column: what ColumnTransformer passes), or validate_texts
            # names the row that is not a text
    else:
        return None
    a, b = split_pairs(X)
    return np.array([a, b], dtype=object).T


#: Texts pooled in one padded tensor at most (fewer when long: ``PAD_TOKENS``).
POOL_ROWS = 256


def _pool_numpy(pooler: Pooler, states: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pooled float32 vectors ``[n, H]`` and each text's weights, with a fitted ``Pooler``."""
    from ._learned_pooling_fit import pool

    with torch.no_grad():
        pooled, _, weights = pool(pooler, states, POOL_ROWS)
    return pooled.numpy(), [w.numpy().astype(np.float64) for w in weights]


def _is_fitted(name: str) -> bool:
    """A fitted attribute's name (``name_``), as scikit-learn's ``check_is_fitted`` reads them."""
    return name.endswith("_") and not name.startswith("__")


def check_mean_pooling(encoder: SentenceEncoder, model: Any) -> None:
    """Refuse a model whose vectors are not the mean of its token states.

    LearnedPooling replaces mean pooling (its untrained state is exactly mean pooling, and its
    vectors are ``hidden_size`` wide): for a model that pools by CLS or max, or has a
    sentence-transformers Dense module after pooling, it gave other vectors (another width with
    a Dense) than the model's without a word. A Normalize module alone is applied (``_pooled``).
    """
    dense = encoder.head is not None and any(not isinstance(m, NormalizeModule)
                                             for m in encoder.head)
    if encoder.pooling == "mean" and not dense:
        return
    raise ValueError(
        f"LearnedPooling replaces the mean pooling of a model's token states with learned "
        f"attention (untrained: exactly mean pooling), but {str(model)!r} makes its vectors with "
        f"{encoder.modules_description}; pooled by LearnedPooling they would not be the model's "
        f"vectors{' (nor its width)' if dense else ''}. Use MoEEmbeddingTransformer for this "
        "model, or a model with mean pooling and no Dense module.")


def plot_token_weights(weights: pd.DataFrame, *, max_texts: int = 8, ax: Any = None) -> Any:
    """Which tokens carry each sentence: tokens on a line per text, shaded by relative weight.

    Parameters
    ----------
    weights : pandas.DataFrame
        :meth:`LearnedPooling.token_weights`'s output.
    max_texts : int, default=8
        Texts shown (the first ones).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
        Darker = more weight than mean pooling gives (``relative`` > 1), white = less.
    """
    import matplotlib.pyplot as plt
    from matplotlib import colors

    shown = weights[weights["text"].isin(sorted(weights["text"].unique())[:max_texts])]
    texts = list(dict.fromkeys(shown["text"]))
    if ax is None:  # wide enough for the longest line of tokens (about 0.1 inch per character)
        chars = max((sum(len(str(t)) + 1.6 for t in shown.loc[shown["text"] == i, "token"])
                     for i in texts), default=0.0)
        fig, ax = plt.subplots(figsize=(min(max(8.0, 0.105 * chars + 2.0), 60.0),
                                        0.6 + 0.45 * max(len(texts), 1)))
    else:
        fig = ax.figure
    top = max(float(shown["relative"].max()) if len(shown) else 1.0, 2.0)
    norm = colors.LogNorm(vmin=1.0, vmax=top)
    cmap = plt.get_cmap("Reds")
    width = 0.0
    for row, t in enumerate(texts):
        x = 0.0
        for tok, rel in shown.loc[shown["text"] == t, ["token", "relative"]].itertuples(index=False):
            shade = cmap(norm(max(rel, 1.0))) if rel > 1 else (1, 1, 1, 1)
            ax.text(x, -row, str(tok), fontsize=9, family="monospace", va="center",
                    bbox={"facecolor": shade, "edgecolor": "0.85", "pad": 1.5})
            x += len(str(tok)) + 1.6
        width = max(width, x)
    ax.set_xlim(-0.5, max(width, 1.0))
    ax.set_ylim(-len(texts) + 0.5, 0.5)
    ax.set_yticks([-r for r in range(len(texts))], [f"text {t}" for t in texts])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                 label="weight / mean-pooling weight")
    ax.set_title("Token weights of the learned pooling")
    return fig
