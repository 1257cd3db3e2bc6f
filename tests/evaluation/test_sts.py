import numpy as np
import pytest

from skmoe.evaluation import paired_cosine, sts_report


def _at(deg):
    r = np.deg2rad(deg)
    return [np.cos(r), np.sin(r)]


def test_paired_cosine_hand_values():
    A = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=float)
    B = np.array([[2, 0], [0, 3], [-1, -1], [1, 0]], dtype=float)
    np.testing.assert_allclose(paired_cosine(A, B), [1.0, 0.0, -1.0, 0.0])
    with pytest.raises(ValueError):
        paired_cosine(A, B[:2])


def test_spearman_hand_computed():
    # Pair cosines cos(10), cos(20), cos(30), cos(40) deg: decreasing similarity.
    X1 = np.array([_at(0)] * 4)
    X2 = np.array([_at(d) for d in (10, 20, 30, 40)])
    r = sts_report(X1, X2, [4.0, 3.0, 2.0, 1.0]).iloc[0]
    assert r.cosine_spearman == pytest.approx(1.0) and r.n_pairs == 4
    # One adjacent swap: rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    r = sts_report(X1, X2, [4.0, 3.0, 1.0, 2.0]).iloc[0]
    assert r.cosine_spearman == pytest.approx(0.8)
    r = sts_report(X1, X2, [1.0, 2.0, 3.0, 4.0]).iloc[0]
    assert r.cosine_spearman == pytest.approx(-1.0)


def test_groups_and_texts(recorder):
    table = {"a": _at(0), "b": _at(10), "c": _at(50), "d": _at(80)}
    tr = recorder(table)
    r = sts_report(["a", "a", "a", "b", "b", "b"], ["b", "c", "d", "a", "c", "d"],
                   [5, 3, 1, 1, 3, 5], groups=["x", "x", "x", "y", "y", "y"], transformer=tr)
    assert list(r.group) == ["x", "y"]
    np.testing.assert_allclose(r.cosine_spearman, [1.0, -1.0])
    assert len(tr.calls) == 1 and sorted(tr.encoded) == ["a", "b", "c", "d"]


def test_columns_of_different_lengths_are_refused_before_any_work(recorder):
    tr = recorder({t: _at(i) for i, t in enumerate("abcdefghijkl")})
    with pytest.raises(ValueError, match="10 first sentences, 12 second sentences and 11 scores"):
        sts_report(list("abcdefghij"), list("abcdefghijkl"), list(range(11)), transformer=tr)
    with pytest.raises(ValueError, match="one entry per pair"):
        sts_report(["a", "b"], ["a"], [1], transformer=tr)
    assert tr.calls == []


def test_degenerate_groups_say_which_group():
    X1 = np.array([_at(0)] * 4)
    X2 = np.array([_at(d) for d in (10, 20, 30, 40)])
    with pytest.raises(ValueError, match="group 'y' has 1 pair"):
        sts_report(X1, X2, [4, 3, 2, 1], groups=["x", "x", "x", "y"])
    with pytest.raises(ValueError, match="Missing gold score at pair 2"):
        sts_report(X1, X2, [4, 3, float("nan"), 1])
    with pytest.warns(UserWarning, match="group 'all': all gold scores are equal"):
        r = sts_report(X1, X2, [3, 3, 3, 3])
    assert np.isnan(r.cosine_spearman[0])
    with pytest.raises(ValueError, match="groups has a missing value .* at row 1"):
        sts_report(X1, X2, [4, 3, 2, 1], groups=["x", None, "x", "x"])


def test_groups_of_another_length_name_the_pairs(recorder):
    with pytest.raises(ValueError, match=r"the pairs \(X1\) has 2 rows but groups has 1"):
        sts_report(["a", "b"], ["c", "d"], [1.0, 2.0], groups=["g"], transformer=recorder())
