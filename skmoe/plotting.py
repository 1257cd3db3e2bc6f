"""Matplotlib figures from :mod:`skmoe.evaluation` results.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so no
global backend state changes and nothing pops up) and writes a PNG when ``path`` is given.
Plotting never computes embeddings; :func:`plot_embedding_map` only projects the ones it gets.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .evaluation.probe import transfer_table
from .evaluation.routing import RoutingStats

PathLike = str | os.PathLike[str] | None


def _finish(fig: Figure, path: PathLike, dpi: int = 120) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def _mean_std(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    agg = scores.groupby(keys, sort=False)["score"].agg(["mean", "std"])
    return agg.fillna({"std": 0.0}).reset_index()


def plot_probe(
    scores: pd.DataFrame,
    *,
    metric: str = "accuracy",
    x: str = "group",
    hue: str | None = "k",
    chance: float | None = None,
    chance_label: str = "chance",
    title: str | None = None,
    path: PathLike = None,
) -> Figure:
    """Bars of the mean score per ``x`` (e.g. language) with +- 1 std error bars over draws.

    Parameters
    ----------
    scores : DataFrame
        Tidy output of ``probe_report`` (``x="group"``) or ``transfer_regimes``
        (``x="test_language", hue="regime"``).
    metric : str
        Which ``metric`` rows to plot.
    x, hue : str
        Columns for the bar positions and the side-by-side bar series (``hue=None``: one
        series; a hue column with a single value is drawn as one series too).
    chance : float, optional
        Draw a dashed line at this score (e.g. the majority-class rate), labelled
        ``chance_label``.
    title : str, optional
    path : path, optional
        Save the figure as PNG there.
    """
    df = scores[scores["metric"] == metric]
    if df.empty:
        raise ValueError(f"no rows with metric={metric!r}; have {sorted(scores['metric'].unique())}")
    keys = [x] if hue is None else [x, hue]
    stats = _mean_std(df, keys)
    xs = list(pd.unique(stats[x]))
    hues = [None] if hue is None else list(pd.unique(stats[hue]))
    width = 0.8 / len(hues)
    fig = Figure(figsize=(max(6.0, 0.6 * len(xs) * max(1, len(hues)) ** 0.5 + 2), 4.2))
    ax = fig.add_subplot()
    pos = np.arange(len(xs))
    for i, h in enumerate(hues):
        part = stats if h is None else stats[stats[hue] == h]
        part = part.set_index(x).reindex(xs)
        label = None if h is None else f"{hue}={h}"
        ax.bar(pos + (i - (len(hues) - 1) / 2) * width, part["mean"], width,
               yerr=part["std"], capsize=2, label=label)
    if chance is not None:
        ax.axhline(chance, color="k", linestyle="--", linewidth=1, label=f"{chance_label} {chance:.2f}")
    ax.set_xticks(pos, [str(v) for v in xs], rotation=45, ha="right")
    ax.set_ylabel(metric)
    ax.set_ylim(0, max(1.0, float((stats["mean"] + stats["std"]).max()) * 1.05))
    ax.set_title(title or f"{metric} per {x} (mean +- std over draws)")
    if len(hues) > 1 or chance is not None:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)


def _heatmap(ax: Any, values: np.ndarray, rows: Sequence[Any], cols: Sequence[Any],
             annotate: bool, fmt: str, cmap: str, vmin: float | None, vmax: float | None,
             rotate: bool = True) -> Any:
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    if rotate:
        ax.set_xticks(np.arange(len(cols)), [str(c) for c in cols], rotation=45, ha="right")
    else:
        ax.set_xticks(np.arange(len(cols)), [str(c) for c in cols])
    ax.set_yticks(np.arange(len(rows)), [str(r) for r in rows])
    if annotate:
        lo, hi = np.nanmin(values), np.nanmax(values)
        mid = (lo + hi) / 2
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                            color="white" if v < mid else "black")
    return im


def plot_transfer(
    scores: pd.DataFrame,
    *,
    metric: str | None = None,
    k: int | None = None,
    annotate: bool = True,
    cmap: str = "viridis",
    title: str | None = None,
    path: PathLike = None,
) -> Figure:
    """Heatmap of a train-language x test-language transfer matrix.

    Parameters
    ----------
    scores : DataFrame
        Tidy ``transfer_matrix`` output (pivoted with ``transfer_table(scores, metric, k)``)
        or an already square table (index: train, columns: test).
    metric, k : optional
        Passed to ``transfer_table`` for tidy input.
    annotate : bool
        Write the value in each cell.
    """
    tidy = "train_language" in scores.columns
    table = transfer_table(scores, metric, k) if tidy else scores
    if tidy and metric is None:
        metric = str(scores["metric"].iloc[0])
    values = table.to_numpy(dtype=float)
    fig = Figure(figsize=(1.0 + 0.55 * values.shape[1], 1.0 + 0.45 * values.shape[0]))
    ax = fig.add_subplot()
    im = _heatmap(ax, values, list(table.index), list(table.columns), annotate, ".2f", cmap,
                  None, None)
    ax.set_xlabel("test language")
    ax.set_ylabel("train language")
    ax.set_title(title or f"cross-lingual transfer ({metric or 'score'})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _finish(fig, path)


def plot_routing(
    stats: RoutingStats,
    *,
    value: str = "share",
    layers: Sequence[int] | None = None,
    cmap: str = "magma",
    title: str | None = None,
    path: PathLike = None,
) -> Figure:
    """Group x expert heatmaps, one panel per MoE layer.

    Parameters
    ----------
    stats : RoutingStats
        From ``routing_stats``.
    value : {"share", "mean_weight", "mean_prob", "count"}
        Which column of ``stats.experts`` to colour by.
    layers : list of int, optional
        Default: every MoE layer.
    """
    df = stats.experts
    if value not in df.columns:
        raise ValueError(f"value must be one of {list(df.columns[3:])}, got {value!r}")
    layers = list(pd.unique(df["layer"])) if layers is None else list(layers)
    groups = list(stats.tokens.index)
    experts = list(range(stats.num_experts))
    mats = []
    for layer in layers:
        part = df[df["layer"] == layer]
        if part.empty:
            raise ValueError(f"layer {layer} has no routing statistics")
        mats.append(part.pivot(index="group", columns="expert", values=value)
                    .reindex(index=groups, columns=experts).to_numpy(dtype=float))
    vmin = float(np.nanmin([np.nanmin(m) for m in mats]))
    vmax = float(np.nanmax([np.nanmax(m) for m in mats]))
    ncols = min(len(layers), 3)
    nrows = int(np.ceil(len(layers) / ncols))
    fig = Figure(figsize=(1.5 + ncols * (0.45 * len(experts) + 1.5),
                          1.2 + nrows * (0.32 * len(groups) + 1.0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for i, (layer, mat) in enumerate(zip(layers, mats, strict=True)):
        ax = axes[i // ncols][i % ncols]
        im = _heatmap(ax, mat, groups, experts, False, ".2f", cmap, vmin, vmax, rotate=False)
        ax.set_title(f"MoE layer {layer}", fontsize="medium")
        ax.set_xlabel("expert")
        if i % ncols:
            ax.set_yticklabels([])
    for j in range(len(layers), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=value)
    fig.suptitle(title or f"expert routing ({value}, top-{stats.top_k} of {stats.num_experts})")
    return _finish(fig, path)


def plot_embedding_map(
    embeddings: Any,
    color: Any,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 0,
    reducer: Any = None,
    title: str | None = None,
    path: PathLike = None,
) -> Figure:
    """2-D UMAP map (cosine metric, seeded) of embeddings coloured by a category.

    Parameters
    ----------
    embeddings : array of shape (n_samples, n_features)
    color : array-like of shape (n_samples,)
        Category of each point, e.g. language or label.
    n_neighbors, min_dist, random_state
        UMAP settings. A fixed ``random_state`` makes UMAP deterministic (and single-threaded).
    reducer : object with ``fit_transform``, optional
        Use this 2-D reducer instead of UMAP.
    """
    X = np.asarray(embeddings, dtype=np.float32)
    cats = np.asarray(color, dtype=object)
    if X.ndim != 2 or len(X) != len(cats):
        raise ValueError(f"embeddings {X.shape} and color ({len(cats)},) do not match")
    if reducer is None:
        import umap  # slow to import (numba): only when a map is drawn

        reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(n_neighbors,
                            len(X) - 1), min_dist=min_dist, random_state=random_state)
    with warnings.catch_warnings():
        # A seed makes UMAP single-threaded, which it announces on every call.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        xy = np.asarray(reducer.fit_transform(X))
    levels = list(pd.unique(cats))
    fig = Figure(figsize=(7.5, 6))
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if len(levels) <= 10 else "tab20"]
    code = pd.Categorical(cats, categories=levels).codes
    colors = np.array([cmap(i % cmap.N) for i in range(len(levels))])
    # One scatter in a seeded random order, so no category is always drawn on top
    # (translations of one sentence often land on the same spot).
    order = np.random.default_rng(random_state).permutation(len(X))
    ax.scatter(xy[order, 0], xy[order, 1], s=10, alpha=0.8, c=colors[code[order]])
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[i], label=str(level))
               for i, level in enumerate(levels)]
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "UMAP (cosine) of the embeddings")
    ax.legend(handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _finish(fig, path)
