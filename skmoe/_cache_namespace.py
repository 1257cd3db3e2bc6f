"""The cache's namespace recipe: a fingerprint of everything that determines a vector.

:func:`embedding_namespace` is the one recipe every caller shares (the estimator, ``skmoe
embed``, MTEB, Dask); :func:`cache_namespace` hashes any JSON-like parts. Both are re-exported
by :mod:`skmoe.cache`. Needs only the standard library and numpy (the cache's test workers load
the cache modules without ``skmoe``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

#: Version of what a cached vector *means* (pooling semantics, byte layout). It is hashed into every
#: namespace, so bumping it turns all old entries into misses instead of serving stale vectors.
CACHE_FORMAT_VERSION = 1


def json_default(obj: Any) -> Any:
    # Only types with a stable, process-independent string form may enter a fingerprint.
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.dtype) or type(obj).__name__ == "dtype":  # numpy / torch dtypes
        return str(obj)
    raise TypeError(
        f"cache_namespace parts must be JSON-like (str, int, float, bool, None, lists, dicts, "
        f"paths or dtypes); got {type(obj).__name__}"
    )


def cache_namespace(**parts: Any) -> str:
    """Fingerprint the things that determine an embedding, as a cache namespace.

    Parameters
    ----------
    **parts
        For example ``revision=..., weights=..., prompt=..., max_length=..., pooling=...,
        dtype=...``. Values must be JSON-like (paths and numpy/torch dtypes are turned into
        strings). Keyword order does not matter.

    Returns
    -------
    str
        A 64-character hex sha256 of the canonical JSON of ``parts`` plus
        :data:`CACHE_FORMAT_VERSION`.
    """
    if "cache_format_version" in parts:
        raise ValueError("'cache_format_version' is reserved; it is added automatically")
    payload = {"cache_format_version": CACHE_FORMAT_VERSION, **parts}
    canonical = json.dumps(
        payload,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=json_default,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def embedding_namespace(
    *,
    model_fingerprint: str,
    revision: str,
    prompt: str,
    max_length: int,
    pooling: str,
    precision: str,
    device_type: str,
    model: str | None = None,
    long_text: str = "truncate",
    chunk_overlap: int | None = None,
    with_revision: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The namespace of the vectors one encoder setting computes, and its labels.

    The one recipe for addressing the cache: the estimator, ``skmoe embed``, MTEB and Dask all
    reach the same rows through it. Everything that changes a vector besides the text is a
    part: the model's fingerprint (weights, tokenizer, parsed config; see
    :func:`skmoe.encoder.loading.weights_fingerprint`), the prompt string, the
    effective token limit, the pooling, the compute precision and the device type (kernels
    differ between CPU and GPU in the last bits).

    Parameters
    ----------
    model_fingerprint, revision : str
        From the model's :class:`~skmoe.encoder.loading.ModelSource`. The revision is a label
        only: the fingerprint covers every file that changes a vector, and a hub commit that
        changes none (a README edit) must not empty the cache.
    prompt : str
        The resolved prefix string (not a prompt name).
    max_length : int
        The token limit in effect (the smaller of the asked and the model's own).
    pooling, precision, device_type : str
        ``"mean"``/``"cls"``; canonical precision (``"float32"``, ``"int8"``...); ``"cpu"``,
        ``"cuda"``...
    model : str, optional
        The name the user gave (labels only, never part of the key).
    long_text : {"truncate", "chunk"}, default="truncate"
        How texts longer than ``max_length`` are embedded. ``"chunk"`` and its
        ``chunk_overlap`` are parts of the key; ``"truncate"`` adds no part, so namespaces (and
        caches) from before the option existed stay valid.
    with_revision : bool, default=False
        The recipe before 2026-12-05, with the revision a part of the key: where rows written
        then are still found (:class:`skmoe.embedding.Embedder` looks there for what the
        current namespace lacks and copies what it finds).

    Returns
    -------
    namespace : str
        :func:`cache_namespace` of the parts.
    labels : dict
        What ``skmoe cache stats`` shows for it (the parts, the model's name, a short
        fingerprint).
    """
    parts = {"model_fingerprint": model_fingerprint, "prompt": prompt,
             "max_length": int(max_length), "pooling": pooling, "precision": precision,
             "device_type": device_type}
    if with_revision:
        parts["revision"] = revision
    if long_text != "truncate":
        parts.update(long_text=long_text, chunk_overlap=int(chunk_overlap or 0))
    labels = {**parts, "revision": revision, "model": model,
              "model_fingerprint": model_fingerprint[:12]}
    return cache_namespace(**parts), labels
