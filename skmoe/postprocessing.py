"""After the cache: Matryoshka truncation, row normalisation (L2 or RMS) and output quantization.

These run on full-width float32 vectors straight from the cache or the engine, so every variant
(dimension, normalisation, dtype) shares cache entries.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from ._stack import external_stacklevel

OUTPUT_DTYPES = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
CALIBRATED_DTYPES = ("int8", "uint8")


#: Named row normalisations: ``"l2"`` unit length; ``"rms"`` unit length times ``sqrt(d)``, i.e.
#: unit root-mean-square per feature. A positive number ``r`` scales unit rows to length ``r``.
#: Every mode keeps the directions, so cosine similarities, nearest neighbours and k-means
#: partitions are those of ``"l2"``; only the scale that linear heads' regularisation sees changes.
NORMALIZE_MODES = ("l2", "rms")

#: The estimators' default output: the fit texts' mean unit vector subtracted (``center``), then
#: rows of L2 length 1.25. Measured on SIB-200, 32 languages (docs/evaluation-results.md, "Output
#: scaling and sklearn's default heads"): every text carries a common offset, so uncentred unit
#: vectors differ little and LogisticRegression()'s C=1 underfits where a language's vectors are
#: bunched (Portuguese: 6 points below StandardScaler + LogisticRegression at length 2).
#: Centred, the rows' length sets the scale the heads' regularisation sees: longer helps
#: LogisticRegression(), shorter helps LinearSVC() and RidgeClassifier(); 1.25 is the shortest
#: length at which LogisticRegression() is within 2 points of the tuned head in every language
#: (5-fold CV on the train split). A length, not a per-feature RMS, because the regularisation
#: sees ||x||: the right value does not move with the width.
DEFAULT_NORMALIZE = 1.25
DEFAULT_CENTER = True

#: The measured best length for uncentred rows (``center=False``; ``skmoe embed``, which has no
#: training texts to centre on): LogisticRegression(), LinearSVC() and RidgeClassifier() all do
#: well at their defaults (length 1 starves LogisticRegression's C=1, sqrt(d) starves the others).
UNCENTRED_NORMALIZE = 2.0


def normalize_mode(normalize: bool | str | float | None) -> str | float | None:
    """Canonical form of a ``normalize`` parameter: ``"rms"``, ``"l2"``, a length, or None (raw).

    ``True`` means ``"l2"`` (unit length, as documented before other modes existed); ``False`` and
    ``None`` keep the raw pooled vectors; a positive finite number is the rows' L2 length
    (``1.0`` is ``"l2"``).
    """
    if normalize is None or normalize is False or normalize is np.False_:
        return None
    if normalize is True or normalize is np.True_:
        return "l2"
    if isinstance(normalize, str) and normalize.lower() in NORMALIZE_MODES:
        return normalize.lower()
    if isinstance(normalize, numbers.Real) and np.isfinite(normalize) and normalize > 0:
        return "l2" if normalize == 1 else float(normalize)
    raise ValueError(
        f"normalize must be one of {NORMALIZE_MODES}, a positive row length such as 2.0, "
        f"True (= 'l2') or False/None (raw vectors), got {normalize!r}"
    )


def row_length(normalize: bool | str | float | None, width: int) -> float | None:
    """The L2 length ``normalize`` gives rows of ``width`` features (None: rows stay raw)."""
    mode = normalize_mode(normalize)
    if mode is None:
        return None
    return float(np.sqrt(width)) if mode == "rms" else 1.0 if mode == "l2" else mode


def describe_rows(transformer: Any) -> str | None:
    """How a fitted skmoe transformer's rows are post-processed, in words for a report (centred
    or not, their length); None for a transformer without ``center_`` and ``normalize``."""
    if not hasattr(transformer, "center_") or not hasattr(transformer, "normalize"):
        return None
    centre = ("centred on the mean of the training texts" if transformer.center_ is not None
              else "not centred")
    mode = normalize_mode(transformer.normalize)
    length = ("raw pooled lengths" if mode is None else "L2 length sqrt(width)" if mode == "rms"
              else f"L2 length {row_length(mode, 1):g}")
    return f"{centre}, {length}"


def truncate_and_normalize(
    x: np.ndarray, truncate_dim: int | None, normalize: bool | str | float | None,
    center: np.ndarray | None = None,
) -> np.ndarray:
    """Keep the first ``truncate_dim`` features, centre them if asked, then normalise each row as
    ``normalize`` says.

    ``center`` (from :func:`fit_center` on the same ``truncate_dim``): the rows are first scaled
    to unit length and ``center`` is subtracted, so the output points away from the common
    direction all texts share. ``"l2"`` (or True): unit L2 norm (eps 1e-12). ``"rms"``: unit L2
    norm times ``sqrt(d)`` for the ``d`` features kept (unit root-mean-square per feature). A
    number ``r``: L2 norm ``r``. False/None: unchanged (centred unit rows with ``center``).
    """
    if truncate_dim is not None:
        x = x[:, :truncate_dim]
    if center is not None:
        if center.shape != (x.shape[1],):
            raise ValueError(f"center has shape {center.shape}, the rows have {x.shape[1]} "
                             "features")
        x = l2_normalize(x) - center
        # a row at the centre (to float32 rounding) has no direction left: zero, not noise
        x[np.linalg.norm(x, axis=1) < CENTER_EPS] = 0.0
    length = row_length(normalize, x.shape[1])
    if length is not None:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        # divided by norm / length: unit rows (length 1) are exactly x / norm, as ever
        x = x / (np.maximum(norms, 1e-12) / length)
    return np.ascontiguousarray(x, dtype=np.float32)


#: Centred unit rows shorter than this are rounding noise around the centre: they become zero.
CENTER_EPS = 1e-5

#: Fewer fit rows than this learn no centre (one row would be centred to zero).
MIN_CENTER_ROWS = 2

#: A centre from fewer rows than this gets a warning: n rows centred on their own mean are
#: pushed apart (their cosines drop by about 1/(n-1); two rows come out exactly opposite).
FEW_CENTER_ROWS = 16


def fit_center(x: np.ndarray, truncate_dim: int | None,
               distinct: int | None = None, *, warn: bool = True) -> np.ndarray | None:
    """The mean direction of full-width rows ``x`` after truncation: the mean of their unit
    vectors (``[d]`` float32), or None for fewer than ``MIN_CENTER_ROWS`` rows (or ``distinct``
    texts behind them: 30 copies of one text would centre it to a zero vector); warns below
    ``FEW_CENTER_ROWS`` (``warn=False``: a centre learned for later, unused while
    ``center=False``, gets no advice about ``center``)."""
    n = len(x) if distinct is None else distinct
    if n < MIN_CENTER_ROWS:
        return None
    if warn and n < FEW_CENTER_ROWS:
        warnings.warn(
            f"center=True learned the centre from only {n} {'distinct ' * (n < len(x))}texts: "
            f"centred on their own mean, these texts are pushed apart (cosines between them "
            f"drop by about {1 / (n - 1):.2g}; two texts come out opposite). Fit on at least "
            f"{FEW_CENTER_ROWS} texts like those you will transform, or pass center=False.",
            UserWarning, stacklevel=external_stacklevel())
    if truncate_dim is not None:
        x = x[:, :truncate_dim]
    return l2_normalize(x, np.float64).mean(axis=0).astype(np.float32)


# Fewer calibration rows than this get a warning (sentence-transformers uses the same bound).
MIN_CALIBRATION_ROWS = 100


def calibration_ranges(x: np.ndarray) -> np.ndarray:
    """Per-feature ``[min, max]`` (shape ``[2, d]``) learned in ``fit`` for int8/uint8 output.

    Needs at least two distinct rows (one row gives every feature an empty range, so every
    output value would be the same); warns below ``MIN_CALIBRATION_ROWS`` rows, since values of
    later texts outside the learned ranges are clipped.
    """
    low, high = (x.min(axis=0), x.max(axis=0)) if len(x) else (None, None)
    # Two distinct rows differ in some feature, whose range is then not empty (and back):
    # O(n d), where counting distinct rows (np.unique) took seconds on 100k texts.
    if low is None or not (high > low).any():
        raise ValueError(
            f"int8/uint8 output learns each feature's range in fit() and needs at least 2 distinct "
            f"texts; got {'none' if low is None else 'only one'}. Fit on a few hundred texts like "
            "those you will transform."
        )
    if len(x) < MIN_CALIBRATION_ROWS:
        warnings.warn(
            f"int8/uint8 ranges learned from only {len(x)} texts: values of other texts outside "
            f"these ranges are clipped. Fit on at least {MIN_CALIBRATION_ROWS} representative texts.",
            UserWarning,
            stacklevel=external_stacklevel(),
        )
    return np.stack([low, high]).astype(np.float32)


def quantize(x: np.ndarray, output_dtype: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Convert float32 embeddings to ``output_dtype``.

    int8/uint8 map each feature's fitted ``[min, max]`` onto 256 steps (values outside clip);
    binary/ubinary keep the sign bit, packed 8 features per byte (``binary`` offset by -128 to
    int8, as sentence-transformers does).
    """
    if output_dtype == "float32":
        return x
    if output_dtype == "float16":
        return x.astype(np.float16)
    if output_dtype in CALIBRATED_DTYPES:
        if ranges is None:
            raise ValueError(f"output_dtype={output_dtype!r} needs ranges learned by fit().")
        lo, hi = ranges
        steps = (hi - lo) / 255.0
        steps = np.where(steps > 0, steps, 1.0)
        q = np.clip(np.rint((x - lo) / steps), 0, 255)
        return (q - 128).astype(np.int8) if output_dtype == "int8" else q.astype(np.uint8)
    if output_dtype in ("binary", "ubinary"):
        packed = np.packbits(x > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if output_dtype == "binary" else packed
    raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype!r}")


def output_width(dim: int, output_dtype: str) -> int:
    return (dim + 7) // 8 if output_dtype in ("binary", "ubinary") else dim


def l2_normalize(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows of ``x`` (as ``dtype``) scaled to unit L2 norm; a zero row stays zero (eps 1e-12).

    The one L2 normalisation of the package: cosines (``skmoe.similarity``, bitext, STS) use it.
    """
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_matrix(a: np.ndarray, b: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Cosine similarities ``[len(a), len(b)]`` of two embedding matrices, in ``[-1, 1]`` (a
    row's cosine with itself may round one step above 1: clipped)."""
    a, b = _two_matrices(a, b)
    return np.clip(l2_normalize(a, dtype) @ l2_normalize(b, dtype).T, -1.0, 1.0)


def cosine_rows(a: np.ndarray, b: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Row-aligned cosine similarities ``[n]``: ``cos(a[i], b[i])`` (0 for a zero row), in
    ``[-1, 1]``."""
    a, b = _two_matrices(a, b)
    if len(a) != len(b):
        raise ValueError(f"Row-aligned similarity needs as many rows in a as in b ({len(a)} != {len(b)}).")
    return np.clip(np.einsum("ij,ij->i", l2_normalize(a, dtype), l2_normalize(b, dtype)), -1.0, 1.0)


def _two_matrices(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"cosines need 2-D arrays (one vector per row), got shapes {a.shape} and "
                         f"{b.shape}; a single vector v is v[None, :]")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"vectors differ in width: {a.shape[1]} vs {b.shape[1]}")
    return a, b


#: Output dtypes whose values are codes (per-feature offsets, packed sign bits), not coordinates.
CODED_OUTPUTS = ("int8", "uint8", "binary", "ubinary")


def declared_output_dtype(transformer: Any) -> str:
    """The ``output_dtype`` a transformer (a Pipeline: its last step) declares; float32 if none."""
    while hasattr(transformer, "steps"):
        transformer = transformer.steps[-1][1]
    return str(getattr(transformer, "output_dtype", "float32"))


def refuse_coded(dtype: Any, who: str) -> None:
    """Refuse int8/uint8 vectors (``output_dtype`` int8, uint8, binary or ubinary): cosines and
    differences of codes mean nothing."""
    if str(dtype) in CODED_OUTPUTS:  # an output_dtype or an array's numpy dtype
        raise ValueError(
            f"{who} needs float embeddings, but got {dtype} codes (output_dtype int8, uint8, "
            "binary or ubinary: quantized or packed bits), on which cosines and differences "
            "mean nothing; use output_dtype='float32' or 'float16'.")
