"""Each plot returns a Figure and writes a non-empty PNG (looked at by eye during development)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

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
    one = plot_probe(_probe_scores().query("k == 8"), hue=None, metric="f1_macro")
    assert len(one.axes[0].patches) == 3


#: 32 SIB-200 languages, the size of the subset the audit plotted.
LANGS32 = ("amh_Ethi arb_Arab ben_Beng ces_Latn deu_Latn ell_Grek eng_Latn fin_Latn fra_Latn "
           "heb_Hebr hin_Deva hun_Latn ind_Latn ita_Latn jpn_Jpan kor_Hang nld_Latn pes_Arab "
           "pol_Latn por_Latn quy_Latn ron_Latn rus_Cyrl spa_Latn swe_Latn swh_Latn tha_Thai "
           "tur_Latn ukr_Cyrl vie_Latn yor_Latn zho_Hans").split()


def test_plot_probe_many_groups_stays_readable(tmp_path):
    """32 languages x 3 regimes: bounded figure size in inches, bars turned horizontal with
    one unrotated label per language (was 35 x 4.2 in, a 8.6:1 strip)."""
    rows = [{"test_language": g, "regime": r, "seed": s, "metric": "accuracy",
             "score": 0.2 + 0.01 * i + 0.1 * j + 0.01 * s}
            for i, g in enumerate(LANGS32) for j, r in enumerate(("each", "en", "all"))
            for s in range(2)]
    fig = plot_probe(pd.DataFrame(rows), x="test_language", hue="regime", chance=1 / 7,
                     path=tmp_path / "regimes.png")
    _check_png(tmp_path / "regimes.png")
    width, height = fig.get_size_inches()
    assert width <= 12 and height <= 16 and max(width / height, height / width) <= 2.5
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == LANGS32
    assert all(t.get_rotation() == 0 for t in ax.get_yticklabels())
    bars = ax.patches
    assert len(bars) == 96
    # horizontal bars: their lengths are the means over seeds
    assert sorted(round(b.get_width(), 6) for b in bars)[0] == pytest.approx(0.205)
    assert max(b.get_height() for b in bars) < 0.3  # thickness: 0.8 / 3 of a row


def test_plot_probe_shows_negative_scores(tmp_path):
    scores = _probe_scores()
    scores["score"] = -scores["score"] * 2  # a loss scorer: -1.2 ... -1.8
    scores["metric"] = scores["metric"].replace("accuracy", "neg_mean_absolute_error")
    ax = plot_probe(scores, metric="neg_mean_absolute_error", path=tmp_path / "neg.png").axes[0]
    low, top = ax.get_ylim()
    assert top == 0.0 and low < min(p.get_height() for p in ax.patches) < -1.2
    assert plot_probe(_probe_scores()).axes[0].get_ylim() == (0.0, 1.0)  # [0, 1] scores as before


def test_plot_probe_few_groups_keeps_vertical_bars():
    fig = plot_probe(_probe_scores())
    assert tuple(fig.get_size_inches()) == (6.0, 4.2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["eng_Latn", "fra_Latn", "zho_Hans"]


def test_plot_transfer(tmp_path):
    langs = ["eng_Latn", "fra_Latn", "zho_Hans"]
    rows = [{"train_language": a, "test_language": b, "k": 16, "seed": s, "metric": "accuracy",
             "score": (0.9 if a == b else 0.6) + 0.01 * s, "n_train": 112, "n_test": 204}
            for a in langs for b in langs for s in range(2)]
    fig = plot_transfer(pd.DataFrame(rows), path=tmp_path / "transfer.png")
    _check_png(tmp_path / "transfer.png")
    img = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(img), 0.905)
    assert fig.axes[1].get_ylabel() == "accuracy"  # the colorbar says what its colors mean
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
    top = max(r["share"] for r in rows)
    assert panels[1].images[0].get_clim() == (min(r["share"] for r in rows), top)
    anchored = [ax for ax in plot_routing(stats, vmin=0.0).axes if ax.images]
    assert all(ax.images[0].get_clim() == (0.0, top) for ax in anchored)  # shared, from 0
    with pytest.raises(ValueError, match=r"value must be one of \['count', 'share'"):
        plot_routing(stats, value="nope")
    with pytest.raises(ValueError, match="value must be one of"):
        plot_routing(stats, value="group")  # a column, but not a number
    with pytest.raises(ValueError, match=r"layers is empty: .*\[1, 3\]"):
        plot_routing(stats, layers=[])


@pytest.mark.slow  # the first UMAP call in a process compiles numba kernels
def test_plot_probe_draws_cluster_scores_and_names_a_missing_column():
    """cluster_report's scores have no k: the default hue="k" raised a bare KeyError('k')."""
    scores = pd.DataFrame({"group": ["a", "a", "b", "b"], "bootstrap": [0, 1, 0, 1],
                           "metric": "ami", "score": [0.2, 0.3, 0.4, 0.5], "n": 10})
    fig = plot_probe(scores, metric="ami")
    assert len(fig.axes[0].patches) == 2  # one series, two bars
    with pytest.raises(ValueError, match=r"no column 'regime' \(hue\); columns: group, "):
        plot_probe(scores, metric="ami", hue="regime")


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


@pytest.mark.parametrize("n", [3, 4])
def test_a_umap_map_of_three_or_four_rows(n):
    """Its own check let 3 rows through, then UMAP's spectral start failed (scipy: "k >= N"): a
    report whose source language had 3 test rows crashed after all its probes had run."""
    from skmoe.report import _project

    X = np.random.default_rng(0).normal(size=(n, 16))
    fig = plot_embedding_map(X, ["a", "b", "a", "b"][:n])
    assert len(fig.axes[0].collections[0].get_offsets()) == n
    assert np.isfinite(_project(X, True, seed=0)).all()  # the report's maps


def test_plot_embedding_map_32_categories_are_distinct(tmp_path):
    """Beyond tab20's 20 colours every category keeps its own (colour, marker) pair, in the
    legend and on the map, and the legend is split into columns that fit beside the map."""
    rng = np.random.default_rng(0)
    X = np.vstack([c + rng.normal(size=(5, 8)) for c in rng.normal(size=(32, 8)) * 4])
    color = np.repeat(LANGS32, 5)
    fig = plot_embedding_map(X, color, reducer=PCA(2), path=tmp_path / "map32.png")
    _check_png(tmp_path / "map32.png")
    ax = fig.axes[0]
    legend = ax.get_legend()
    handles = legend.legend_handles
    assert [t.get_text() for t in legend.get_texts()] == sorted(LANGS32)
    pairs = {(tuple(np.round(h.get_color(), 3)), h.get_marker()) for h in handles}
    assert len(pairs) == 32
    # the points: one collection, whose colour + marker shape identifies the category
    dots = ax.collections[0]
    faces, paths = dots.get_facecolors(), dots.get_paths()
    assert len(paths) == len(faces) == len(X)
    styles = {(tuple(np.round(f, 3)), p.vertices.tobytes()) for f, p in zip(faces, paths, strict=True)}
    assert len(styles) == 32
    fig.draw_without_rendering()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    columns = {round(t.get_window_extent().x0) for t in legend.get_texts()}
    assert len(columns) >= 2 and box.height <= axes_box.height
    assert box.x0 >= axes_box.x1 and box.x1 <= fig.bbox.x1  # outside the map, inside the figure


def test_plot_embedding_map_default_title_names_the_reducer():
    X = np.random.default_rng(0).normal(size=(12, 4))
    fig = plot_embedding_map(X, np.repeat(["a", "b"], 6), reducer=PCA(2))
    assert fig.axes[0].get_title() == "PCA of the embeddings"
    assert len(fig.axes[0].collections[0].get_paths()) == 1  # <= 20 categories: all circles


def test_plot_transfer_scale_can_be_anchored_at_chance_and_one():
    square = pd.DataFrame([[0.72, 0.56], [0.6, 0.7]], index=["a", "b"], columns=["a", "b"])
    assert plot_transfer(square).axes[0].images[0].get_clim() == (0.56, 0.72)  # the data's range
    fig = plot_transfer(square, vmin=1 / 7, vmax=1.0)
    assert fig.axes[0].images[0].get_clim() == (1 / 7, 1.0)
    # annotations switch colour at the middle of the scale, not of the data
    colours = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colours["0.72"] == "black" and colours["0.56"] == "white"


def test_a_label_keeps_its_colour_whatever_the_order_of_the_rows():
    """Colours follow sorted label names: two maps whose labels appear in different orders
    (two reports) give each label the same colour, and the legend lists them sorted."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4))
    first = np.repeat(["sports", "health", "travel"], 4)
    second = np.repeat(["travel", "sports", "health"], 4)

    def colour_of(labels):
        fig = plot_embedding_map(X, labels, reducer=PCA(2))
        legend = fig.axes[0].get_legend()
        names = [t.get_text() for t in legend.get_texts()]
        assert names == sorted(names)
        return {n: tuple(h.get_color()) for n, h in zip(names, legend.legend_handles, strict=True)}

    assert colour_of(first) == colour_of(second)
    # the points too: the dots of "travel" carry the legend's colour in both maps
    for labels in (first, second):
        fig = plot_embedding_map(X, labels, reducer=PCA(2), random_state=0)
        order = np.random.default_rng(0).permutation(len(X))
        faces = fig.axes[0].collections[0].get_facecolors()
        travel = {tuple(np.round(f[:3], 3)) for f, lab in zip(faces, labels[order], strict=True)
                  if lab == "travel"}  # RGB: the dots are drawn with alpha 0.8
        assert travel == {tuple(np.round(colour_of(first)["travel"][:3], 3))}


def test_plot_probe_refuses_to_average_a_setting_into_one_bar():
    """transfer_regimes output drawn with the default hue="k": the three regimes would be
    averaged into one bar per language. Refused, naming the column; hue="regime" draws them."""
    regimes = pd.concat([_probe_scores().assign(regime=r) for r in ("each", "en", "all")])
    with pytest.raises(ValueError, match=r"vary in 'regime': \['each', 'en', 'all'\], neither x "
                       "nor hue"):
        plot_probe(regimes)
    with pytest.raises(ValueError, match=r"vary in 'k': \[8, 16\]"):
        plot_probe(_probe_scores(), hue=None)
    fig = plot_probe(regimes[regimes.k == 8], hue="regime")
    assert len(fig.axes[0].patches) == 3 * 3


def test_plot_probe_default_metric_is_the_one_the_scores_hold():
    """Scores of a callable or named non-accuracy metric plot without naming it (the default
    was "accuracy", which such scores lack); with several metrics accuracy stays the default
    and scores with several others ask which one."""
    scores = _probe_scores()
    f1 = scores[scores.metric == "f1_macro"]
    ax = plot_probe(f1).axes[0]
    assert ax.get_ylabel() == "f1_macro" and ax.get_title().startswith("f1_macro per group")
    assert plot_probe(scores).axes[0].get_ylabel() == "accuracy"
    several = pd.concat([f1, f1.assign(metric="mcc")])
    with pytest.raises(ValueError, match=r"several metric values \['f1_macro', 'mcc'\]; pick one"):
        plot_probe(several)
    with pytest.raises(ValueError, match="scores is empty"):
        plot_probe(scores.iloc[:0])


def _error_bar_points(ax) -> np.ndarray:
    segments = [s for c in ax.containers if getattr(c, "errorbar", None) is not None
                for lines in c.errorbar.lines[2] for s in lines.get_segments()]
    return np.concatenate(segments)


def test_plot_probe_with_one_draw_says_so_instead_of_zero_error_bars():
    one = _probe_scores().query("seed == 0")
    ax = plot_probe(one).axes[0]
    assert "one draw" in ax.get_title() and "std" not in ax.get_title()
    assert not np.isfinite(_error_bar_points(ax)).any()  # no bar drawn (was: zero-length ones)
    ax = plot_probe(_probe_scores()).axes[0]
    assert "mean +- std over draws" in ax.get_title()
    assert np.isfinite(_error_bar_points(ax)).all()


def test_small_or_empty_inputs_get_errors_that_say_what_is_missing():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scores is empty"):
        plot_transfer(pd.DataFrame(columns=["train_language", "test_language", "k", "metric",
                                            "score"]))
    with pytest.raises(ValueError, match="UMAP map needs at least 3 rows, got 2; pass reducer="):
        plot_embedding_map(rng.normal(size=(2, 8)), ["a", "b"])
    with pytest.raises(ValueError, match="2-D map needs at least 2 rows, got 1"):
        plot_embedding_map(rng.normal(size=(1, 8)), ["a"], reducer=PCA(2))
    assert isinstance(plot_embedding_map(rng.normal(size=(2, 8)), ["a", "b"], reducer=PCA(2)),
                      Figure)
    with pytest.raises(ValueError, match="color has a missing value .* at row 1"):
        plot_embedding_map(rng.normal(size=(4, 8)), ["a", None, "b", "a"], reducer=PCA(2))
