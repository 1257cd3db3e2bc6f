import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate

from skmoe.evaluation import FewShotSplit, FewShotWarning


def _y():
    # 3 classes: 10 x "a", 6 x "b", 3 x "c"
    return np.array(["a"] * 10 + ["b"] * 6 + ["c"] * 3)


def test_k_per_class_disjoint_and_complete():
    y = _y()
    X = np.zeros((len(y), 1))
    splits = list(FewShotSplit(n_per_class=2, n_splits=5, random_state=0).split(X, y))
    assert len(splits) == 5
    for train, test in splits:
        assert sorted(np.unique(y[train], return_counts=True)[1]) == [2, 2, 2]
        assert len(np.intersect1d(train, test)) == 0
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_draws_differ_are_reproducible_and_nested():
    y = _y()
    cv = FewShotSplit(n_per_class=2, n_splits=4, random_state=3)
    first = [tr.tolist() for tr, _ in cv.split(y, y)]
    again = [tr.tolist() for tr, _ in cv.split(y, y)]
    assert first == again
    assert len({tuple(t) for t in first}) > 1
    other = [tr.tolist() for tr, _ in FewShotSplit(2, 4, random_state=4).split(y, y)]
    assert other != first
    # Same seed, larger k: the smaller draw is contained in the larger one.
    with pytest.warns(FewShotWarning):  # class 'c' has exactly 3 rows
        bigger = [set(tr) for tr, _ in FewShotSplit(3, 4, random_state=3).split(y, y)]
    for small, big in zip(first, bigger, strict=True):
        assert set(small) <= big


def test_rule_is_first_k_of_each_class_in_shuffled_order():
    # The documented rule, checked by hand on 6 rows: shuffle, then keep the first k per class.
    y = np.array([0, 0, 0, 1, 1, 1])
    cv = FewShotSplit(n_per_class=1, n_splits=1, random_state=0)
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max, size=1)[0]
    order = np.random.default_rng(int(seed)).permutation(6)
    first0 = next(i for i in order if y[i] == 0)
    first1 = next(i for i in order if y[i] == 1)
    train, test = next(cv.split(y, y))
    assert train.tolist() == sorted([first0, first1])
    assert test.tolist() == sorted(set(range(6)) - {first0, first1})


def test_small_class_gives_all_with_warning():
    y = _y()
    with pytest.warns(FewShotWarning, match=r"'c' \(3\)"):
        splits = list(FewShotSplit(n_per_class=4, n_splits=3).split(y, y))
    for train, test in splits:
        counts = dict(zip(*np.unique(y[train], return_counts=True), strict=True))
        assert counts == {"a": 4, "b": 4, "c": 3}
        assert "c" not in set(y[test])


def test_class_of_exactly_k_is_warned_and_all_classes_of_k_is_an_error():
    y = np.array(["a"] * 5 + ["b"] * 2)
    with pytest.warns(FewShotWarning, match=r"'b' \(2\)"):
        train, test = next(FewShotSplit(n_per_class=2, n_splits=1).split(y, y))
    assert len(test) == 3 and set(y[test]) == {"a"}
    with pytest.raises(ValueError, match="no row is left to test on"):
        list(FewShotSplit(n_per_class=5, n_splits=1).split(y, y))


def test_test_size_int_and_float():
    y = _y()
    # 19 rows - 6 drawn = 13 left: an int takes that many, 0.5 takes round(6.5) = 6 (banker's).
    for ts, expected in ((5, 5), (0.5, 6), (1.0, 13)):
        cv = FewShotSplit(n_per_class=2, n_splits=3, test_size=ts, random_state=0)
        for train, test in cv.split(y, y):
            assert len(train) == 6
            assert len(test) == expected
            assert len(np.intersect1d(train, test)) == 0
    # Training draws do not depend on test_size.
    a = [tr.tolist() for tr, _ in FewShotSplit(2, 3, test_size=4).split(y, y)]
    b = [tr.tolist() for tr, _ in FewShotSplit(2, 3).split(y, y)]
    assert a == b


@pytest.mark.parametrize("kwargs", [{"n_per_class": 0}, {"n_splits": 0}, {"test_size": 1.5},
                                    {"test_size": 0}, {"n_per_class": 2.5}])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        list(FewShotSplit(**kwargs).split(_y(), _y()))


def test_length_mismatch():
    with pytest.raises(ValueError, match="samples"):
        list(FewShotSplit().split(np.zeros((3, 1)), [0, 1]))


def test_sklearn_cv_integration():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    X = rng.normal(size=(90, 4)) + y[:, None] * 3.0
    cv = FewShotSplit(n_per_class=4, n_splits=6, random_state=0)
    assert cv.get_n_splits() == 6
    res = cross_validate(LogisticRegression(), X, y, cv=cv, return_indices=True)
    assert len(res["test_score"]) == 6
    assert all(len(tr) == 12 for tr in res["indices"]["train"])
    assert res["test_score"].mean() > 0.9  # well separated classes
    gs = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=cv).fit(X, y)
    assert gs.n_splits_ == 6
    assert "FewShotSplit(n_per_class=4" in repr(cv)


def test_texts_as_X():
    y = ["x", "y"] * 5
    texts = [f"t{i}" for i in range(10)]
    train, test = next(FewShotSplit(n_per_class=1, n_splits=1).split(texts, y))
    assert len(train) == 2 and len(test) == 8
