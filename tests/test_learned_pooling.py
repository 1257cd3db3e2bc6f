"""LearnedPooling: mean pooling at start, training that finds the keyword, sklearn contracts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skmoe import LearnedPooling, MoEEmbeddingTransformer, plot_token_weights
from skmoe import token_states as ts
from skmoe._learned_pooling_fit import AUTO_EPOCHS, AUTO_EPOCHS_SMALL, MIN_VALIDATION_ROWS

FILLERS = ("the house river green table music window paper water light stone city road "
           "morning small old new black white simple quiet").split()
KEYWORDS = ("apple", "banana")


def keyword_task(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts of 8 random fillers plus one keyword at a random place; the keyword is the label."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        words = list(rng.choice(FILLERS, size=8))
        label = int(rng.integers(2))
        words.insert(int(rng.integers(len(words) + 1)), KEYWORDS[label])
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.asarray(labels)


@pytest.mark.parametrize("normalize", ["rms", "l2", False])
def test_untrained_pooling_is_mean_pooling(fast_moe, normalize):
    texts = ["a first text", "ein zweiter Text, etwas länger als der erste", "x", "a first text"]
    pooled = LearnedPooling(fast_moe, max_iter=0, normalize=normalize, heads=3).fit(
        texts, [0, 1, 0, 0])
    # both centred on the fit texts' mean unit vector (the default center=True)
    want = MoEEmbeddingTransformer(fast_moe, normalize=normalize).fit(texts).transform(texts)
    np.testing.assert_allclose(pooled.transform(texts), want, atol=1e-5, rtol=0)
    assert pooled.n_iter_ == 0 and not pooled.attention_.any()
    np.testing.assert_allclose(pooled.center_, MoEEmbeddingTransformer(fast_moe).fit(texts).center_,
                               atol=1e-6)


def test_center_can_be_switched_after_fit_either_way(fast_moe):
    texts = ["a first text", "ein zweiter Text, etwas länger als der erste", "x", "noch einer"]
    labels = [0, 1, 0, 1]
    on = LearnedPooling(fast_moe, max_iter=0).fit(texts, labels)
    off = LearnedPooling(fast_moe, max_iter=0, center=False).fit(texts, labels)
    np.testing.assert_allclose(off.center_, on.center_, atol=1e-7)  # learned either way
    assert not np.allclose(off.transform(texts), on.transform(texts), atol=1e-3)
    np.testing.assert_allclose(off.set_params(center=True).transform(texts), on.transform(texts),
                               atol=1e-6)
    np.testing.assert_allclose(on.set_params(center=False).transform(texts),
                               off.set_params(center=False).transform(texts), atol=1e-6)


def test_center_false_gets_no_advice_about_the_centre(fast_moe):
    """Audit 8, M1: LearnedPooling(center=False) on 4 texts warned "center=True learned the
    centre from only 4 texts ... or pass center=False": advice about a setting the user did
    not choose (the centre is learned whatever center says, and unused while it is False)."""
    import warnings

    texts, labels = ["a first text", "a second one", "x", "noch einer"], [0, 1, 0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = LearnedPooling(fast_moe, max_iter=0, center=False, verbose=0).fit(texts, labels)
    assert off.center_ is not None  # still learned, for a later center=True
    with pytest.warns(UserWarning, match="center=True learned the centre from only 4 texts"):
        LearnedPooling(fast_moe, max_iter=0, verbose=0).fit(texts, labels)


def test_untrained_pooling_is_mean_pooling_with_e5(e5_path):
    texts = ["The cat sat on the mat.", "Paris is the capital of France.", "東京は日本の首都です。"]
    pooled = LearnedPooling(e5_path, prompt="query: ", max_iter=0).fit(texts, ["a", "b", "a"])
    want = MoEEmbeddingTransformer(e5_path, prompt="query: ").fit(texts).transform(texts)
    np.testing.assert_allclose(pooled.transform(texts), want, atol=1e-5, rtol=0)
    plain = LearnedPooling(e5_path, prompt="query: ", max_iter=0, center=False).fit(texts, [0, 1, 0])
    want = MoEEmbeddingTransformer(e5_path, prompt="query: ", center=False).fit([]).transform(texts)
    np.testing.assert_allclose(plain.transform(texts), want, atol=1e-5, rtol=0)


def test_training_puts_the_weight_on_the_deciding_keyword(fast_moe):
    texts, y = keyword_task(240, seed=0)
    est = LearnedPooling(fast_moe, max_iter=60, learning_rate=0.05, attention_penalty=0.01,
                         random_state=0).fit(texts, y)
    test_texts, _ = keyword_task(40, seed=1)
    weights = est.token_weights(test_texts)
    on_keyword = weights[weights["token"].isin(KEYWORDS)]
    assert len(on_keyword) == len(test_texts)  # one keyword token per text
    # mean pooling gives it 1/11 (8 fillers, keyword, [CLS], [SEP]); trained: most of the weight
    assert on_keyword["weight"].mean() > 0.5, on_keyword["weight"].describe()
    assert np.allclose(weights.groupby("text")["weight"].sum(), 1.0, atol=1e-5)
    untrained = clone(est).set_params(max_iter=0).fit(texts, y).token_weights(test_texts)
    assert untrained[untrained["token"].isin(KEYWORDS)]["weight"].max() < 0.1


def test_pairs_train_with_infonce_and_similarity_is_cosine(fast_moe):
    rng = np.random.default_rng(0)
    anchors = [" ".join(rng.choice(FILLERS, size=6)) + f" item{i}" for i in range(40)]
    pairs = np.array([[a, a.upper()] for a in anchors], dtype=object)
    est = LearnedPooling(fast_moe, max_iter=5, random_state=0).fit(pairs)
    assert est.objective_ == "infonce" and est.n_iter_ >= 1 and not hasattr(est, "coef_")
    assert np.isfinite(est.loss_curve_).all()
    sim = est.similarity(anchors[:3], anchors[3:5])
    # the cosine of the pooled vectors as trained: uncentred (center only shapes transform)
    assert est.center_ is not None
    est.set_params(center=False)
    u, v = est.transform(anchors[:3]), est.transform(anchors[3:5])
    u, v = u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(sim, u @ v.T, atol=1e-5)
    scored = LearnedPooling(fast_moe, max_iter=2).fit(pairs, np.linspace(0, 5, len(pairs)))
    assert scored.objective_ == "cosent"  # the default for scored pairs
    regressed = LearnedPooling(fast_moe, max_iter=2, objective="cosine_mse").fit(
        pairs, np.linspace(0, 5, len(pairs)))
    assert regressed.objective_ == "cosine_mse" and np.isfinite(regressed.loss_curve_).all()
    with pytest.raises(ValueError, match="cosent.*needs similarity scores"):
        LearnedPooling(fast_moe, objective="cosent").fit(pairs)


def test_class_labels_with_a_two_column_table_are_flagged(fast_moe):
    """A (title, body) DataFrame is read as text pairs: integer class ids then trained CoSENT
    (pairs ranked by class id) without a word; string labels failed without saying why."""
    import warnings

    import pandas as pd

    texts, y = keyword_task(40, seed=5)
    frame = pd.DataFrame({"title": texts, "body": texts[::-1]})
    labels = np.arange(40) % 4
    with pytest.warns(UserWarning, match=r"y holds 4 distinct integers, like class labels.*"
                                         r"2-column table is read as text pairs"):
        LearnedPooling(fast_moe, max_iter=1).fit(frame, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for CoSENT, or real scores: no warning
        LearnedPooling(fast_moe, max_iter=1, objective="cosent").fit(frame, labels)
        LearnedPooling(fast_moe, max_iter=1).fit(frame, np.linspace(0, 5, 40))
    with pytest.raises(ValueError, match="row 0 is 'a'.*to classify texts, pass one text column"):
        LearnedPooling(fast_moe, max_iter=1).fit(frame, ["a", "b"] * 20)


def test_clone_and_pickle_carry_parameters_not_weights(fast_moe):
    texts, y = keyword_task(60, seed=2)
    est = LearnedPooling(fast_moe, max_iter=3, random_state=0).fit(texts, y)
    blob = pickle.dumps(est)
    assert len(blob) < 50_000  # attention (64 x 1), standardisation, classifier: no encoder
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.transform(texts[:5]), est.transform(texts[:5]))
    assert not hasattr(clone(est), "attention_")


def test_grid_search_computes_token_states_once(fast_moe):
    texts, y = keyword_task(80, seed=3)
    ts.clear_memo()
    before = ts.STATS["texts"]
    search = GridSearchCV(
        LearnedPooling(fast_moe, max_iter=2, random_state=0),
        {"heads": [1, 2], "attention_penalty": [0.0, 0.1]}, cv=2,
        scoring=lambda est, X, y_: float(est.transform(X).sum() * 0 + 1))
    search.fit(texts, y)
    # 4 settings x 2 folds + the refit, and transforms in scoring: each text ran once
    assert ts.STATS["texts"] - before == len(set(texts))


def test_token_weights_plot_is_a_figure(fast_moe):
    import matplotlib

    matplotlib.use("Agg")
    texts, y = keyword_task(20, seed=4)
    est = LearnedPooling(fast_moe, max_iter=1).fit(texts, y)
    weights = est.token_weights(texts[:3])
    fig = plot_token_weights(weights)
    assert fig.axes and len(fig.axes[0].texts) == len(weights)  # one box per token


@pytest.mark.parametrize(("X", "y", "params", "match"), [
    (["a", "b"], None, {}, "needs labels y"),
    ([["a", "b"]], None, {"objective": "cross_entropy"}, "needs single texts"),
    (["a", "b"], [0, 1], {"objective": "infonce"}, r"needs an \(n, 2\) array"),
    (["a", "b"], [0, 1], {"objective": "triplet"}, "objective must be one of"),
    (["a", "b"], [0, 1], {"heads": 0}, "heads must be >= 1, got 0"),
    (["a", "b"], [0, 1], {"max_iter": "many"}, "max_iter must be an int >= 0 or 'auto'"),
    (["a", "b"], [0, 1], {"normalize": "max"}, "normalize must be one of"),
    ([["a", "b", "c"]], None, {}, r"shape \(n, 2\), got shape \(1, 3\)"),
    ([np.array(["a", "b", "c"]), np.array(["d", "e", "f"])], None, {}, r"list\(zip\(a, b\)\)"),
    # what each objective needs to learn anything, checked before the encoder loads
    (["a", "b"], ["x", "x"], {}, "needs at least 2 classes in y, got only 'x'"),
    (["a"], ["x"], {}, "needs at least 2 texts, got 1"),
    (["a", "b", "c"], ["x", None, "y"], {}, r"y has a missing value \(None/NaN\) at row 1"),
    (["a", "b", "c"], ["x", "y"], {}, r"one entry per text \(3\), got shape \(2,\)"),
    ([["a", "b"]], None, {}, "'infonce' needs at least 2 pairs, got 1"),
    (np.empty((0, 2), dtype=object), None, {}, "needs at least 2 pairs, got 0"),
    ([["a", "b"], ["c", "d"]], [1.0, float("nan")], {}, "scores y must be finite; row 1 is nan"),
    ([["a", "b"], ["c", "d"]], [1.0, float("inf")], {}, "scores y must be finite; row 1 is inf"),
    ([["a", "b"], ["c", "d"]], ["para", "not"], {}, "scores y must be numbers .* row 0 is 'para'"),
])
def test_bad_input_is_named(fast_moe, X, y, params, match):
    with pytest.raises(ValueError, match=match):
        LearnedPooling(fast_moe, **params).fit(X, y)


def test_early_stopping_restores_the_best_epoch(fast_moe):
    # random labels and a high learning rate: the held-out loss bottoms out before the end
    texts, _ = keyword_task(170, seed=2)  # 51 held-out rows: early stopping is on
    y = np.random.default_rng(0).integers(2, size=len(texts))
    params = dict(learning_rate=0.3, validation_fraction=0.3, random_state=0)
    long = LearnedPooling(fast_moe, max_iter=25, n_iter_no_change=25, **params).fit(texts, y)
    assert 1 <= long.best_iter_ < long.n_iter_ == 25, (long.best_iter_, long.n_iter_)
    # the same run stopped at the kept epoch: identical parameters, so they were restored
    short = LearnedPooling(fast_moe, max_iter=long.best_iter_, n_iter_no_change=25,
                           **params).fit(texts, y)
    assert short.n_iter_ == short.best_iter_ == long.best_iter_
    np.testing.assert_array_equal(long.attention_, short.attention_)
    np.testing.assert_array_equal(long.coef_, short.coef_)
    assert long.best_loss_ == short.best_loss_


def test_cosent_loss_depends_only_on_the_order_of_the_scores():
    import torch

    from skmoe._learned_pooling_fit import cosent_loss

    cos = torch.tensor([0.9, 0.1, 0.6, 0.35])
    scores = torch.tensor([4.0, 0.5, 2.0, 1.0])
    loss = cosent_loss(cos, scores, 0.05)
    torch.testing.assert_close(cosent_loss(cos, scores**3 + 7, 0.05), loss)  # same order
    assert loss < 0.05  # every better-scored pair already has the higher cosine
    assert cosent_loss(cos, -scores, 0.05) > 10  # reversed order: large
    assert cosent_loss(cos, torch.ones(4), 0.05) == 0  # no ordered pair: nothing to learn


def test_cosent_pairs_learn_to_rank_by_score(fast_moe):
    rng = np.random.default_rng(4)

    def pairs_of(n: int) -> tuple[np.ndarray, np.ndarray]:
        texts, y = keyword_task(2 * n, seed=int(rng.integers(1000)))
        return np.array(list(zip(texts[::2], texts[1::2], strict=True)), dtype=object), (
            y[::2] == y[1::2]).astype(float) * 5  # same keyword: similar

    pairs, scores = pairs_of(150)
    held, held_scores = pairs_of(60)
    est = LearnedPooling(fast_moe, objective="cosent", max_iter=40, learning_rate=0.05,
                         attention_penalty=0.01, random_state=0).fit(pairs, scores)
    assert est.objective_ == "cosent" and est.n_iter_ >= 1
    same = LearnedPooling(fast_moe, objective="cosent", max_iter=40, learning_rate=0.05,
                          attention_penalty=0.01, random_state=0).fit(pairs, scores**2 + 1)
    np.testing.assert_array_equal(same.attention_, est.attention_)  # order only

    def auc(model: LearnedPooling) -> float:
        cos = np.array([model.similarity([a], [b])[0, 0] for a, b in held])
        pos, neg = cos[held_scores > 0], cos[held_scores == 0]
        return float((pos[:, None] > neg[None, :]).mean())

    untrained = clone(est).set_params(max_iter=0).fit(pairs, scores)
    assert auc(est) > auc(untrained) + 0.2, (auc(est), auc(untrained))


def test_auto_epochs_train_small_labelled_sets_longer(fast_moe):
    """``max_iter="auto"``: a labelled set too small for a held-out split (fewer than 50 rows
    held out) trains on every row for up to 50 epochs; a larger one, and pairs, for up to 10."""
    texts, y = keyword_task(56, seed=4)  # 8 per label x 7 labels in size
    small = LearnedPooling(fast_moe, random_state=0).fit(texts, y)
    assert AUTO_EPOCHS < small.n_iter_ <= AUTO_EPOCHS_SMALL
    pairs = np.array([[a, b] for a, b in zip(texts[::2], texts[1::2], strict=True)])
    assert LearnedPooling(fast_moe, random_state=0).fit(pairs).n_iter_ <= AUTO_EPOCHS
    many, y_many = keyword_task(10 * MIN_VALIDATION_ROWS, seed=5)
    large = LearnedPooling(fast_moe, random_state=0).fit(many, y_many)
    assert 1 <= large.best_iter_ <= large.n_iter_ <= AUTO_EPOCHS


def test_transform_holds_one_chunk_of_token_states(fast_moe, monkeypatch):
    """transform held every row's token states at once (+365 MB for 2,000 short texts on a
    64-d model): now POOL_CHUNK texts at a time, with the same vectors."""
    import skmoe.learned_pooling as lp

    texts, y = keyword_task(40, 3)
    est = LearnedPooling(fast_moe, max_iter=2, random_state=0).fit(texts, y)
    whole = est.transform(texts)
    sizes: list[int] = []
    real = LearnedPooling._states

    def spy(self, part, *args):
        sizes.append(len(part))
        return real(self, part, *args)

    monkeypatch.setattr(lp, "POOL_CHUNK", 16)
    monkeypatch.setattr(LearnedPooling, "_states", spy)
    np.testing.assert_array_equal(est.transform(texts), whole)
    assert sizes == [16, 16, 8]


def test_token_states_show_progress_as_the_transformer_does(fast_moe, capsys):
    """Token states for the 1,344 sample texts took 490 s with nothing printed: a bar now,
    as verbose says (0: none, 2: at once; 1: after 2 s)."""
    from skmoe.token_states import clear_memo

    texts, y = keyword_task(12, 4)
    clear_memo()
    LearnedPooling(fast_moe, max_iter=0, verbose=2).fit(texts, y)
    assert "token states" in capsys.readouterr().err
    clear_memo()
    LearnedPooling(fast_moe, max_iter=0, verbose=0).fit(texts, y)
    assert "token states" not in capsys.readouterr().err
    with pytest.raises(TypeError, match="verbose must be an int, got 'loud'"):
        LearnedPooling(fast_moe, verbose="loud").fit(texts, y)


def test_truncation_warning_points_at_the_callers_line(fast_moe):
    """It pointed at torch/utils/_contextlib.py (the no_grad decorator between skmoe's frames),
    not at the line that called transform."""
    import warnings

    texts, y = keyword_task(8, 5)
    est = LearnedPooling(fast_moe, max_iter=0, max_length=8).fit(texts[:4] + texts[:4], y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.transform(["a long text " * 20])
    cut = [w for w in caught if "truncat" in str(w.message).lower()]
    assert cut and all(w.filename == __file__ for w in cut), [(w.filename, w.message) for w in caught]


def test_the_centre_counts_distinct_texts(fast_moe):
    """The centre was learned from every row, copies included: 4 texts given twice each were
    "8 texts", and one text given 30 times centred itself to a zero vector."""
    texts = ["alpha one", "beta two", "gamma three", "delta four"]
    with pytest.warns(UserWarning, match=r"from only 4 distinct texts"):
        LearnedPooling(fast_moe, max_iter=0).fit(texts * 2, [0, 1, 0, 1] * 2)
    one = LearnedPooling(fast_moe, max_iter=0).fit(["same text"] * 30, [0, 1] * 15)
    assert one.center_ is None
    assert np.linalg.norm(one.transform(["same text"])) > 0
