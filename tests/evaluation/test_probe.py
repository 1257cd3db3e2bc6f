"""Probe reports on tiny 1-D embeddings whose scores can be worked out by hand.

Training pools: in groups A and B class 0 sits at x=-1 and class 1 at x=+1; group C is the
mirror image (class 0 at +1). Any logistic regression fit on such points puts its boundary at
x=0 by symmetry. Test sets (labels 0, 0, 1, 1):
  A: x = -1, -1, +1, +1   -> A-trained head right 4/4
  B: x = -1, +0.9, +1, +1 -> A-trained head predicts 0, 1, 1, 1: accuracy 3/4,
                             F1 class 0 = 2/3, class 1 = 4/5, macro (2/3 + 4/5) / 2 = 11/15
  C: x = +1, +1, -1, -1   -> C-trained head 4/4, A-trained head 0/4
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, get_scorer, make_scorer

from skmoe.evaluation import (
    FewShotWarning,
    probe_report,
    summarize,
    transfer_matrix,
    transfer_regimes,
    transfer_table,
)

TEST_X = {"A": [-1, -1, 1, 1], "B": [-1, 0.9, 1, 1], "C": [1, 1, -1, -1]}


def _data(groups=("A", "B", "C"), per_class=4):
    Xtr, ytr, gtr, Xte, yte, gte = [], [], [], [], [], []
    for g in groups:
        sign = -1 if g == "C" else 1
        for label, x in ((0, -sign), (1, sign)):
            Xtr += [[x]] * per_class
            ytr += [label] * per_class
            gtr += [g] * per_class
        Xte += [[x] for x in TEST_X[g]]
        yte += [0, 0, 1, 1]
        gte += [g] * 4
    return (np.array(Xtr, float), np.array(ytr), np.array(gtr, object),
            np.array(Xte, float), np.array(yte), np.array(gte, object))


def test_probe_report_hand_computed():
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    s = probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte, groups_test=gte,
                     samples_per_label=(2, 3), n_experiments=3)
    assert list(s.columns) == ["group", "k", "seed", "metric", "score", "n_train", "n_test"]
    assert len(s) == 3 * 2 * 3 * 2
    acc = s[s.metric == "accuracy"].groupby("group").score
    f1 = s[s.metric == "f1_macro"].groupby("group").score
    assert acc.min()["A"] == acc.max()["A"] == 1.0
    assert acc.min()["C"] == acc.max()["C"] == 1.0
    assert np.allclose(s[(s.group == "B") & (s.metric == "accuracy")].score, 0.75)
    assert np.allclose(f1.min()["B"], 11 / 15) and np.allclose(f1.max()["B"], 11 / 15)
    assert set(s[s.k == 2].n_train) == {4} and set(s[s.k == 3].n_train) == {6}
    assert set(s.n_test) == {4}
    summ = summarize(s)
    row = summ[(summ.group == "B") & (summ.k == 2) & (summ.metric == "f1_macro")].iloc[0]
    assert row["mean"] == pytest.approx(11 / 15) and row["std"] == pytest.approx(0) and row.n == 3


def test_summarize_mean_and_sample_std():
    s = pd.DataFrame({"group": ["x", "x", "y"], "k": 8, "seed": [0, 1, 0], "metric": "accuracy",
                      "score": [1.0, 0.5, 0.2], "n_train": 8, "n_test": 2})
    out = summarize(s).set_index("group")
    assert out.loc["x", "mean"] == 0.75
    assert out.loc["x", "std"] == pytest.approx(np.sqrt(((0.25**2) * 2) / 1))  # ddof=1
    assert np.isnan(out.loc["y", "std"]) and out.loc["y", "n"] == 1
    assert list(summarize(s, by=["metric"])["mean"]) == [pytest.approx(1.7 / 3)]
    # sts_report's rows (no draws, no score column): a bare KeyError before
    sts = pd.DataFrame({"group": ["all"], "n_pairs": [10], "cosine_spearman": [0.5],
                        "cosine_pearson": [0.4]})
    with pytest.raises(ValueError, match="no 'score' column.*sts_report and bitext_report"):
        summarize(sts)


def test_transfer_matrix_hand_computed():
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    s = transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                        samples_per_label=2, n_experiments=2)
    assert len(s) == 3 * 3 * 2  # train x test x seeds, one metric
    table = transfer_table(s)
    # C-trained head on B's test: x=-1 -> 1 (wrong), 0.9 -> 0 (right), 1 -> 0, 1 -> 0 (wrong)
    expected = pd.DataFrame([[1.0, 0.75, 0.0], [1.0, 0.75, 0.0], [0.0, 0.25, 1.0]],
                            index=["A", "B", "C"], columns=["A", "B", "C"])
    np.testing.assert_allclose(table.loc[expected.index, expected.columns], expected)
    sub = transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                          train_languages=["C"], test_languages=["A", "B"],
                          samples_per_label=2, n_experiments=1)
    assert list(sub.train_language.unique()) == ["C"]
    assert sorted(sub.test_language.unique()) == ["A", "B"]
    np.testing.assert_allclose(sub.score, [0.0, 0.25])
    with pytest.raises(ValueError, match="not found"):
        transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                        train_languages=["Z"])


def test_transfer_table_puts_in_language_scores_on_the_diagonal_whatever_the_test_order():
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    back = np.argsort(-np.arange(len(gte)))  # test data in the order C, B, A
    s = transfer_matrix(Xtr, ytr, gtr, X_test=Xte[back], y_test=yte[back],
                        languages_test=gte[back], samples_per_label=2, n_experiments=2)
    assert list(pd.unique(s.test_language)) == ["C", "B", "A"]
    table = transfer_table(s)
    assert list(table.index) == list(table.columns) == ["A", "B", "C"]
    np.testing.assert_allclose(np.diag(table), [1.0, 0.75, 1.0])  # in-language, as above
    only_test = transfer_table(s[s.test_language != "A"])  # test languages a subset: train order
    assert list(only_test.columns) == ["B", "C"]


def test_missing_labels_are_refused_naming_the_row():
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    labels = ytr.astype(object)
    labels[3] = None
    with pytest.raises(ValueError, match="y has a missing value .* at row 3"):
        probe_report(Xtr, labels, groups=gtr, samples_per_label=2, n_experiments=1)
    with pytest.raises(ValueError, match="y_test has a missing value .* at row 0"):
        transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=[np.nan, *yte[1:]],
                        languages_test=gte, samples_per_label=2, n_experiments=1)


def test_few_shot_warnings_and_fit_errors_name_their_language():
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    with pytest.warns(FewShotWarning, match=r"^training language 'B': 2 class\(es\)"):
        transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                        train_languages=["B"], samples_per_label=5, n_experiments=1)
    with pytest.raises(ValueError, match="^group 'A': n_per_class=4 puts every row"):
        probe_report(Xtr, ytr, groups=gtr, samples_per_label=4, n_experiments=1)
    one_class = ytr.copy()
    one_class[gtr == "C"] = 0
    from skmoe.evaluation import UnseenLabelWarning

    with pytest.raises(ValueError, match=r"head fit failed for group='C', k=2, seed=0: .*one class"
                       ), pytest.warns(UnseenLabelWarning, match="group='C': 1"):
        probe_report(Xtr, one_class, groups=gtr, X_test=Xte, y_test=yte, groups_test=gte,
                     samples_per_label=2, n_experiments=1)


def test_transfer_regimes_hand_computed():
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    s = transfer_regimes(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                         source_language="A", regimes=("each", "en"),
                         samples_per_label=2, n_experiments=2)
    m = s.groupby(["regime", "test_language"]).score.mean()
    assert m["each"].to_dict() == {"A": 1.0, "B": 0.75, "C": 1.0}
    assert m["en"].to_dict() == {"A": 1.0, "B": 0.75, "C": 0.0}
    # "all" pools languages: with A and B only, the pool is consistent and k is per class in total.
    Xtr, ytr, gtr, Xte, yte, gte = _data(("A", "B"))
    s = transfer_regimes(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                         source_language="A", samples_per_label=3, n_experiments=2)
    assert list(s.columns[:2]) == ["regime", "test_language"]
    m = s.groupby(["regime", "test_language"]).score.mean()
    assert m["all"].to_dict() == {"A": 1.0, "B": 0.75}
    assert set(s[s.regime == "all"].n_train) == {6}
    with pytest.raises(ValueError, match="regime"):
        transfer_regimes(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                         regimes=("some",))
    with pytest.raises(ValueError, match="no training rows"):
        transfer_regimes(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                         source_language="eng_Latn", regimes=("en",))


def test_each_distinct_text_encoded_once_and_only_needed_rows(recorder):
    # 40 training texts per class and group, k=2 and 3 draws: at most 2*2*3 = 12 train texts per
    # group need encoding, plus the 4 test texts; one transform call in all.
    table, Xtr, ytr, gtr, Xte, yte, gte = {}, [], [], [], [], [], []
    for g in ("A", "B"):
        for label, x in ((0, -1.0), (1, 1.0)):
            for i in range(40):
                t = f"{g}-{label}-{i}"
                table[t] = [x, 0.01 * i]
                Xtr.append(t)
                ytr.append(label)
                gtr.append(g)
        # the test reuses one training text (encoded once) and one text twice
        for t, label, x in ((f"{g}-0-0", 0, -1.0), (f"{g}-t", 0, -1.0), (f"{g}-u", 1, 1.0),
                            (f"{g}-u", 1, 1.0)):
            table[t] = [x, 0.0]
            Xte.append(t)
            yte.append(label)
            gte.append(g)
    tr = recorder(table)
    s = probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte, groups_test=gte,
                     transformer=tr, samples_per_label=2, n_experiments=3)
    assert len(tr.calls) == 1
    enc = tr.encoded
    assert len(enc) == len(set(enc))  # each distinct text once
    assert len(enc) <= 2 * (12 + 3)
    assert {"A-t", "B-u"} <= set(enc)
    assert np.allclose(s[s.metric == "accuracy"].score, 1.0)


def test_no_test_set_scores_the_rest_of_the_group():
    Xtr, ytr, gtr, *_ = _data(("A", "C"), per_class=6)
    s = probe_report(Xtr, ytr, groups=gtr, samples_per_label=2, n_experiments=2,
                     metrics=("accuracy",))
    assert set(s.n_train) == {4} and set(s.n_test) == {8}
    assert np.allclose(s.score, 1.0)
    s = probe_report(Xtr, ytr, groups=gtr, samples_per_label=2, n_experiments=2, test_size=3)
    assert set(s.n_test) == {3}
    s = probe_report(Xtr, ytr, samples_per_label=2, n_experiments=1)  # no groups: "all"
    assert list(s.group.unique()) == ["all"]


def test_unfitted_sklearn_transformer_is_cloned_and_fitted_on_training_texts():
    texts_tr = ["red apple", "green apple", "fast car", "slow car"] * 2
    y_tr = ["fruit", "fruit", "car", "car"] * 2
    tfidf = TfidfVectorizer()
    s = probe_report(texts_tr, y_tr, X_test=["apple pie", "car crash zebra"],
                     y_test=["fruit", "car"], transformer=tfidf, samples_per_label=2,
                     n_experiments=2, metrics=("accuracy",))
    assert not hasattr(tfidf, "vocabulary_")  # the caller's object is untouched
    assert np.allclose(s.score, 1.0)


def test_custom_head_metrics_and_convergence_summary():
    Xtr, ytr, gtr, Xte, yte, gte = _data(("A",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = probe_report(Xtr, ytr, X_test=Xte, y_test=yte,
                         estimator=LogisticRegression(max_iter=1, tol=1e-12),
                         samples_per_label=2, n_experiments=3,
                         metrics={"acc": lambda est, X, y: float(np.mean(est.predict(X) == y))})
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1 and "3 of 3 probe fits" in str(conv[0].message)
    assert list(s.metric.unique()) == ["acc"]


def test_input_errors():
    Xtr, ytr, gtr, Xte, yte, gte = _data(("A",))
    with pytest.raises(ValueError, match="without y_test"):
        probe_report(Xtr, ytr, X_test=Xte)
    with pytest.raises(ValueError, match="groups_test"):
        probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte)
    with pytest.raises(ValueError, match="rows but y"):
        probe_report(Xtr, ytr[:-1])
    with pytest.raises(TypeError, match="transformer"):
        probe_report(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="no test rows"), pytest.warns(UserWarning, match="'Z'"):
        probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte,
                     groups_test=["Z"] * len(gte))


def test_probe_with_a_test_set_may_train_on_every_pool_row():
    # 4 rows per class in the pool: k=4 leaves nothing to test within the pool, which does not
    # matter when the test rows come from X_test.
    Xtr, ytr, gtr, Xte, yte, gte = _data()
    s = probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte, groups_test=gte,
                     samples_per_label=4, n_experiments=2)
    assert set(s.n_train) == {8} and set(s.n_test) == {4}
    assert np.allclose(s[(s.group == "B") & (s.metric == "accuracy")].score, 0.75)
    with pytest.raises(ValueError, match="no row is left to test"):  # without one it must fail
        probe_report(Xtr, ytr, groups=gtr, samples_per_label=4, n_experiments=2)


def test_summarize_a_cluster_report_averages_the_bootstraps():
    from skmoe.evaluation import cluster_report

    X = np.r_[np.zeros((6, 2)), np.full((6, 2), 10.0)] + np.random.default_rng(0).normal(size=(12, 2))
    y = np.r_[[0] * 6, [1] * 6]
    report = cluster_report(X, y, n_bootstrap=3)
    out = summarize(report)
    assert list(out.columns) == ["group", "metric", "mean", "std", "n"]
    assert list(out.metric) == ["v_measure", "ami"] and set(out.n) == {3}


def test_test_labels_never_seen_in_training_get_a_named_warning():
    """A test label no training row has can never be predicted: scores drop with a warning
    that names the label and how many rows carry it, pointing at the caller's line."""
    from skmoe.evaluation import UnseenLabelWarning

    Xtr, ytr, gtr, Xte, yte, gte = _data(groups=("A",))
    yte = np.array([0, 0, 1, 2])
    with pytest.warns(UnseenLabelWarning, match=r"test label\(s\) 2 \(1 of 4 test rows, first "
                                                r"at row 3 of y_test\) never appear in y") as rec:
        s = probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte, groups_test=gte,
                         samples_per_label=2, n_experiments=1, metrics=["accuracy"])
    assert rec[0].filename == __file__
    assert s["score"].tolist() == [0.75]  # the row labelled 2 is always wrong
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenLabelWarning)  # none when every label is seen
        probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=[0, 0, 1, 1], groups_test=gte,
                     samples_per_label=2, n_experiments=1, metrics=["accuracy"])


def test_labels_mixing_int_and_str_are_a_clear_type_error():
    Xtr, ytr, gtr, Xte, yte, gte = _data(groups=("A",))
    mixed = ytr.astype(object)
    mixed[mixed == 1] = "one"
    with pytest.raises(TypeError, match=r"y mix several kinds of value: number \(0\), "
                                        r"str \('one'\); convert them to one kind"):
        probe_report(Xtr, mixed, groups=gtr, samples_per_label=2, n_experiments=1)
    with pytest.raises(TypeError, match="y and y_test mix several kinds"):
        transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=yte.astype(str), languages_test=gte)


def test_a_label_missing_from_one_groups_training_rows_is_named():
    """Group B trains on labels {0, 2} but is tested on {0, 1}: label 1 is in y (group A has
    it), so the global check is silent; the per-fit check names the group and the label."""
    from skmoe.evaluation import UnseenLabelWarning

    Xtr, ytr, gtr, Xte, yte, gte = _data(groups=("A", "B"))
    ytr = np.where((gtr == "B") & (ytr == 1), 2, ytr)
    with pytest.warns(UnseenLabelWarning, match=r"^2 probe fit\(s\) are scored on a label their "
                      r"training rows lack \(group='B': 1\)") as rec:
        s = probe_report(Xtr, ytr, groups=gtr, X_test=Xte, y_test=yte, groups_test=gte,
                         samples_per_label=2, n_experiments=2, metrics=["accuracy"])
    assert len(rec) == 1 and rec[0].filename == __file__
    assert s[s.group == "B"].score.max() <= 0.5  # the rows labelled 1 are always wrong
    with pytest.warns(UnseenLabelWarning, match=r"train_language='B' -> test_language='A': 1"):
        transfer_matrix(Xtr, ytr, gtr, X_test=Xte, y_test=yte, languages_test=gte,
                        samples_per_label=2, n_experiments=1)


@pytest.mark.parametrize(("metrics", "names"), [
    (make_scorer(f1_score, average="macro"), ["f1_score"]),
    ([get_scorer("accuracy"), "f1_macro"], ["accuracy_score", "f1_macro"]),
    ({"f1": "f1_macro", "acc": get_scorer("accuracy")}, ["f1", "acc"]),
])
def test_metrics_as_names_callables_or_a_dict(metrics, names):
    Xtr, ytr, gtr, Xte, yte, gte = _data(groups=("A",))
    s = probe_report(Xtr, ytr, X_test=Xte, y_test=yte, samples_per_label=2, n_experiments=1,
                     metrics=metrics)
    assert list(s.metric) == names


@pytest.mark.parametrize(("metrics", "error", "match"), [
    ({"f1": "no_such_scorer"}, ValueError, "no_such_scorer"),
    ({"f1": 3}, TypeError, "metric 'f1' must be a scorer name or a callable"),
    ((), ValueError, "metrics is empty"),
    (["accuracy", "accuracy"], ValueError, "metrics name 'accuracy' twice"),
])
def test_bad_metrics_fail_before_any_head_is_fit(metrics, error, match, monkeypatch):
    Xtr, ytr, gtr, Xte, yte, gte = _data(groups=("A",))
    monkeypatch.setattr(LogisticRegression, "fit", lambda *a, **k: pytest.fail("head was fit"))
    with pytest.raises(error, match=match):
        probe_report(Xtr, ytr, X_test=Xte, y_test=yte, samples_per_label=2, n_experiments=1,
                     metrics=metrics)


def test_bad_settings_and_untrained_groups_are_named():
    Xtr, ytr, gtr, Xte, yte, gte = _data(groups=("A", "B"))
    for bad in (4.0, 0, [8, "16"], True):
        with pytest.raises(ValueError, match="samples_per_label must be an int >= 1"):
            probe_report(Xtr, ytr, X_test=Xte, y_test=yte, samples_per_label=bad)
    keep = gtr == "A"  # B has test rows only: not scored, and said so
    with pytest.warns(UserWarning, match="group\\(s\\) 'B' have test rows but no training rows"):
        s = probe_report(Xtr[keep], ytr[keep], groups=gtr[keep], X_test=Xte, y_test=yte,
                         groups_test=gte, samples_per_label=2, n_experiments=1)
    assert set(s.group) == {"A"}


def test_a_transformer_that_cannot_fit_on_texts_alone_says_to_fit_it_first():
    class NeedsLabels(TfidfVectorizer):
        def fit_transform(self, raw_documents, y=None):
            if y is None:
                raise ValueError("fit needs labels y")
            return super().fit_transform(raw_documents, y)

    with pytest.raises(ValueError, match=r"not fitted, and a clone fitted on the texts alone "
                       r"failed \(fit needs labels y\); fit it yourself first"):
        probe_report(["a b", "b c", "c d", "d e"], [0, 0, 1, 1], transformer=NeedsLabels(),
                     samples_per_label=1, n_experiments=1)
