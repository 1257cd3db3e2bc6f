import numpy as np
import pytest

from skmoe.evaluation import bitext_accuracy, bitext_report

# Source rows s0, s1, s2 and their translations t0, t1, t2 (aligned by row).
S = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
T = np.array([[1.0, 0.1], [1.0, 0.3], [0.2, 1.0]])
# Cosines by hand (|t0| = 1.005, |t1| = 1.044, |t2| = 1.020, |s2| = 1.414):
#   s0: t0 .995, t1 .958, t2 .196 -> t0 hit
#   s1: t0 .100, t1 .287, t2 .981 -> t2 miss
#   s2: t0 .774, t1 .880, t2 .832 -> t1 miss            source -> target: 1/3
#   t0: s0 .995, s1 .100, s2 .774 -> s0 hit
#   t1: s0 .958, s1 .287, s2 .880 -> s0 miss
#   t2: s0 .196, s1 .981, s2 .832 -> s1 miss            target -> source: 1/3
# An asymmetric case: T3 = (1, .1), (.1, 1), (1, .15)
#   s2: t0 .774, t1 .774, t2 .804 -> hit, so S -> T3 = 3/3;
#   t2: s0 .989, s1 .148, s2 .804 -> s0 miss, so T3 -> S = 2/3.
T3 = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 0.15]])


def test_bitext_accuracy_hand_computed():
    assert bitext_accuracy(S, T) == pytest.approx(1 / 3)
    assert bitext_accuracy(T, S) == pytest.approx(1 / 3)
    assert bitext_accuracy(S, S * 3.0) == 1.0  # scale-invariant (cosine)
    assert bitext_accuracy(S, T3) == 1.0
    assert bitext_accuracy(T3, S) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        bitext_accuracy(S, T[:2])


def test_report_aligns_by_id_and_scores_both_directions():
    # Language "en" rows in id order 0,1,2; "xx" rows shuffled (ids 2,0,1) plus an extra id 9.
    X = np.vstack([S, T3[[2, 0, 1]], [[5.0, 5.0]]])
    lang = ["en"] * 3 + ["xx"] * 4
    ids = [0, 1, 2, 2, 0, 1, 9]
    r = bitext_report(X, lang, ids, pairs=[("en", "xx")])
    assert list(zip(r.source_language, r.target_language, strict=True)) == [("en", "xx"),
                                                                            ("xx", "en")]
    assert set(r.n) == {3}
    np.testing.assert_allclose(r.accuracy, [1.0, 2 / 3])
    full = bitext_report(X, lang, ids)  # default: all ordered pairs
    assert len(full) == 2


def test_report_errors_and_texts(recorder):
    with pytest.raises(ValueError, match="repeat"):
        bitext_report(np.vstack([S, T]), ["en"] * 3 + ["fr"] * 3, [0, 0, 1, 0, 1, 2])
    with pytest.raises(ValueError, match=r"pair \('en', 'en'\) has one language on both sides"):
        bitext_report(S, ["en", "en", "en"], [0, 1, 2], pairs=[("en", "en")])
    with pytest.raises(ValueError, match="not found"):
        bitext_report(S, ["en"] * 3, [0, 1, 2], pairs=[("en", "fr")])
    with pytest.raises(ValueError, match="share no ids"):
        bitext_report(np.vstack([S, T]), ["en"] * 3 + ["fr"] * 3, [0, 1, 2, 3, 4, 5])
    table = {"hello": [1, 0], "world": [0, 1], "bonjour": [0.9, 0.1], "monde": [0.1, 0.9]}
    tr = recorder(table)
    r = bitext_report(["hello", "world", "bonjour", "monde"], ["en", "en", "fr", "fr"],
                      [1, 2, 1, 2], transformer=tr)
    np.testing.assert_allclose(r.accuracy, [1.0, 1.0])
    assert len(tr.calls) == 1


def test_bitext_accuracy_tells_near_duplicate_targets_apart():
    """Scored in float32, two targets whose cosines differ below float32's step tied, and the
    lower index won: each source found the other's translation (accuracy 1.0 -> 0.0)."""
    rng = np.random.RandomState(0)
    T = rng.randn(2, 384).astype(np.float32)
    T[0] = T[1] + 1e-4 * rng.randn(384).astype(np.float32)
    assert bitext_accuracy(T.copy(), T) == 1.0
