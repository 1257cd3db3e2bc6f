import numpy as np
import pytest

from skmoe.evaluation import cluster_report


def _blobs(labels_per_blob):
    """Tight blobs far apart; row i of blob b gets label labels_per_blob[b][i]."""
    X, y = [], []
    rng = np.random.default_rng(0)
    for b, labels in enumerate(labels_per_blob):
        center = np.zeros(4)
        center[b] = 100.0
        X += list(center + rng.normal(scale=0.01, size=(len(labels), 4)))
        y += labels
    return np.array(X), np.array(y)


def test_perfect_and_independent_clusterings():
    # Labels equal to blobs: V-measure = AMI = 1.
    X, y = _blobs([[0] * 10, [1] * 10, [2] * 10])
    r = cluster_report(X, y, n_bootstrap=3)
    assert len(r) == 3 * 2 and set(r.group) == {"all"} and set(r.n) == {30}
    assert np.allclose(r.score, 1.0)
    # Each blob holds 5 of each label: clusters carry no label information,
    # homogeneity = completeness = 0 so V-measure = 0; AMI (chance-adjusted) <= 0.
    X, y = _blobs([[0] * 5 + [1] * 5, [1] * 5 + [0] * 5])
    r = cluster_report(X, y, n_bootstrap=2).groupby("metric").score
    assert r.max()["v_measure"] == pytest.approx(0.0, abs=1e-12)
    assert r.max()["ami"] <= 1e-12


def test_a_group_with_one_label_scores_nan_with_a_warning():
    X, y = _blobs([[0] * 10, [1] * 10])
    groups = ["two labels"] * 20 + ["one label"] * 10 + ["one row"]
    X = np.vstack([X, X[:10], X[:1]])
    y = np.concatenate([y, [0] * 10, [1]])
    with pytest.warns(UserWarning, match=r"2 group\(s\) have a single label.*'one label', 'one row'"):
        r = cluster_report(X, y, groups=groups, n_bootstrap=2)
    by = r.groupby("group").score
    assert np.allclose(by.get_group("two labels"), 1.0)
    assert by.get_group("one label").isna().all() and by.get_group("one row").isna().all()


def test_groups_and_subsampling():
    X1, y1 = _blobs([[0] * 10, [1] * 10])
    X = np.vstack([X1, X1])
    y = np.concatenate([y1, y1[::-1]])
    groups = ["g1"] * 20 + ["g2"] * 20
    with pytest.warns(UserWarning, match="fewer than 10 rows per label"):  # 6 rows a label
        r = cluster_report(X, y, groups=groups, n_bootstrap=4, max_documents=12, random_state=1)
    assert list(r.group.unique()) == ["g1", "g2"]
    assert set(r.n) == {12} and set(r.bootstrap) == {0, 1, 2, 3}
    # Blobs stay pure in any subsample (as long as both labels are drawn): scores of 1.
    assert r.score.min() > 0.99 or (r.score == 1.0).mean() > 0.9
    with pytest.warns(UserWarning, match="fewer than 10 rows per label"):
        again = cluster_report(X, y, groups=groups, n_bootstrap=4, max_documents=12, random_state=1)
    assert r.equals(again)


def test_texts_need_each_distinct_text_once(recorder):
    table = {f"t{i}": [100.0 * (i % 2), 0.0] for i in range(6)}
    tr = recorder(table)
    with pytest.warns(UserWarning, match="fewer than 10 rows per label"):
        r = cluster_report([f"t{i}" for i in range(6)] * 2, [0, 1] * 6, transformer=tr,
                           n_bootstrap=2)
    assert len(tr.calls) == 1 and sorted(tr.encoded) == sorted(table)
    assert np.allclose(r.score, 1.0)


def test_cluster_and_sts_reports_refuse_what_they_cannot_score():
    from skmoe.evaluation import cluster_report, sts_report

    X = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(ValueError, match=r"y has a missing value \(None/NaN\) at row 2"):
        cluster_report(X, ["a", "b", None, "a", "b", "a"], n_bootstrap=1)
    with pytest.raises(ValueError, match="n_bootstrap must be an int >= 1, got 0"):
        cluster_report(X, list("ababab"), n_bootstrap=0)
    with pytest.raises(ValueError, match="needs at least one pair"):
        sts_report(X[:0], X[:0], [])


def test_small_groups_are_flagged_codes_refused_and_groups_scored_alone(fast_moe):
    """v_measure is not adjusted for chance: 20 random vectors with 7 labels scored 0.34 and a
    3-row group 0.92 beside a real one at 0.30, unwarned."""
    import warnings

    from skmoe import MoEEmbeddingTransformer

    rng = np.random.default_rng(0)
    y = np.arange(20) % 7
    with pytest.warns(UserWarning, match=r"1 group\(s\) have fewer than 10 rows per label \('all'\)"
                                         r".*read their ami"):
        r = cluster_report(rng.normal(size=(20, 8)), y, n_bootstrap=2)
    v = r[r.metric == "v_measure"].score.mean()
    assert v > 0.4 and r[r.metric == "ami"].score.mean() < v / 2  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 70 rows for 7 labels: no warning
        cluster_report(rng.normal(size=(70, 8)), np.arange(70) % 7, n_bootstrap=1)
    texts = [f"sentence number {i} about topic {i % 2}" for i in range(40)]
    labels = [i % 2 for i in range(40)]
    with pytest.raises(ValueError, match="cluster_report needs float embeddings, but got binary codes"):
        cluster_report(texts, labels, transformer=MoEEmbeddingTransformer(
            fast_moe, output_dtype="binary", verbose=0), n_bootstrap=1)
    # an unfitted transformer gives the model's own vectors: a group scores alike alone and
    # beside another (a centre learned on all of X made it depend on the other groups)
    groups = ["a"] * 20 + ["b"] * 20
    t = MoEEmbeddingTransformer(fast_moe, verbose=0)
    both = cluster_report(texts, labels, groups=groups, transformer=t, n_bootstrap=1)
    alone = cluster_report(texts[:20], labels[:20], transformer=t, n_bootstrap=1)
    assert np.allclose(both[both.group == "a"].score.to_numpy(), alone.score.to_numpy())


def test_a_groups_scores_do_not_depend_on_the_other_groups():
    """One generator ran across the groups: the same rows and random_state gave English a
    V-measure of 0.313 or 0.336 depending on which groups came before it (audit, e5-small)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8))  # no structure: every seed clusters differently
    y = np.tile(np.arange(4), 30)
    groups = np.repeat(["a", "b", "c"], 40)
    kwargs = {"n_bootstrap": 3, "max_documents": 30, "random_state": 3}
    with pytest.warns(UserWarning, match="fewer than 10 rows per label"):
        together = cluster_report(X, y, groups=groups, **kwargs)
    order = np.concatenate([np.flatnonzero(groups == g) for g in "cba"])  # each group's rows in order
    with pytest.warns(UserWarning, match="fewer than 10 rows per label"):
        reordered = cluster_report(X[order], y[order], groups=groups[order], **kwargs)
    c = groups == "c"
    with pytest.warns(UserWarning, match="fewer than 10 rows per label"):
        alone = cluster_report(X[c], y[c], groups=groups[c], **kwargs)
    key = ["group", "bootstrap", "metric"]
    for other in (reordered, alone):
        mine = together[together.group.isin(set(other.group))].sort_values(key)
        np.testing.assert_array_equal(mine.score.to_numpy(),
                                      other.sort_values(key).score.to_numpy())
