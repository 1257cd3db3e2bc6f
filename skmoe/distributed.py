"""Embedding on a Dask cluster: one task per partition, one model per worker process.

skmoe does not schedule anything itself. :func:`embed_dask` turns a dask DataFrame column, Series
or Bag of texts into a lazy dask collection whose tasks call a fitted
:class:`~skmoe.estimator.MoEEmbeddingTransformer`. The transformer pickles without weights; inside
a worker its ``transform`` fetches the encoder from the process-wide :mod:`skmoe.registry`, so
every worker process loads the model once and keeps it for all later tasks. Dask's scheduler
handles placement, retries and lost workers: a partition's result is a pure function of its texts,
so recomputing it after a worker dies yields the same rows, never a duplicate.

Requires the ``dask`` extra (``pip install skmoe[dask]``).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

__all__ = ["PreloadEncoder", "embed_dask", "worker_load_counts", "worker_tag"]

WORKER_PLACEHOLDER = "{worker}"


def _require_dask() -> None:
    try:
        import dask  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "skmoe.distributed needs dask; install it with `pip install skmoe[dask]`."
        ) from exc


# -- per-task helpers (run inside workers) -----------------------------------------------------
def worker_tag() -> str:
    """A file-name-safe name for the current Dask worker (``local-<pid>`` outside a worker).

    Worker names survive a nanny restart, so a per-worker cache file is reused by the worker
    that replaces a dead one.
    """
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):  # not inside a distributed worker
        name = f"local-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "worker"


def _for_this_worker(transformer: Any, cache: Any) -> Any:
    """The transformer with ``cache`` resolved for this worker (a copy; the input is shared)."""
    if cache is None:
        return transformer
    if isinstance(cache, (str, os.PathLike)) and WORKER_PLACEHOLDER in str(cache):
        cache = str(cache).replace(WORKER_PLACEHOLDER, worker_tag())
    local = copy.copy(transformer)
    local.cache = cache
    return local


def _embed_series_partition(texts: Any, transformer: Any, cache: Any, columns: list[str]) -> Any:
    import pandas as pd

    values = _for_this_worker(transformer, cache).transform(texts)
    return pd.DataFrame(values, index=texts.index, columns=columns)


def _embed_bag_partition(texts: Any, transformer: Any, cache: Any) -> np.ndarray:
    return _for_this_worker(transformer, cache).transform(list(texts))


def _fit_copy(transformer: Any) -> Any:
    # An unfitted transformer is fitted on one text: that records the model's identity and
    # width and learns no centre (it takes 2 texts), so rows come out uncentred, as from
    # ``fit([])``. Fit it on training texts first to have the corpus centred on them.
    return copy.deepcopy(transformer).fit([""])


# -- client side -------------------------------------------------------------------------------
def _current_client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _fitted(transformer: Any, client: Any) -> Any:
    """``transformer`` if fitted, else a fitted copy (fitted on a worker when a client exists).

    Fitting on a worker keeps the client free of model weights: the client may be a laptop
    without the GPU the workers use.
    """
    try:
        check_is_fitted(transformer)
        return transformer
    except NotFittedError:
        pass
    from .postprocessing import CALIBRATED_DTYPES

    if getattr(transformer, "output_dtype", None) in CALIBRATED_DTYPES:
        raise NotFittedError(
            f"output_dtype={transformer.output_dtype!r} learns its ranges in fit: fit the "
            "transformer on a sample of your texts before calling embed_dask."
        )
    client = _current_client(client)
    if client is None:
        return _fit_copy(transformer)
    return client.submit(_fit_copy, transformer, pure=False).result()


def _output_dtype(transformer: Any) -> np.dtype:
    from .postprocessing import quantize

    probe = np.zeros((1, transformer.n_features_out_), dtype=np.float32)
    if transformer.output_dtype in ("binary", "ubinary"):
        probe = np.zeros((1, transformer.n_features_out_ * 8), dtype=np.float32)
    ranges = getattr(transformer, "quantization_ranges_", None)
    return quantize(probe, transformer.output_dtype, ranges).dtype


def embed_dask(
    data: Any,
    transformer: Any,
    *,
    column: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    client: Any = None,
) -> Any:
    """Lazily embed a dask collection of texts, one task per partition.

    Parameters
    ----------
    data : dask DataFrame, dask Series or dask Bag of str
        The texts. A DataFrame needs ``column``.
    transformer : MoEEmbeddingTransformer
        Ideally fitted. An unfitted float-output transformer is fitted on a copy (on a worker
        when a distributed client is active, so the client never loads weights); int8/uint8
        output must be fitted by the caller on a sample.
    column : str, optional
        The text column of a DataFrame.
    cache : str or path, optional
        Overrides the transformer's ``cache`` inside the tasks. ``"{worker}"`` in the path is
        replaced by the worker's name (:func:`worker_tag`), giving each worker its own SQLite
        file (``"/scratch/emb-{worker}.sqlite"``). One file shared by all workers of one host
        is also safe (SQLite WAL); do not share one over NFS.
    client : distributed.Client, optional
        Used only to fit an unfitted transformer; defaults to the current client.

    Returns
    -------
    dask DataFrame or dask Array
        For a DataFrame/Series: a DataFrame with columns ``embedding_0 ...``, the input's index,
        divisions and partitions (join it back with ``dd.concat([df, emb], axis=1)``). For a
        Bag: an Array with one row-chunk per partition, in order (chunk lengths are unknown
        until computed; ``.compute_chunk_sizes()`` fills them in).

    Notes
    -----
    Nothing runs until ``.compute()``/``.persist()``. A worker that dies mid-job is handled by
    the scheduler: its lost and running partitions are recomputed elsewhere (up to
    ``distributed.scheduler.allowed-failures`` times per task); ``compute(retries=n)`` also
    retries tasks that raise. Results are keyed by partition, so no row is lost or duplicated.
    """
    _require_dask()
    import dask.bag as db
    import dask.dataframe as dd

    fitted = _fitted(transformer, client)
    if isinstance(data, db.Bag):
        return _embed_bag(data, fitted, cache)
    if isinstance(data, dd.DataFrame):
        if column is None:
            raise ValueError(
                "embed_dask got a DataFrame: pass column=<name of the text column>."
            )
        data = data[column]
    elif column is not None and isinstance(data, dd.Series):
        raise ValueError("column= applies to a DataFrame; got a Series.")
    if not isinstance(data, dd.Series):
        raise TypeError(
            f"embed_dask expects a dask DataFrame, Series or Bag of texts, got {type(data).__name__}."
        )
    return _embed_series(data, fitted, cache)


def _embed_series(series: Any, transformer: Any, cache: Any) -> Any:
    import pandas as pd

    columns = [str(c) for c in transformer.get_feature_names_out()]
    dtype = _output_dtype(transformer)
    meta = pd.DataFrame(
        {c: np.empty(0, dtype=dtype) for c in columns}, index=series._meta.index[:0]
    )
    return series.map_partitions(
        _embed_series_partition, transformer, cache, columns, meta=meta
    )


def _embed_bag(bag: Any, transformer: Any, cache: Any) -> Any:
    import dask
    import dask.array as da

    dtype = _output_dtype(transformer)
    width = int(transformer.n_features_out_)
    embed = dask.delayed(_embed_bag_partition, pure=True)
    blocks = [
        da.from_delayed(embed(part, transformer, cache), shape=(np.nan, width), dtype=dtype)
        for part in bag.to_delayed()
    ]
    return da.concatenate(blocks, axis=0)


# -- worker plugin and introspection -----------------------------------------------------------
def _preload_plugin_base() -> type:
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # pragma: no cover - depends on the environment
        return object
    return WorkerPlugin


class PreloadEncoder(_preload_plugin_base()):
    """Worker plugin that loads the transformer's model when each worker starts.

    Without it a worker loads the model lazily on its first task; with it the load happens at
    worker start-up (and again in a worker a nanny restarts), before any task is timed. Either
    way the model lives in :mod:`skmoe.registry`, once per worker process.

    Examples
    --------
    >>> client.register_plugin(PreloadEncoder(transformer))  # doctest: +SKIP
    """

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer
        # Registering a plugin with an existing name replaces it instead of adding a second.
        self.name = f"skmoe-preload-{transformer.model}"

    def setup(self, worker: Any) -> None:
        self.transformer.get_encoder()


def _load_count() -> int:
    from . import registry

    return int(sum(registry.LOAD_COUNTS.values()))


def worker_load_counts(client: Any) -> dict[str, int]:
    """How many encoders each worker process has loaded from disk so far, by worker address."""
    return client.run(_load_count)
