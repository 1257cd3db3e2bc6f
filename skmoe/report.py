"""The main job's report: per-language few-shot probe, cross-lingual transfer, maps and routing.

:func:`build_report` embeds every distinct text of a labelled multilingual table once, then
reuses those vectors for everything: the per-language probe (k examples per label, several
seeded draws, ``LogisticRegression`` head as in MTEB), the train-language x test-language
transfer matrix (its source-language row is the "English -> others" table), and the 2-D map.
For the native MoE model, expert-routing statistics per language are measured on the test texts
(a forward pass of their own: routing is not part of an embedding and a cached vector has none).

The folder it writes::

    probe_per_language.csv / .md   one row per language: accuracy and macro-F1, mean and std
    transfer_from_source.csv / .md one row per test language: probe trained on the source language
    transfer_matrix.csv / .md      train language x test language mean accuracy
    probe_scores.csv, transfer_scores.csv   every draw (tidy), for your own analysis
    accuracy_by_language.png       in-language vs. from-source accuracy per language
    transfer_heatmap.png           the transfer matrix
    umap_map.png, umap_languages.png   test texts in 2-D, coloured by label / by language
                                   (named after the projection: pca_map.png, ... with PCA)
    routing.csv, routing_heatmap.png   expert shares per MoE layer and language (MoE only)
    report.md, index.html          all of the above together
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .evaluation import (
    bitext_report,
    probe_report,
    routing_stats,
    summarize,
    transfer_matrix,
    transfer_table,
)
from .evaluation.embeddings import EmbeddingSource

#: Probe metrics reported per language.
METRICS = ("accuracy", "f1_macro")
#: Transfer accuracy within this of the majority-class rate is called "near chance".
NEAR_CHANCE = 0.1
#: Language codes tried, in order, when no source language is given.
ENGLISH = ("eng_Latn", "eng", "en", "en_US", "english", "English")


class ReportError(ValueError):
    """The data cannot make a report (missing column, a language without test rows, ...)."""


# -- data ---------------------------------------------------------------------------------------
@dataclass
class ReportData:
    """Train and test rows of a labelled multilingual table, ready for the probes."""

    train: pd.DataFrame
    test: pd.DataFrame
    languages: list[Any]
    source_language: Any
    split_note: str


def prepare_data(
    data: pd.DataFrame,
    *,
    text_column: str = "text",
    label_column: str = "category",
    language_column: str = "language",
    split_column: str | None = "split",
    id_column: str | None = None,
    source_language: Any = None,
    test_fraction: float = 1 / 3,
    random_state: int = 0,
) -> ReportData:
    """Check the columns and split the rows into train and test.

    With ``split_column`` the rows marked ``train`` / ``test`` (case-insensitive) are used and
    others ignored. ``id_column`` is the id a sentence shares with its translations (e.g.
    SIB-200's ``index_id``; kept as column ``id``): it pairs translations for the report's bitext
    retrieval. Without a split column, ``test_fraction`` of the rows is held out, stratified by
    label: with ``id_column`` by id, so a held-out sentence is held out in every language and no
    test row translates a training row; without it each language holds out the same positions
    with the same seed, which keeps translations together only when every language lists its
    sentences in the same order.
    """
    if not isinstance(data, pd.DataFrame):
        raise ReportError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    needed = {"text": text_column, "label": label_column, "language": language_column}
    if split_column is not None:
        needed["split"] = split_column
    if id_column is not None:
        needed["id"] = id_column
    for role, name in needed.items():
        if name not in data.columns:
            raise ReportError(f"{role} column {name!r} not found; columns: {list(data.columns)}")
    df = pd.DataFrame({
        "text": data[text_column].to_numpy(),
        "label": data[label_column].to_numpy(),
        "language": data[language_column].to_numpy(),
    })
    if df["label"].isna().any() or df["language"].isna().any():
        raise ReportError("missing values in the label or language column")
    if id_column is not None:
        df["id"] = data[id_column].to_numpy()
        if df["id"].isna().any():
            raise ReportError(f"missing id at row {int(df['id'].isna().to_numpy().argmax())} of "
                              f"column {id_column!r}")
        repeated = df[df.duplicated(["language", "id"])]
        if len(repeated):
            first = repeated.iloc[0]
            raise ReportError(f"id {first['id']} repeats within language {first['language']!r} "
                              f"(column {id_column!r}): ids must name one sentence per language")
    languages = list(pd.unique(df["language"]))
    if not languages:
        raise ReportError("no rows")
    if split_column is not None:
        split = data[split_column].astype(str).str.strip().str.lower().to_numpy()
        train, test = df[split == "train"], df[split == "test"]
        note = f"the data's own split (column {split_column!r})"
    elif id_column is not None:
        is_test = _holdout_ids(df, df["id"].to_numpy(), test_fraction, random_state)
        train, test = df[~is_test], df[is_test]
        note = (f"a seeded ({random_state}) stratified hold-out of {test_fraction:.0%} of the "
                f"sentence ids (column {id_column!r}): the same sentences in every language")
    else:
        train_idx, test_idx = _holdout(df, test_fraction, random_state)
        train, test = df.loc[train_idx], df.loc[test_idx]
        note = (f"a seeded ({random_state}) stratified hold-out of {test_fraction:.0%} of each "
                "language's rows, by position (translations stay together only if every "
                "language lists them in the same order; give an id column otherwise)")
    for lang in languages:
        for name, part in (("train", train), ("test", test)):
            if not (part["language"] == lang).any():
                raise ReportError(f"language {lang!r} has no {name} rows")
    if train["label"].nunique() < 2:
        raise ReportError("the probe needs at least two labels")
    for lang, labels in train.groupby("language", sort=False)["label"]:
        if labels.nunique() < 2:  # its in-language probe could not be fitted
            raise ReportError(
                f"language {lang!r} has a single label ({labels.iloc[0]!r}) in its {len(labels)} "
                "training row(s); a probe needs at least two")
    source = _source_language(languages, source_language)
    return ReportData(train.reset_index(drop=True), test.reset_index(drop=True), languages,
                      source, note)


def _holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train_parts, test_parts = [], []
    for lang in pd.unique(df["language"]):
        idx = np.flatnonzero((df["language"] == lang).to_numpy())
        if len(idx) < 2:
            raise ReportError(f"language {lang!r} has {len(idx)} row(s); at least 2 are needed")
        labels = df["label"].to_numpy()[idx]
        counts = pd.Series(labels).value_counts()
        n_test = max(1, int(round(fraction * len(idx))))
        stratify = labels if counts.min() >= 2 and n_test >= len(counts) else None
        tr, te = train_test_split(idx, test_size=n_test, stratify=stratify, random_state=seed)
        train_parts.append(np.sort(tr))
        test_parts.append(np.sort(te))
    return np.concatenate(train_parts), np.concatenate(test_parts)


def _holdout_ids(df: pd.DataFrame, ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows whose id is held out: a seeded share of the distinct ids, stratified by each id's
    most frequent label."""
    from sklearn.model_selection import train_test_split

    per_id = pd.DataFrame({"id": ids, "label": df["label"].to_numpy()})
    label_of = per_id.groupby("id", sort=True)["label"].agg(lambda v: v.value_counts().index[0])
    if len(label_of) < 2:
        raise ReportError(f"the id column has {len(label_of)} distinct id(s); at least 2 are needed")
    n_test = max(1, int(round(fraction * len(label_of))))
    counts = label_of.value_counts()
    stratify = label_of.to_numpy() if counts.min() >= 2 and n_test >= len(counts) else None
    _, test_ids = train_test_split(label_of.index.to_numpy(), test_size=n_test,
                                   stratify=stratify, random_state=seed)
    return np.isin(ids, test_ids)


def _source_language(languages: list[Any], wanted: Any) -> Any:
    if wanted is not None:
        if wanted not in languages:
            raise ReportError(f"source language {wanted!r} is not in the data; it has {languages}")
        return wanted
    for code in ENGLISH:
        if code in languages:
            return code
    return languages[0]


# -- tables -------------------------------------------------------------------------------------
def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    frame = df.reset_index() if index else df

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def per_language_table(scores: pd.DataFrame, data: ReportData) -> pd.DataFrame:
    """One row per language: n_train, n_test, k, then mean and std of each metric."""
    summ = summarize(scores, by=["group", "metric"])
    wide = summ.pivot(index="group", columns="metric", values=["mean", "std"])
    out = pd.DataFrame({"language": data.languages})
    out["n_train"] = [int((data.train["language"] == g).sum()) for g in data.languages]
    out["n_test"] = [int((data.test["language"] == g).sum()) for g in data.languages]
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
    """One row per test language: accuracy of the probe trained on ``source``, and the gap."""
    row = matrix.loc[source]
    src = transfer_scores[transfer_scores["train_language"] == source]
    std = src.groupby("test_language", sort=False)["score"].std().reindex(row.index)
    in_lang = per_language.set_index("language")["accuracy"].reindex(row.index)
    return pd.DataFrame({
        "test_language": list(row.index),
        "train_language": source,
        "accuracy": row.to_numpy(dtype=float),
        "accuracy_std": std.to_numpy(dtype=float),
        "in_language_accuracy": in_lang.to_numpy(dtype=float),
        "gap": (in_lang - row).to_numpy(dtype=float),
    })


# -- the report ---------------------------------------------------------------------------------
@dataclass
class _Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    table_index: bool = False
    images: list[tuple[str, str]] = field(default_factory=list)  # (file, caption)


class _PrecomputedMap:
    """A 'reducer' that returns an already computed 2-D projection (one UMAP, two plots)."""

    def __init__(self, xy: np.ndarray) -> None:
        self.xy = xy

    def fit_transform(self, X: Any) -> np.ndarray:
        return self.xy


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
    progress: bool = True,
    random_state: int = 0,
    title: str = "skmoe report",
) -> Path:
    """Embed once, probe per language and across languages, plot, and write a report folder.

    Parameters
    ----------
    transformer : MoEEmbeddingTransformer or any scikit-learn transformer of texts
        Fitted on the training texts first when it is not fitted yet. Its own ``verbose``
        decides whether embedding shows a progress bar.
    data : pandas.DataFrame
        One row per text with text, label and language columns (and optionally a split
        column with ``train`` / ``test`` values), e.g. ``skmoe.datasets.load_sib200_sample()``.
    out_dir : path
        Folder to write (created; existing report files are overwritten).
    text_column, label_column, language_column, split_column : str
        Column names; ``split_column=None`` holds out a seeded, stratified third of each
        language (see :func:`prepare_data`).
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
        Draw the 2-D map with UMAP (True), another 2-D reducer (e.g. ``PCA(2)``), or skip it
        (False). The map files are named after it: ``umap_map.png``, ``pca_map.png``, ...
    routing : bool, default=True
        Measure and plot expert routing per language when the model is the native MoE.
    progress : bool, default=True
        Show a progress bar over the report's stages.
    random_state : int, default=0
        Seeds the few-shot draws, the hold-out split and UMAP.
    title : str

    Returns
    -------
    pathlib.Path
        The report's ``index.html``.
    """
    from tqdm.auto import tqdm

    from . import plotting

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rd = prepare_data(data, text_column=text_column, label_column=label_column,
                      language_column=language_column, split_column=split_column,
                      id_column=id_column, source_language=source_language,
                      random_state=random_state)
    _ensure_fitted(transformer, list(rd.train["text"]))

    # One embedding pass: every distinct text (train + test, all languages) encoded once.
    t0 = time.perf_counter()
    hits_before = _cache_hits(transformer)
    source = EmbeddingSource(list(rd.train["text"]) + list(rd.test["text"]), transformer)
    vectors = source.get()
    embed_seconds = time.perf_counter() - t0
    from_cache = None if hits_before is None else _cache_hits(transformer) - hits_before
    X_train, X_test = vectors[: len(rd.train)], vectors[len(rd.train):]
    y_train, y_test = rd.train["label"].to_numpy(), rd.test["label"].to_numpy()
    g_train, g_test = rd.train["language"].to_numpy(), rd.test["language"].to_numpy()

    encoder = _encoder_of(transformer)
    do_routing = routing and encoder is not None and encoder.is_moe
    stages = ["probe per language", "transfer", "accuracy plot", "transfer heatmap"]
    stages += ["2-D map"] if umap is not False else []
    do_bitext = "id" in rd.train.columns and len(rd.languages) > 1
    stages += ["bitext retrieval"] if do_bitext else []
    stages += ["routing"] if do_routing else []
    stages += ["write report"]
    bar = tqdm(total=len(stages), desc="report", unit="step", disable=not progress)

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    try:
        step(stages[0])
        scores = probe_report(X_train, y_train, groups=g_train, X_test=X_test, y_test=y_test,
                              groups_test=g_test, samples_per_label=shots, n_experiments=seeds,
                              metrics=METRICS, random_state=random_state)
        per_lang = per_language_table(scores, rd)
        _write_table(out, "probe_per_language", per_lang)
        scores.to_csv(out / "probe_scores.csv", index=False)
        bar.update()

        step(stages[1])
        tscores = transfer_matrix(X_train, y_train, g_train, X_test=X_test, y_test=y_test,
                                  languages_test=g_test, samples_per_label=shots,
                                  n_experiments=seeds, metrics=("accuracy",),
                                  random_state=random_state)
        matrix = transfer_table(tscores, "accuracy", shots)
        matrix = matrix.reindex(index=rd.languages, columns=rd.languages)
        matrix.index.name, matrix.columns.name = "train_language", "test_language"
        from_src = from_source_table(matrix, per_lang, rd.source_language, tscores)
        _write_table(out, "transfer_matrix", matrix, index=True)
        _write_table(out, "transfer_from_source", from_src)
        tscores.to_csv(out / "transfer_scores.csv", index=False)
        bar.update()

        step(stages[2])
        both = pd.concat([
            scores[scores["metric"] == "accuracy"].assign(probe="in-language"),
            tscores[tscores["train_language"] == rd.source_language]
            .rename(columns={"test_language": "group"})
            .assign(probe=f"trained on {rd.source_language}"),
        ], ignore_index=True)
        chance = float(pd.Series(y_test).value_counts(normalize=True).max())
        plotting.plot_probe(both, metric="accuracy", x="group", hue="probe", chance=chance,
                            title=f"few-shot accuracy ({shots} per label, {seeds} draws)",
                            path=out / "accuracy_by_language.png")
        bar.update()

        step(stages[3])
        plotting.plot_transfer(matrix, metric="accuracy",
                               title=f"transfer accuracy ({shots} per label)",
                               path=out / "transfer_heatmap.png")
        bar.update()

        map_files: list[tuple[str, str]] = []
        map_note = ""
        if umap is not False:
            step(stages[4])
            map_note, map_files = _maps(out, X_test, rd.test, umap, random_state, plotting)
            bar.update()

        routing_note = ""
        bitext = None
        if do_bitext:
            step("bitext retrieval")
            bitext = bitext_table(vectors, pd.concat([rd.train, rd.test]), rd.source_language)
            _write_table(out, "bitext_retrieval", bitext)
            bar.update()

        if do_routing:
            step("routing")
            stats = routing_stats(transformer, list(rd.test["text"]), g_test)
            stats.experts.to_csv(out / "routing.csv", index=False)
            plotting.plot_routing(stats, path=out / "routing_heatmap.png")
            routing_note = _routing_text(stats)
            bar.update()

        step("write report")
        sections = _sections(rd, per_lang, matrix, from_src, shots, seeds, map_files,
                             do_routing, encoder, map_note, routing_note, bitext)
        meta = _meta(transformer, encoder, rd, source, embed_seconds, from_cache,
                     time.perf_counter() - started)
        (out / "report.md").write_text(_markdown(title, meta, sections), encoding="utf-8")
        index = out / "index.html"
        index.write_text(_html(title, meta, sections), encoding="utf-8")
        bar.update()
    finally:
        bar.close()
    return index


def _ensure_fitted(transformer: Any, texts: list[str]) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(transformer)
    except NotFittedError:
        transformer.fit(texts)
    except TypeError:  # not an estimator: assume it is ready
        pass


def _cache_hits(transformer: Any) -> int | None:
    stats = getattr(transformer, "cache_stats", None)
    stats = stats() if callable(stats) else None
    return None if stats is None else int(stats.hits)


def _encoder_of(transformer: Any) -> Any:
    get = getattr(transformer, "get_encoder", None)
    return get() if callable(get) else None


def _write_table(out: Path, stem: str, df: pd.DataFrame, index: bool = False) -> None:
    df.to_csv(out / f"{stem}.csv", index=index)
    (out / f"{stem}.md").write_text(markdown_table(df, index=index), encoding="utf-8")


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


def _maps(out: Path, X: np.ndarray, test: pd.DataFrame, reducer: Any, seed: int,
          plotting: Any) -> tuple[str, list[tuple[str, str]]]:
    """Draw the label and language maps from one projection; return its name and the images."""
    name, stem = _map_names(reducer)
    if reducer is True:
        import umap as umap_lib  # slow import (numba): only when a map is drawn

        reducer = umap_lib.UMAP(n_components=2, metric="cosine",
                                n_neighbors=min(15, len(X) - 1), min_dist=0.1, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        xy = np.asarray(reducer.fit_transform(X))
    pre = _PrecomputedMap(xy)
    images = []
    for column, suffix in (("label", "map"), ("language", "languages")):
        file = f"{stem}_{suffix}.png"
        plotting.plot_embedding_map(X, test[column].to_numpy(), reducer=pre,
                                    title=f"{name} of the test texts, by {column}",
                                    path=out / file)
        images.append((file, f"coloured by {column}"))
    return name, images


def _routing_text(stats: Any) -> str:
    div = stats.divergence
    if div.empty:
        return ""
    mean = div.groupby(["group_a", "group_b"], sort=False)["js_divergence"].mean()
    (a, b), hi = mean.idxmax(), mean.max()
    (c, d), lo = mean.idxmin(), mean.min()
    return (f"Jensen-Shannon divergence of expert shares, mean over MoE layers: most different "
            f"pair {a} / {b} ({hi:.3f}), most similar {c} / {d} ({lo:.3f}).")


def _meta(transformer: Any, encoder: Any, rd: ReportData, source: EmbeddingSource,
          embed_seconds: float, from_cache: int | None,
          total_seconds: float) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if encoder is not None:
        src = encoder.source
        rows += [("model", str(src.name)), ("revision", str(src.revision)),
                 ("weights fingerprint", str(src.fingerprint)),
                 ("architecture", "native MoE" if encoder.is_moe else "dense"),
                 ("prompt", repr(getattr(transformer, "prompt_", ""))),
                 ("embedding width", str(getattr(transformer, "n_features_out_", "?")))]
    else:
        rows.append(("transformer", repr(transformer)))
    rows += [
        ("languages", ", ".join(map(str, rd.languages))),
        ("labels", ", ".join(map(str, pd.unique(rd.train["label"])))),
        ("rows", f"{len(rd.train):,} train, {len(rd.test):,} test ({rd.split_note})"),
        ("texts embedded", f"{source.n_encoded_:,} distinct, {embed_seconds:.1f} s"
         + (f" ({from_cache:,} from the cache)" if from_cache is not None else "")),
        ("report time", f"{total_seconds:.1f} s"),
    ]
    return rows


def _sections(rd: ReportData, per_lang: pd.DataFrame, matrix: pd.DataFrame,
              from_src: pd.DataFrame, shots: int, seeds: int,
              map_images: list[tuple[str, str]], has_routing: bool,
              encoder: Any, map_note: str, routing_note: str,
              bitext: pd.DataFrame | None = None) -> list[_Section]:
    protocol = (f"For each language, {seeds} seeded draws of {shots} training examples per "
                "label; a LogisticRegression(max_iter=100) head (the MTEB protocol) is fit on "
                "their embeddings and scored on the language's test rows. Mean and standard "
                "deviation over draws.")
    smallest = int(rd.train.groupby(["language", "label"]).size().min())
    if smallest <= shots:
        protocol += (f" Note: some label has only {smallest} training rows in some language, "
                     f"so with {shots} per label those draws use all of them (no spread "
                     "between draws).")
    labels = list(pd.unique(rd.train["label"]))
    have = rd.train.groupby("language", sort=False)["label"].agg(set)
    lacking = {lang: missing for lang, got in have.items()
               if (missing := [lab for lab in labels if lab not in got])}
    if lacking:  # their probes choose among fewer labels: scores are not comparable as they are
        protocol += " Note: some languages lack labels in their training rows (" + "; ".join(
            f"{lang}: {', '.join(map(str, missing))}" for lang, missing in lacking.items()
        ) + "), so their probes choose among fewer labels than the others."
    src = rd.source_language
    chance = float(rd.test["label"].value_counts(normalize=True).max())
    others = from_src[from_src["test_language"] != src].sort_values("gap")
    transfer_text = (f"Probes trained on {src} ({shots} per label) and scored on every "
                     "language's test rows; `gap` = in-language accuracy - transfer accuracy. "
                     f"Chance (majority-class rate): {chance:.3f}; a small gap means good "
                     "transfer only where both accuracies are well above it.")
    if len(others):
        first, last = others.iloc[0], others.iloc[-1]
        transfer_text += (f" Transfer closest to in-language: {first['test_language']} "
                          f"(gap {first['gap']:+.3f}); furthest: {last['test_language']} "
                          f"(gap {last['gap']:+.3f}).")
        near = others[others["accuracy"] < chance + NEAR_CHANCE]["test_language"].tolist()
        if near:
            transfer_text += (f" Near chance (transfer accuracy below chance + {NEAR_CHANCE}): "
                              f"{', '.join(map(str, near))}: no transfer there, whatever the gap.")
    sections = [
        _Section("Few-shot probe per language", protocol, per_lang,
                 images=[("accuracy_by_language.png",
                          f"Accuracy per language: in-language probe vs. probe trained on {src}; "
                          "dashed line: majority-class rate")]),
        _Section(f"Transfer from {src}", transfer_text, from_src),
        _Section("Transfer matrix", "Mean accuracy of probes trained on the row language and "
                 "scored on the column language (the diagonal is the in-language probe).",
                 matrix, table_index=True,
                 images=[("transfer_heatmap.png", "Train language x test language accuracy")]),
    ]
    if bitext is not None:
        sections.append(_Section(
            "Bitext retrieval",
            f"Each sentence's translation looked up by cosine among the `n` sentences that "
            f"{src} and the language share (train and test rows, paired by id): the share found "
            "first, in both directions. Chance is 1/n. No training: this shows whether "
            "translations land next to each other in the embedding space.", bitext))
    if map_images:
        sections.append(_Section(
            "Embedding map", f"{map_note} projection of the test texts' embeddings. Topics "
            "that cluster across languages mean the space is aligned across languages.",
            images=map_images))
    if has_routing:
        cfg = encoder.moe_config
        sections.append(_Section(
            "Expert routing",
            f"Share of each language's tokens (test texts, prompt and special tokens included) "
            f"routed to each of the {cfg.num_experts} experts (top-{cfg.moe_top_k}) in every MoE "
            f"layer; routing.csv holds the numbers. {routing_note}",
            images=[("routing_heatmap.png", "Expert share per language and MoE layer")]))
    return sections


def _markdown(title: str, meta: list[tuple[str, str]], sections: Sequence[_Section]) -> str:
    parts = [f"# {title}\n", "| | |\n|---|---|"]
    parts += ["| " + k + " | " + " ".join(v.split()).replace("|", "\\|") + " |" for k, v in meta]
    parts.append("")
    for s in sections:
        parts.append(f"## {s.title}\n")
        if s.text:
            parts.append(s.text + "\n")
        if s.table is not None:
            parts.append(markdown_table(s.table, index=s.table_index))
        for file, caption in s.images:
            parts.append(f"![{caption}]({file})\n\n*{caption}*\n")
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
figure{margin:1em 0}figcaption{color:#555;font-size:13px}"""


#: Inline code spans of the section text (Markdown), e.g. `gap`.
_CODE = re.compile(r"`([^`]+)`")
#: Bold spans, e.g. **note**.
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline_html(text: str) -> str:
    """HTML of one paragraph of the report's Markdown: escaped, with `code` and **bold**.

    Only inline code and bold are rendered (no dependency for a full Markdown parser); code
    spans are kept verbatim, so ``**`` inside them stays literal.
    """
    parts = _CODE.split(text)  # odd indices: the inside of a code span
    out = []
    for i, part in enumerate(parts):
        esc = html.escape(part)
        out.append(f"<code>{esc}</code>" if i % 2 else _BOLD.sub(r"<strong>\1</strong>", esc))
    return "".join(out)


def _html(title: str, meta: list[tuple[str, str]], sections: Sequence[_Section]) -> str:
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>", "<table>"]
    body += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta]
    body.append("</table>")
    for s in sections:
        body.append(f"<h2>{esc(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{_inline_html(s.text)}</p>")
        if s.table is not None:
            body.append(s.table.to_html(index=s.table_index, float_format=lambda v: f"{v:.3f}",
                                        na_rep="", border=0))
        for file, caption in s.images:
            body.append(f'<figure><img src="{esc(file)}" alt="{esc(caption)}">'
                        f"<figcaption>{_inline_html(caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
