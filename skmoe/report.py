"""The main job's report: per-language few-shot probe, cross-lingual transfer, maps and routing.

:func:`build_report` embeds every distinct text of a labelled multilingual table once, then
reuses those vectors for everything: the per-language probe (k examples per label, several
seeded draws, ``LogisticRegression`` head as in MTEB), the train-language x test-language
transfer matrix (its source-language row is the "English -> others" table), and the 2-D maps.
For the native MoE model, expert-routing statistics per language are measured on the test texts
(a forward pass of their own: routing is not part of an embedding and a cached vector has none).

Layers: :func:`skmoe.evaluation.prepare_data` checks and splits the table, this module computes
and assembles the sections (text, tables, captions), :mod:`skmoe.render` writes them as
Markdown and HTML.

The folder it writes::

    probe_per_language.csv / .md   one row per language: accuracy and macro-F1, mean and std
    transfer_from_source.csv / .md one row per test language: probe trained on the source language
    transfer_matrix.csv / .md      train language x test language mean accuracy (.md: mean +- std)
    transfer_matrix_std.csv        the standard deviation over draws of each cell
    probe_scores.csv, transfer_scores.csv   every draw (tidy), for your own analysis
    accuracy_by_language.png       in-language vs. from-source accuracy per language
    transfer_heatmap.png           the transfer matrix, colour scale from chance to 1.0
    umap_map.png                   the source language's test texts (one translation per
                                   sentence), coloured by label
    umap_languages.png             every test text, coloured by language
                                   (named after the projection: pca_map.png, ... with PCA)
    bitext_retrieval.csv / .md     with an id column: translation retrieval per language
    routing.csv, routing_heatmap.png   expert shares per MoE layer and language (MoE only)
    learned_pooling.csv / .md, token_weights.png   learned vs mean pooling (learned_pooling=True)
    report.md, index.html          all of the above together
    .skmoe-report-files            what this report wrote: the next report into the folder
                                   removes those files first (never others)
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import render, report_pooling, report_sections
from ._partial_files import make_partial
from .embedding import ModelCard
from .engine.precision import precision_label
from .evaluation import (
    bitext_report,
    probe_report,
    routing_stats,
    summarize,
    transfer_matrix,
    transfer_table,
)
from .evaluation import data as _data
from .evaluation.embeddings import EmbeddingSource
from .report_sections import ReportResults, map_caption, meta_rows, routing_note, sections
from .search import search_vectors

#: Probe metrics reported per language.
METRICS = ("accuracy", "f1_macro")

#: The data's errors (a missing column, an unknown split value, ...): raised before any model work.
ReportError = _data.DataError

#: Names that moved to lower layers: importable from here with a DeprecationWarning.
_MOVED = {"prepare_data": (_data, "skmoe.evaluation"), "ReportData": (_data, "skmoe.evaluation"),
          "ENGLISH": (_data, "skmoe.evaluation.data"), "markdown_table": (render, "skmoe.render"),
          "NEAR_CHANCE": (report_sections, "skmoe.report_sections")}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        module, where = _MOVED[name]
        from ._stack import external_stacklevel

        warnings.warn(f"skmoe.report.{name} moved to {where}.{name}; import it from there",
                      DeprecationWarning, stacklevel=external_stacklevel())
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- tables -------------------------------------------------------------------------------------
def per_language_table(scores: pd.DataFrame, data: _data.ReportData, shots: int) -> pd.DataFrame:
    """One row per language: the training pool the draws come from, the shots per label, the
    test rows and draws, then mean and std of each metric."""
    summ = summarize(scores, by=["group", "metric"])
    wide = summ.pivot(index="group", columns="metric", values=["mean", "std"])
    out = pd.DataFrame({"language": data.languages})
    out["train_pool"] = [int((data.train["language"] == g).sum()) for g in data.languages]
    out["shots_per_label"] = shots
    out["test_rows"] = [int((data.test["language"] == g).sum()) for g in data.languages]
    out["draws"] = [int(summ[(summ["group"] == g)]["n"].iloc[0]) for g in data.languages]
    for metric in pd.unique(summ["metric"]):
        out[metric] = wide[("mean", metric)].reindex(data.languages).to_numpy()
        out[f"{metric}_std"] = wide[("std", metric)].reindex(data.languages).to_numpy()
    return out


def bitext_table(vectors: np.ndarray, rows: pd.DataFrame, source: Any) -> pd.DataFrame:
    """Bitext retrieval between ``source`` and every other language: one row per language with
    the accuracy in both directions and chance (1/n). ``rows`` are aligned with ``vectors``
    and have ``language`` and ``id`` columns."""
    others = [g for g in pd.unique(rows["language"]) if g != source]
    scores = bitext_report(vectors, rows["language"].to_numpy(), rows["id"].to_numpy(),
                           pairs=[(source, g) for g in others])
    acc = scores.set_index(["source_language", "target_language"])
    n = np.array([int(acc.loc[(source, g), "n"]) for g in others])
    return pd.DataFrame({
        "language": others,
        "n": n,
        f"from_{source}": [float(acc.loc[(source, g), "accuracy"]) for g in others],
        f"to_{source}": [float(acc.loc[(g, source), "accuracy"]) for g in others],
        "chance": 1.0 / n,
    })


def from_source_table(matrix: pd.DataFrame, per_language: pd.DataFrame, source: Any,
                      transfer_scores: pd.DataFrame) -> pd.DataFrame:
    """One row per test language: accuracy of the probe trained on ``source``, the in-language
    accuracy, and the gap, each with its standard deviation over draws (the gap's: of the
    per-draw differences, draw i of one probe paired with draw i of the other)."""
    row = matrix.loc[source]
    acc = transfer_scores[transfer_scores["metric"] == "accuracy"]
    src = acc[acc["train_language"] == source].pivot_table(
        index="seed", columns="test_language", values="score").reindex(columns=row.index)
    own = acc[acc["train_language"] == acc["test_language"]].pivot_table(
        index="seed", columns="test_language", values="score").reindex(columns=row.index)
    in_lang = per_language.set_index("language")["accuracy"].reindex(row.index)
    in_std = per_language.set_index("language")["accuracy_std"].reindex(row.index)
    return pd.DataFrame({
        "test_language": list(row.index),
        "train_language": source,
        "accuracy": row.to_numpy(dtype=float),
        "accuracy_std": src.std().to_numpy(dtype=float),
        "in_language_accuracy": in_lang.to_numpy(dtype=float),
        "in_language_accuracy_std": in_std.to_numpy(dtype=float),
        "gap": (in_lang - row).to_numpy(dtype=float),
        "gap_std": (own - src).std().to_numpy(dtype=float),
    })


# -- the report ---------------------------------------------------------------------------------
def build_report(
    transformer: Any,
    data: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str = "category",
    language_column: str = "language",
    split_column: str | None = "split",
    id_column: str | None = None,
    source_language: Any = None,
    shots: int = 8,
    seeds: int = 5,
    umap: bool | Any = True,
    routing: bool = True,
    learned_pooling: bool = False,
    progress: bool = True,
    random_state: int = 0,
    title: str = "skmoe report",
) -> Path:
    """Embed once, probe per language and across languages, plot, and write a report folder.

    Parameters
    ----------
    transformer : MoEEmbeddingTransformer or any scikit-learn transformer of texts
        Used as is when fitted. An unfitted one is not modified: a clone is fitted on the
        training texts (for the MoE encoder that only records the model's identity). Its own
        ``verbose`` decides whether embedding shows a progress bar.
    data : pandas.DataFrame
        One row per text with text, label and language columns (and optionally a split
        column with ``train`` / ``test`` values), e.g. ``skmoe.datasets.load_sib200_sample()``.
    out_dir : path
        Folder to write (created; existing report files are overwritten).
    text_column, label_column, language_column, split_column : str
        Column names; ``split_column=None`` holds out a seeded, stratified third of each
        language (see :func:`skmoe.evaluation.prepare_data`, which checks the table first).
    id_column : str, optional
        The id a sentence shares with its translations (SIB-200's ``index_id``). Adds a bitext
        retrieval section (source language against every other), and without a split column
        the hold-out takes whole ids, so no test row translates a training row.
    source_language : optional
        Language the transfer probes are read from (default: English when present, else the
        first language).
    shots : int, default=8
        Training examples per label in each probe draw. A label with no more training rows
        than this gives all of them to every draw (the report says so).
    seeds : int, default=5
        Seeded draws per probe; tables give mean and standard deviation over draws.
    umap : bool or object with ``fit_transform``, default=True
        Draw the 2-D maps with UMAP (True), another 2-D reducer (e.g. ``PCA(2)``, cloned for
        each map), or skip them (False). The map files are named after it: ``umap_map.png``,
        ``pca_map.png``, ...
    routing : bool, default=True
        Measure and plot expert routing per language when the model is the native MoE.
    learned_pooling : bool, default=False
        Add learned vs mean pooling per language (:mod:`skmoe.report_pooling`; needs skmoe's
        own transformer: a second encoder pass for the token states, then small fits).
    progress : bool, default=True
        Show a progress bar over the report's stages.
    random_state : int, default=0
        Seeds the few-shot draws, the hold-out split and UMAP.
    title : str

    Returns
    -------
    pathlib.Path
        The report's ``index.html``.

    Raises
    ------
    skmoe.evaluation.DataError
        Before any embedding, when the table cannot make a report (also importable as
        ``skmoe.report.ReportError``).
    """
    from tqdm.auto import tqdm

    from . import plotting

    started = time.perf_counter()
    final = Path(out_dir)
    rd = _data.prepare_data(data, text_column=text_column, label_column=label_column,
                            language_column=language_column, split_column=split_column,
                            id_column=id_column, source_language=source_language,
                            random_state=random_state)
    final.mkdir(parents=True, exist_ok=True)
    # One embedding pass: every distinct text (train + test, all languages) encoded once; an
    # unfitted transformer is cloned and fitted on the training texts, the user's left as is.
    t0 = time.perf_counter()
    hits_before = _cache_hits(transformer)  # before fitting, which may read the training texts
    source = EmbeddingSource(list(rd.train["text"]) + list(rd.test["text"]), transformer,
                             fit_texts=list(rd.train["text"]))
    transformer = source.transformer
    vectors = source.get()
    embed_seconds = time.perf_counter() - t0
    from_cache = None if hits_before is None else _cache_hits(transformer) - hits_before
    X_train, X_test = vectors[: len(rd.train)], vectors[len(rd.train):]
    y_train, y_test = rd.train["label"].to_numpy(), rd.test["label"].to_numpy()
    g_train, g_test = rd.train["language"].to_numpy(), rd.test["language"].to_numpy()

    model = _model_facts(transformer)  # without loading the weights where the cache spares them
    do_routing = routing and model is not None and model[0].is_moe
    do_bitext = "id" in rd.train.columns and len(rd.languages) > 1
    stages = ["probe per language", "transfer", "plots"]
    stages += ["2-D maps"] if umap is not False else []
    stages += ["bitext retrieval"] if do_bitext else []
    stages += ["routing"] if do_routing else []
    pool_params = report_pooling.pooling_params(transformer) if learned_pooling else None
    stages += ["learned pooling"] if pool_params is not None else []
    stages += ["write report"]
    bar = tqdm(total=len(stages), desc="report", unit="step", disable=not progress)
    stage = iter(stages)

    def step() -> None:
        bar.set_postfix_str(next(stage))

    res = ReportResults(rd=rd, shots=shots, seeds=seeds,
                        chance=float(pd.Series(y_test).value_counts(normalize=True).max()))
    # written whole in a folder of its own inside ``final``, then moved in (publish_report)
    work = make_partial(final / ".skmoe-report", folder=True)
    try:
        step()
        scores = probe_report(X_train, y_train, groups=g_train, X_test=X_test, y_test=y_test,
                              groups_test=g_test, samples_per_label=shots, n_experiments=seeds,
                              metrics=METRICS, random_state=random_state)
        res.per_language = per_language_table(scores, rd, shots)
        _write_table(work, "probe_per_language", res.per_language)
        scores.to_csv(work / "probe_scores.csv", index=False)
        bar.update()

        step()
        tscores = transfer_matrix(X_train, y_train, g_train, X_test=X_test, y_test=y_test,
                                  languages_test=g_test, samples_per_label=shots,
                                  n_experiments=seeds, metrics=("accuracy",),
                                  random_state=random_state)
        res.matrix = _square(transfer_table(tscores, "accuracy", shots), rd.languages)
        res.matrix_std = _square(tscores.pivot_table(
            index="train_language", columns="test_language", values="score", aggfunc="std"),
            rd.languages)
        res.from_source = from_source_table(res.matrix, res.per_language, rd.source_language,
                                            tscores)
        res.matrix.to_csv(work / "transfer_matrix.csv")
        res.matrix_std.to_csv(work / "transfer_matrix_std.csv")
        (work / "transfer_matrix.md").write_text(render.markdown_table(
            render.mean_std_cells(res.matrix, res.matrix_std), index=True), encoding="utf-8")
        _write_table(work, "transfer_from_source", res.from_source)
        tscores.to_csv(work / "transfer_scores.csv", index=False)
        bar.update()

        step()
        both = pd.concat([
            scores[scores["metric"] == "accuracy"].assign(probe="in-language"),
            tscores[tscores["train_language"] == rd.source_language]
            .drop(columns="train_language").rename(columns={"test_language": "group"})
            .assign(probe=f"trained on {rd.source_language}"),
        ], ignore_index=True)
        plotting.plot_probe(both, metric="accuracy", x="group", hue="probe", chance=res.chance,
                            title=f"few-shot accuracy ({shots} per label, {seeds} draws)",
                            path=work / "accuracy_by_language.png")
        plotting.plot_transfer(res.matrix, metric="accuracy", vmin=res.chance, vmax=1.0,
                               title=f"transfer accuracy ({shots} per label)",
                               path=work / "transfer_heatmap.png")
        bar.update()

        if umap is not False:
            step()
            res.maps = _maps(work, X_test, rd, umap, random_state, plotting)
            bar.update()

        if do_bitext:
            step()
            res.bitext = bitext_table(vectors, pd.concat([rd.train, rd.test]), rd.source_language)
            _write_table(work, "bitext_retrieval", res.bitext)
            bar.update()

        if do_routing:
            step()
            stats = routing_stats(transformer, list(rd.test["text"]), g_test, split_half=True)
            stats.experts.to_csv(work / "routing.csv", index=False)
            plotting.plot_routing(stats, vmin=0.0, path=work / "routing_heatmap.png")
            res.routing = (_encoder_or_none(transformer).moe_config, routing_note(stats))
            bar.update()

        if pool_params is not None:
            step()
            res.pooling = report_pooling.compare_pooling(pool_params, rd, work,
                                                         random_state=random_state)
            bar.update()

        step()
        meta = meta_rows(transformer, model, rd, source.n_encoded_, embed_seconds, from_cache,
                     time.perf_counter() - started)
        parts = sections(res)
        (work / "report.md").write_text(render.to_markdown(title, meta, parts), encoding="utf-8")
        (work / "index.html").write_text(render.to_html(title, meta, parts), encoding="utf-8")
        render.publish_report(work, final)
        bar.update()
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    return final / "index.html"


def _square(table: pd.DataFrame, languages: list[Any]) -> pd.DataFrame:
    table = table.reindex(index=languages, columns=languages)
    table.index.name, table.columns.name = "train_language", "test_language"
    return table


def _cache_hits(transformer: Any) -> int | None:
    stats = getattr(transformer, "cache_stats", None)
    stats = stats() if callable(stats) else None
    return None if stats is None else int(stats.hits)


def _model_facts(transformer: Any) -> tuple[ModelCard, str] | None:
    """The model card and precision label of an skmoe transformer (None for any other): from
    the card a process recorded when one is known, so a fully cached report of a dense model
    loads no weights (it loaded them for these rows alone); an MoE's routing loads them."""
    if callable(getattr(transformer, "model_card", None)):
        return transformer.model_card(), transformer.precision_label()
    encoder = _encoder_or_none(transformer)
    return None if encoder is None else (ModelCard.of(encoder), precision_label(encoder))


def _encoder_or_none(transformer: Any) -> Any:
    """The skmoe encoder behind ``transformer``, or None for any other transformer."""
    from .evaluation.routing import encoder_of

    try:
        return encoder_of(transformer)
    except TypeError:
        return None


def _write_table(out: Path, stem: str, df: pd.DataFrame, index: bool = False) -> None:
    df.to_csv(out / f"{stem}.csv", index=index)
    (out / f"{stem}.md").write_text(render.markdown_table(df, index=index), encoding="utf-8")


def _map_names(reducer: Any) -> tuple[str, str]:
    """The projection's name for the report's text and the stem of its map files.

    ``True`` (the default UMAP) gives ``("UMAP (cosine)", "umap")``; any other reducer its
    class name, lower-cased and reduced to letters and digits for the files (``PCA`` ->
    ``pca_map.png``, ``pca_languages.png``).
    """
    if reducer is True:
        return "UMAP (cosine)", "umap"
    name = type(reducer).__name__
    return name, "".join(c for c in name.lower() if c.isalnum()) or "map"


def _project(X: np.ndarray, reducer: Any, seed: int) -> np.ndarray:
    """2-D coordinates of ``X`` from a fresh reducer (a clone of the one given, or UMAP)."""
    if reducer is True:
        from .plotting import umap_reducer  # matplotlib: only when a map is drawn

        reducer = umap_reducer(len(X), random_state=seed)
    else:
        from sklearn.base import clone

        try:
            reducer = clone(reducer)
        except TypeError:  # not a scikit-learn estimator: used as given
            pass
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        return np.asarray(reducer.fit_transform(X))


class _PrecomputedMap:
    """A 'reducer' that returns an already computed 2-D projection."""

    def __init__(self, xy: np.ndarray) -> None:
        self.xy = xy

    def fit_transform(self, X: Any) -> np.ndarray:
        return self.xy


def nearest_neighbour_shares(X: np.ndarray, rows: pd.DataFrame, max_queries: int = 2000,
                             seed: int = 0) -> dict[str, float]:
    """For each row, its nearest other row by cosine: the share of rows whose neighbour has the
    same ``label``, the same ``language`` and (with an ``id`` column) the same id, i.e. is a
    translation of the same sentence. What the clusters of a map of these rows are made of.

    With more than ``max_queries`` rows, a seeded sample of that many looks for its neighbour
    among all rows (in blocks, so memory stays at a block times the rows); ``"queries"`` in the
    result says how many rows were measured.
    """
    n = len(X)
    queries = (np.arange(n) if n <= max_queries
               else np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False)))
    best, _ = search_vectors(X[queries], X, top_k=2)  # itself and its neighbour, in some order
    nn = best[:, 0] if best.shape[1] < 2 else np.where(best[:, 0] == queries, best[:, 1],
                                                       best[:, 0])
    out: dict[str, float] = {}
    for column in ("id", "label", "language"):
        if column in rows.columns:
            values = rows[column].to_numpy()
            out[column] = float(np.mean(values[queries] == values[nn]))
    out["queries"] = float(len(queries))
    return out


def _maps(out: Path, X: np.ndarray, rd: _data.ReportData, reducer: Any, seed: int,
          plotting: Any) -> list[tuple[str, str]]:
    """The label map (source-language test texts: one translation per sentence) and the
    language map (every test text); returns (file, caption) pairs."""
    name, stem = _map_names(reducer)
    test = rd.test
    one = np.flatnonzero((test["language"] == rd.source_language).to_numpy())
    images = []
    for rows, column, suffix in ((one, "label", "map"), (np.arange(len(test)), "language",
                                                         "languages")):
        part = test.iloc[rows]
        if len(part) < 3:  # nothing to project
            continue
        file = f"{stem}_{suffix}.png"
        what = (f"{len(part)} {rd.source_language} test texts" if column == "label"
                else f"{len(part)} test texts of every language")
        plotting.plot_embedding_map(X[rows], part[column].to_numpy(),
                                    reducer=_PrecomputedMap(_project(X[rows], reducer, seed)),
                                    title=f"{name} of the {what}, by {column}",
                                    path=out / file)
        shares = nearest_neighbour_shares(X[rows], part)
        images.append((file, map_caption(name, column, part, rd.source_language, shares)))
    return images
