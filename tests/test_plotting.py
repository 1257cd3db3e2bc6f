"""Each plot returns a Figure and writes a non-empty PNG (looked at by eye during development)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from skmoe.evaluation import RoutingStats
from skmoe.plotting import plot_embedding_map, plot_probe, plot_routing, plot_transfer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


def _probe_scores():
    rows = []
    for g, base in (("eng_Latn", 0.8), ("fra_Latn", 0.7), ("zho_Hans", 0.6)):
        for k in (8, 16):
            for seed in range(3):
                for metric in ("accuracy", "f1_macro"):
                    rows.append({"group": g, "k": k, "seed": seed, "metric": metric,
                                 "score": base + 0.01 * k / 8 + 0.02 * seed, "n_train": 7 * k,
                                 "n_test": 50})
    return pd.DataFrame(rows)


def test_plot_probe(tmp_path):
    fig = plot_probe(_probe_scores(), chance=0.25, path=tmp_path / "probe.png")
    assert isinstance(fig, Figure)
    _check_png(tmp_path / "probe.png")
    ax = fig.axes[0]
    # 3 languages x 2 k values = 6 bars, heights are the means over seeds
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert len(heights) == 6 and heights[0] == pytest.approx(0.6 + 0.01 + 0.02)
    with pytest.raises(ValueError, match="metric"):
        plot_probe(_probe_scores(), metric="mcc")
    one = plot_probe(_probe_scores(), hue=None, metric="f1_macro")
    assert len(one.axes[0].patches) == 3


def test_plot_transfer(tmp_path):
    langs = ["eng_Latn", "fra_Latn", "zho_Hans"]
    rows = [{"train_language": a, "test_language": b, "k": 16, "seed": s, "metric": "accuracy",
             "score": (0.9 if a == b else 0.6) + 0.01 * s, "n_train": 112, "n_test": 204}
            for a in langs for b in langs for s in range(2)]
    fig = plot_transfer(pd.DataFrame(rows), path=tmp_path / "transfer.png")
    _check_png(tmp_path / "transfer.png")
    img = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(img), 0.905)
    square = pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "b"])
    assert isinstance(plot_transfer(square), Figure)


def test_plot_routing(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for layer in (1, 3):
        for g in ("en", "fr", "zh"):
            share = rng.dirichlet(np.ones(8))
            for e in range(8):
                rows.append({"layer": layer, "group": g, "expert": e, "count": int(share[e] * 200),
                             "share": share[e], "mean_weight": 0.3, "mean_prob": share[e]})
    stats = RoutingStats(pd.DataFrame(rows), pd.DataFrame(columns=["layer", "group_a", "group_b",
                                                                   "js_divergence"]),
                         pd.Series([100, 100, 100], index=["en", "fr", "zh"]), 2, 8, "")
    fig = plot_routing(stats, path=tmp_path / "routing.png")
    _check_png(tmp_path / "routing.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and panels[0].images[0].get_array().shape == (3, 8)
    with pytest.raises(ValueError):
        plot_routing(stats, value="nope")


@pytest.mark.slow  # the first UMAP call in a process compiles numba kernels
def test_plot_embedding_map(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 5
    X = np.vstack([c + rng.normal(size=(20, 16)) for c in centers])
    color = np.repeat(["a", "b", "c"], 20)
    fig = plot_embedding_map(X, color, n_neighbors=10, path=tmp_path / "map.png")
    _check_png(tmp_path / "map.png")
    ax = fig.axes[0]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 60
    # points of one blob share one colour, the three blobs three colours
    faces = ax.collections[0].get_facecolors()
    assert len({tuple(np.round(f, 3)) for f in faces}) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        plot_embedding_map(X, color[:-1])
