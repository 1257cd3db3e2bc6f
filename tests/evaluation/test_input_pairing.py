"""Report inputs: pandas arguments paired in another order are refused, every check that needs
only the labels, groups and k comes before any text is encoded, and near-miss containers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skmoe.evaluation import (
    FewShotSplit,
    FewShotWarning,
    bitext_accuracy,
    bitext_report,
    cluster_report,
    probe_report,
    routing_stats,
    sts_report,
    transfer_matrix,
    transfer_regimes,
)
from skmoe.evaluation.routing import encoder_of

LANGS = ["eng", "fra"]


def _frame(per_class: int = 4, labels: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    rows = [{"text": f"{lang} {label} {i}", "label": label, "lang": lang, "id": i * 10 + j}
            for lang in LANGS for j, label in enumerate(labels) for i in range(per_class)]
    return pd.DataFrame(rows, index=np.arange(len(rows)) * 3 + 100)


def _embedded(df: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(len(df), 4)) + (df["label"] == "a").to_numpy()[:, None] * 3


# ---- 1. pandas arguments with different indexes ------------------------------------------------

def _shuffled(s: pd.Series) -> pd.Series:
    return s.iloc[::-1]  # the same index labels in another order, as a sort would give


def _calls(df, recorder):
    tr, te = df, df.copy()
    X, y, g = tr.text, tr.label, tr.lang
    sy, sg = _shuffled(y), _shuffled(g)
    t = recorder()
    kw = dict(X_test=te.text, y_test=te.label, transformer=t, samples_per_label=2,
              n_experiments=1)
    return {
        "probe_report": (lambda: probe_report(X, sy, groups=g, **kw), "X and y"),
        "probe_report groups": (lambda: probe_report(X, y, groups=sg, groups_test=te.lang, **kw),
                                "X and groups"),
        "probe_report test": (lambda: probe_report(X, y, groups=g, groups_test=_shuffled(te.lang),
                                                   **kw), "X_test and groups_test"),
        "transfer_matrix": (lambda: transfer_matrix(X, y, sg, languages_test=te.lang, **kw),
                            "X and languages"),
        "transfer_regimes": (lambda: transfer_regimes(X, sy, g, languages_test=te.lang,
                                                      source_language="eng", **kw), "X and y"),
        "cluster_report": (lambda: cluster_report(X, sy, transformer=t), "X and y"),
        "sts_report": (lambda: sts_report(X, X, _shuffled(pd.Series(np.arange(len(X)) % 3,
                                                                     index=X.index)),
                                          transformer=t), "X1 and scores"),
        "bitext_report": (lambda: bitext_report(X, g, _shuffled(tr.id), transformer=t),
                          "X and ids"),
        "routing_stats": (lambda: routing_stats(object(), X, sg), "texts and groups"),
    }


@pytest.mark.parametrize("report", ["probe_report", "probe_report groups", "probe_report test",
                                    "transfer_matrix", "transfer_regimes", "cluster_report",
                                    "sts_report", "bitext_report", "routing_stats"])
def test_reports_refuse_pandas_arguments_with_different_indexes(report, recorder):
    call, names = _calls(_frame(), recorder)[report]
    first, second = names.split(" and ")
    with pytest.raises(ValueError, match=rf"^{first} and {second} are pandas objects with "
                       rf"different indexes \(row \d+ has index .*{second} = "
                       rf"{second}\.loc\[{first}\.index\].*to_numpy\(\)"):
        call()


def test_equal_indexes_and_plain_arrays_pair_as_before():
    df = _frame()
    emb = pd.DataFrame(_embedded(df), index=df.index)
    kw = dict(samples_per_label=2, n_experiments=2)
    plain = probe_report(emb.to_numpy(), df.label.to_numpy(), groups=df.lang.to_numpy(), **kw)
    same = probe_report(emb, df.label, groups=df.lang, **kw)
    other_y = _shuffled(df.label)
    realigned = probe_report(emb, other_y.loc[emb.index], groups=df.lang, **kw)
    by_position = probe_report(emb.to_numpy(), other_y, groups=df.lang.to_numpy(), **kw)
    pd.testing.assert_frame_equal(plain, same)
    pd.testing.assert_frame_equal(plain, realigned)
    assert len(by_position) == len(plain)  # one pandas argument: nothing to compare


# ---- 2. data checks before any text is encoded -------------------------------------------------

def _late_errors(df):
    X, y, g = df.text, df.label, df.lang
    te = dict(X_test=X, y_test=y, languages_test=g, samples_per_label=2, n_experiments=1)
    mixed = np.array(["a", 1] * (len(df) // 2), dtype=object)
    return {
        "y (n, 1)": (lambda t: probe_report(X, df[["label"]], groups=g, transformer=t),
                     ValueError, r"y must be 1-D .*shape \(16, 1\).*df\['col'\]"),
        "k too large": (lambda t: probe_report(X, y, groups=g, transformer=t,
                                               samples_per_label=4, n_experiments=1),
                        ValueError, "group 'eng': n_per_class=4 puts every row"),
        "source_language": (lambda t: transfer_regimes(X, y, g, source_language="en",
                                                       transformer=t, **te),
                            ValueError, "regime 'en': no training rows for 'en'"),
        "train_languages": (lambda t: transfer_matrix(X, y, g, train_languages=["deu"],
                                                      transformer=t, **te),
                            ValueError, r"train_languages: \['deu'\] not found"),
        "test_languages": (lambda t: transfer_regimes(X, y, g, test_languages=["deu"],
                                                      source_language="eng", transformer=t, **te),
                           ValueError, r"test_languages: \['deu'\] not found"),
        "cluster mixed labels": (lambda t: cluster_report(X, mixed, transformer=t),
                                 TypeError, "y mix several kinds of value"),
        "cluster y (n, 1)": (lambda t: cluster_report(X, df[["label"]], transformer=t),
                             ValueError, r"y must be 1-D"),
        "bitext pairs": (lambda t: bitext_report(X, g, df.id, pairs=[("eng", "deu")],
                                                 transformer=t),
                         ValueError, "language 'deu' not found"),
    }


@pytest.mark.parametrize("case", ["y (n, 1)", "k too large", "source_language",
                                  "train_languages", "test_languages", "cluster mixed labels",
                                  "cluster y (n, 1)", "bitext pairs"])
def test_data_errors_come_before_any_text_is_encoded(case, fitting_recorder, shared_log):
    call, error, match = _late_errors(_frame())[case]
    log = shared_log
    with pytest.raises(error, match=match):
        call(fitting_recorder(log=log))
    assert log == []


def test_the_fitting_recorder_encodes_when_the_call_is_valid(fitting_recorder, shared_log):
    df = _frame()
    log = shared_log
    probe_report(df.text, df.label, groups=df.lang, transformer=fitting_recorder(log=log),
                 samples_per_label=2, n_experiments=1)
    assert sorted(log) == sorted(df.text)  # every training text, once, by the fit


# ---- 3. k up to the whole pool: identical draws ------------------------------------------------

def test_k_equal_to_the_pool_warns_that_the_draws_are_identical():
    df = _frame(per_class=4)
    emb = _embedded(df)
    kw = dict(groups=df.lang.to_numpy(), X_test=emb, y_test=df.label.to_numpy(),
              groups_test=df.lang.to_numpy(), n_experiments=3)
    with pytest.warns(FewShotWarning, match=r"^group 'eng': every class has at most "
                      r"n_per_class=4 .* all 3 draws take every row, so they are identical"):
        scores = probe_report(emb, df.label.to_numpy(), samples_per_label=4, **kw)
    assert (scores.groupby(["group", "metric"]).score.std() == 0).all()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FewShotWarning)
        probe_report(emb, df.label.to_numpy(), samples_per_label=3, **kw)  # below: no warning
        probe_report(emb, df.label.to_numpy(), samples_per_label=4, **{**kw, "n_experiments": 1})


def test_train_draws_warn_when_no_class_is_larger_than_k():
    y = np.array([0] * 3 + [1] * 2)
    with pytest.warns(FewShotWarning, match="identical"):
        draws = list(FewShotSplit(n_per_class=3, n_splits=2).train_draws(y))
    assert np.array_equal(draws[0], draws[1])


# ---- 4. near-miss containers -------------------------------------------------------------------

def test_generators_of_texts_are_read_like_lists(recorder):
    df = _frame()
    kw = dict(groups=df.lang, samples_per_label=2, n_experiments=1)
    t = recorder()
    from_list = probe_report(list(df.text), df.label, transformer=t, **kw)
    from_gen = probe_report((x for x in df.text), df.label, transformer=t, **kw)
    pd.testing.assert_frame_equal(from_list, from_gen)
    a, b, gold = list(df.text[:8]), list(df.text[8:]), np.arange(8.0)
    expected = sts_report(a, b, gold, transformer=t)
    got = sts_report(iter(a), (x for x in b), gold, transformer=t)
    pd.testing.assert_frame_equal(expected, got)


def test_bitext_takes_a_single_pair_unwrapped():
    df = _frame()
    emb, lang, ids = _embedded(df), df.lang.to_numpy(), df.id.to_numpy()
    one = bitext_report(emb, lang, ids, pairs=("eng", "fra"))
    pd.testing.assert_frame_equal(one, bitext_report(emb, lang, ids, pairs=[("eng", "fra")]))
    with pytest.raises(ValueError, match=r"pairs entry 1 \('fra'\) is not a"):
        bitext_report(emb, lang, ids, pairs=[("eng", "fra"), "fra"])


@pytest.mark.parametrize("report", ["probe", "cluster", "bitext"])
def test_tuple_groups_are_refused_by_row(report):
    df = _frame()
    emb = _embedded(df)
    tuples = pd.Series(list(zip(df.lang, df.label, strict=True)), index=df.index)
    with pytest.raises(TypeError, match=r"at row 0 \(index 100\) is a tuple .*one string"):
        if report == "probe":
            probe_report(emb, df.label.to_numpy(), groups=tuples, samples_per_label=2)
        elif report == "cluster":
            cluster_report(emb, df.label.to_numpy(), groups=tuples)
        else:
            bitext_report(emb, tuples, df.id.to_numpy())
    with pytest.raises(ValueError, match="join each into one string"):
        probe_report(emb, df.label.to_numpy(), groups=list(tuples), samples_per_label=2)


# ---- 6. one nearest-neighbour search, one encoder lookup ---------------------------------------

def test_bitext_accuracy_matches_the_full_matrix_with_ties_to_the_lower_index():
    rng = np.random.default_rng(1)
    S = rng.normal(size=(300, 16))
    T = S + rng.normal(scale=1.5, size=S.shape)
    T[7] = T[3]  # a tie: row 7's nearest is row 3, the lower index
    S[7] = T[3]
    full = np.argmax((S / np.linalg.norm(S, axis=1, keepdims=True))
                     @ (T / np.linalg.norm(T, axis=1, keepdims=True)).T, axis=1)
    assert bitext_accuracy(S, T) == pytest.approx(np.mean(full == np.arange(len(S))))
    assert full[7] == 3


def test_bitext_accuracy_refuses_a_nan_row():
    S = np.eye(3)
    T = np.eye(3)
    T[2, 0] = np.nan
    with pytest.raises(ValueError, match="row 2 has a NaN"):
        bitext_accuracy(S, T)


def test_encoder_of_is_public_and_names_what_it_needs():
    with pytest.raises(TypeError, match="SentenceEncoder .* got object"):
        encoder_of(object())
