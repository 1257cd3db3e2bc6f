"""Matplotlib figures from :mod:`skmoe.evaluation` results.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so no
global backend state changes and nothing pops up) and saves it when ``path`` is given (PNG, SVG,
PDF, ...: the extension decides).
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
from matplotlib.markers import MarkerStyle

from ._stack import external_stacklevel
from .evaluation.routing import RoutingStats
from .evaluation.tables import select_rows, setting_columns, transfer_table
from .validation import check_no_missing

PathLike = str | os.PathLike[str] | None


def _finish(fig: Figure, path: PathLike, dpi: int = 120) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def _mean_std(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and std per ``keys``; refuses to average over a setting that is not in ``keys``
    (three regimes or two k pooled into one bar would look like one measurement)."""
    pooled = {c: pd.unique(scores[c]).tolist() for c in setting_columns(scores)
              if c not in keys and c != "metric" and scores[c].nunique(dropna=False) > 1}
    if pooled:
        shown = "; ".join(f"{c!r}: {v[:4]}" for c, v in pooled.items())
        raise ValueError(f"the scores vary in {shown}, neither x nor hue: one bar would average "
                         "them; pass that column as hue (or x), or select its rows first")
    agg = scores.groupby(keys, sort=False)["score"].agg(["mean", "std"])
    return agg.reset_index()  # std NaN for one draw: no error bar


def plot_probe(
    scores: pd.DataFrame,
    *,
    metric: str | None = None,
    x: str = "group",
    hue: str | None = "k",
    chance: float | None = None,
    chance_label: str = "chance",
    title: str | None = None,
    path: PathLike = None,
) -> Figure:
    """Bars of the mean score per ``x`` (e.g. language) with +- 1 std error bars over draws.

    Vertical bars while the figure stays at most 12 inches wide; with more groups (e.g. 32
    languages) the bars turn horizontal, one row per group, at a fixed width.

    Parameters
    ----------
    scores : DataFrame
        Tidy output of ``probe_report`` (``x="group"``), ``transfer_regimes``
        (``x="test_language", hue="regime"``) or ``cluster_report`` (pass its ``metric``).
    metric : str, optional
        Which ``metric`` rows to plot (default: the only metric in ``scores``, or
        ``"accuracy"``, :func:`~skmoe.evaluation.probe_report`'s default, where it holds several).
    x, hue : str
        Columns for the bar positions and the side-by-side bar series (``hue=None``: one
        series; a hue column with a single value is drawn as one series too; the default
        ``"k"`` where ``scores`` has no such column, as ``cluster_report``'s, is one series).
    chance : float, optional
        Draw a dashed line at this score (e.g. the majority-class rate), labelled
        ``chance_label``.
    title : str, optional
    path : path, optional
        Save the figure there (the extension decides the format: .png, .svg, .pdf).
    """
    if scores.empty:
        raise ValueError("scores is empty: nothing to plot")
    if metric is None and "accuracy" in set(scores["metric"]):
        metric = "accuracy"
    if hue == "k" and "k" not in scores.columns:  # the default, for scores without shots
        hue = None
    missing = [f"{c!r} ({role})" for c, role in ((x, "x"), (hue, "hue"), ("metric", "metric"),
                                                  ("score", "score"))
               if c is not None and c not in scores.columns]
    if missing:  # was a bare KeyError
        raise ValueError(f"scores have no column {', '.join(missing)}; columns: "
                         f"{', '.join(map(str, scores.columns))}")
    df = select_rows(scores, "metric", metric)
    metric = str(df["metric"].iloc[0])
    keys = [x] if hue is None else [x, hue]
    stats = _mean_std(df, keys)
    xs = list(pd.unique(stats[x]))
    hues = [None] if hue is None else list(pd.unique(stats[hue]))
    size, horizontal = _probe_layout(len(xs), len(hues))
    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    _probe_bars(ax, stats, xs, hues, x, hue, horizontal)
    low, top = _score_limits(stats)
    if horizontal:
        if chance is not None:
            ax.axvline(chance, color="k", linestyle="--", linewidth=1,
                       label=f"{chance_label} {chance:.2f}")
        ax.set_yticks(np.arange(len(xs)), [str(v) for v in xs])
        ax.set_ylim(len(xs) - 0.5, -0.5)  # first group on top, as in the table
        ax.set_xlabel(metric)
        ax.set_xlim(low, top)
        # A tall figure: repeat the score axis on top so values can be read at both ends.
        ax.tick_params(axis="x", top=True, labeltop=True)
        ax.grid(axis="x", alpha=0.3)
    else:
        if chance is not None:
            ax.axhline(chance, color="k", linestyle="--", linewidth=1,
                       label=f"{chance_label} {chance:.2f}")
        ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs], rotation=45, ha="right")
        ax.set_ylabel(metric)
        ax.set_ylim(low, top)
        ax.grid(axis="y", alpha=0.3)
    one_draw = stats["std"].isna().all()
    ax.set_title(title or f"{metric} per {x} "
                 f"({'one draw, no spread shown' if one_draw else 'mean +- std over draws'})")
    if len(hues) > 1 or chance is not None:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _finish(fig, path)


def _score_limits(stats: pd.DataFrame) -> tuple[float, float]:
    """Score-axis limits: [0, 1] for scores in it (accuracy, F1), else the data's span with a
    margin, down to negative values (``neg_mean_absolute_error`` and other loss scorers)."""
    std = stats["std"].fillna(0.0)
    lo, hi = float((stats["mean"] - std).min()), float((stats["mean"] + std).max())
    low = 0.0 if lo >= 0 else lo - 0.05 * (max(hi, 0.0) - lo)
    top = max(1.0, hi * 1.05) if hi > 0 else 0.0
    return low, top


#: Widest vertical bar chart (inches); beyond it :func:`plot_probe` draws horizontal bars.
_MAX_BAR_WIDTH = 12.0


def _probe_layout(n_x: int, n_hue: int) -> tuple[tuple[float, float], bool]:
    """Figure size (inches) and orientation for ``n_x`` groups of ``n_hue`` bars."""
    width = max(6.0, 0.6 * n_x * max(1, n_hue) ** 0.5 + 2)
    if width <= _MAX_BAR_WIDTH:
        return (width, 4.2), False
    # Many groups: one row per group keeps the width fixed and the labels unrotated; each row
    # is tall enough for a tick label and its bars stay a few pixels thick.
    return (7.5, 1.6 + n_x * (0.12 + 0.06 * n_hue)), True


def _probe_bars(ax: Any, stats: pd.DataFrame, xs: list[Any], hues: list[Any], x: str,
                hue: str | None, horizontal: bool) -> None:
    """One bar series per hue value, side by side in each group, with +- 1 std error bars."""
    pos = np.arange(len(xs))
    width = 0.8 / len(hues)
    for i, h in enumerate(hues):
        part = stats if h is None else stats[stats[hue] == h]
        part = part.set_index(x).reindex(xs)
        label = None if h is None else f"{hue}={h}"
        at = pos + (i - (len(hues) - 1) / 2) * width
        if horizontal:
            ax.barh(at, part["mean"], width, xerr=part["std"], capsize=2, label=label)
        else:
            ax.bar(at, part["mean"], width, yerr=part["std"], capsize=2, label=label)


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
        lo = np.nanmin(values) if vmin is None else vmin
        hi = np.nanmax(values) if vmax is None else vmax
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
    vmin: float | None = None,
    vmax: float | None = None,
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
    vmin, vmax : float, optional
        Ends of the colour scale (default: the data's range). Anchor them at chance and 1.0
        (as the report does) so that colours show the distance from chance, not small
        differences between cells stretched over the whole scale.
    """
    if scores.empty:
        raise ValueError("scores is empty: nothing to plot")
    tidy = "train_language" in scores.columns
    table = transfer_table(scores, metric, k) if tidy else scores
    if tidy and metric is None:
        metric = str(scores["metric"].iloc[0])
    values = table.to_numpy(dtype=float)
    # at least 4 x 3 inches: one language's 1 x 1 matrix leaves no room for its labels otherwise
    fig = Figure(figsize=(max(4.0, 1.0 + 0.55 * values.shape[1]),
                          max(3.0, 1.0 + 0.45 * values.shape[0])))
    ax = fig.add_subplot()
    im = _heatmap(ax, values, list(table.index), list(table.columns), annotate, ".2f", cmap,
                  vmin, vmax)
    ax.set_xlabel("test language")
    ax.set_ylabel("train language")
    ax.set_title(title or f"cross-lingual transfer ({metric or 'score'})")
    fig.colorbar(im, ax=ax, shrink=0.8).set_label(metric or "score")
    fig.tight_layout()
    return _finish(fig, path)


def plot_routing(
    stats: RoutingStats,
    *,
    value: str = "share",
    layers: Sequence[int] | None = None,
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
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
    vmin, vmax : float, optional
        Ends of the colour scale shared by the panels (default: the data's range). With
        ``vmin=0`` a small difference between shares looks small.
    """
    df = stats.experts
    values = [c for c in df.columns[3:] if pd.api.types.is_numeric_dtype(df[c])]
    if value not in values:
        raise ValueError(f"value must be one of {values}, got {value!r}")
    layers = list(pd.unique(df["layer"])) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers is empty: pass None for every MoE layer, or some of "
                         f"{pd.unique(df['layer']).tolist()}")
    groups = list(stats.tokens.index)
    experts = list(range(stats.num_experts))
    mats = []
    for layer in layers:
        part = df[df["layer"] == layer]
        if part.empty:
            raise ValueError(f"layer {layer} has no routing statistics")
        mats.append(part.pivot(index="group", columns="expert", values=value)
                    .reindex(index=groups, columns=experts).to_numpy(dtype=float))
    if vmin is None:
        vmin = float(np.nanmin([np.nanmin(m) for m in mats]))
    if vmax is None:
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


def umap_reducer(n_rows: int, *, n_neighbors: int = 15, min_dist: float = 0.1,
                 random_state: int | None = 0) -> Any:
    """The 2-D UMAP (cosine metric) of the maps, for ``n_rows`` rows (at least 3): fewer
    neighbours than rows, and a random start below 4 rows, where UMAP's spectral start fails
    (scipy's "k >= N" TypeError: a 3-row map crashed a report after all its probes had run)."""
    import umap  # slow to import (numba): only when a map is drawn

    return umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(n_neighbors, n_rows - 1),
                     min_dist=min_dist, random_state=random_state,
                     init="spectral" if n_rows > 3 else "random")


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

    Colours follow the categories' sorted names (:func:`category_styles`), not the order
    of the rows, so a label keeps its colour in every map of the same set of labels. Beyond 20
    categories, colours repeat with a different marker shape, so each category has its own
    (colour, marker) pair; the legend (sorted) sits right of the map in columns of at most 20.

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
    check_no_missing(cats, "color")
    reducer_name = None if reducer is None else type(reducer).__name__
    if reducer is None and len(X) < 3:  # UMAP needs n_neighbors >= 2 and a neighbour besides
        raise ValueError(f"a UMAP map needs at least 3 rows, got {len(X)}; pass reducer= "
                         "(e.g. PCA(2)) for fewer")
    if len(X) < 2:
        raise ValueError(f"a 2-D map needs at least 2 rows, got {len(X)}")
    if reducer is None:
        reducer = umap_reducer(len(X), n_neighbors=n_neighbors, min_dist=min_dist,
                               random_state=random_state)
    with warnings.catch_warnings():
        # A seed makes UMAP single-threaded, which it announces on every call.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        xy = np.asarray(reducer.fit_transform(X))
    levels = sorted(pd.unique(cats), key=_sort_key)
    colors, markers = category_styles(levels)
    ncols = -(-len(levels) // _LEGEND_ROWS)
    longest = max((len(str(level)) for level in levels), default=0)
    # The map keeps its 6 x 6 in; the figure widens by the legend's estimated width.
    fig = Figure(figsize=(6.0 + ncols * (0.45 + 0.07 * longest), 6.0))
    ax = fig.add_subplot()
    code = pd.Categorical(cats, categories=levels).codes
    # One scatter in a seeded random order, so no category is always drawn on top
    # (translations of one sentence often land on the same spot).
    order = np.random.default_rng(random_state).permutation(len(X))
    dots = ax.scatter(xy[order, 0], xy[order, 1], s=10 if len(set(markers)) == 1 else 14,
                      alpha=0.8, c=colors[code[order]])
    if len(set(markers)) > 1:
        # Per-point marker shapes inside the one collection keep the random drawing order.
        shapes = [_marker_path(m) for m in markers]
        dots.set_paths([shapes[c] for c in code[order]])
    handles = [Line2D([], [], marker=markers[i], linestyle="", color=colors[i],
                      label=str(level)) for i, level in enumerate(levels)]
    ax.set_xticks([])
    ax.set_yticks([])
    default = "UMAP (cosine)" if reducer_name is None else reducer_name
    ax.set_title(title or f"{default} of the embeddings")
    ax.legend(handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5),
              ncols=ncols, columnspacing=1.0, handletextpad=0.3)
    fig.tight_layout()
    return _finish(fig, path)


#: Legend entries per column in :func:`plot_embedding_map` (about the height of the map).
_LEGEND_ROWS = 20
#: Filled marker shapes combined with colours when a map has more categories than ``tab20``.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _sort_key(level: Any) -> tuple[str, str]:
    return (type(level).__name__ if not isinstance(level, str) else "", str(level))


def category_styles(levels: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """A colour (RGBA row) and a marker for each category, assigned in sorted-name order.

    The same set of categories gets the same colours whatever order ``levels`` (or the rows
    of a map) come in, so a label has one colour across reports.

    Up to 10 categories get the ``tab10`` colours, up to 20 ``tab20``, all as circles. Beyond
    20, the ``tab20`` colours repeat with a different marker shape each round, so every
    (colour, marker) pair stays distinct up to 160 categories (more repeat pairs, with a warning).

    Parameters
    ----------
    levels : sequence
        The distinct categories.

    Returns
    -------
    colors : ndarray of shape (n, 4)
        In the order of ``levels``.
    markers : list of str
        Matplotlib marker codes, in the order of ``levels``.
    """
    rank = {level: i for i, level in enumerate(sorted(levels, key=_sort_key))}
    n = len(rank)
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    if n > cmap.N * len(_MARKERS):
        warnings.warn(f"{n} categories: colour and marker pairs repeat beyond "
                      f"{cmap.N * len(_MARKERS)}", UserWarning, stacklevel=external_stacklevel())
    order = [rank[level] for level in levels]
    colors = np.array([cmap(i % cmap.N) for i in order]).reshape(len(order), 4)
    markers = [_MARKERS[(i // cmap.N) % len(_MARKERS)] for i in order]
    return colors, markers


def _marker_path(marker: str) -> Any:
    style = MarkerStyle(marker)
    return style.get_path().transformed(style.get_transform())
