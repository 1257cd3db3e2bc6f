"""What a user writes with skmoe's public API, as typed code: type-checked by
``tests/test_typing.py`` (mypy must report nothing), never run or imported.

Every function here is correct use as README.md and docs/ describe it; the annotated variables
have the types the documentation promises. A false error here is a wrong annotation in skmoe.
Nothing runs at import: the calls sit in functions no one calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline

import skmoe
from skmoe import (
    DEFAULT_MODEL,
    EmbeddingCache,
    LearnedPooling,
    MoEEmbeddingTransformer,
    PairFeatures,
    SentenceEncoder,
    cache_namespace,
    capture_routing,
    cosine_matrix,
    cosine_rows,
    load_encoder,
    plot_token_weights,
)
from skmoe.cache import CacheStats, CacheUnavailableWarning, resolve_cache
from skmoe.datasets import STS17_TRACKS, load_sib200, load_sib200_sample, load_sts17
from skmoe.embedding import Embedder
from skmoe.encoder import (
    NomicMoEConfig,
    RoutingRecord,
    count_parameters,
    format_model_info,
    model_info,
)
from skmoe.engine import Engine, apply_precision, plan_batches, supported_precisions
from skmoe.engine.quantized_io import quantization_of, quantize_folder
from skmoe.evaluation import (
    FewShotSplit,
    ReportData,
    RoutingStats,
    bitext_report,
    cluster_report,
    prepare_data,
    probe_report,
    routing_stats,
    sts_report,
    summarize,
    transfer_matrix,
    transfer_regimes,
    transfer_table,
)
from skmoe.plotting import plot_embedding_map, plot_probe, plot_routing, plot_transfer
from skmoe.postprocessing import quantize, truncate_and_normalize
from skmoe.registry import clear, get_encoder
from skmoe.report import build_report
from skmoe.search import search_vectors
from skmoe.token_states import clear_memo, tokens


def pipeline_and_transform(texts: list[str], labels: list[str]) -> None:
    """README's "Ten lines", getting-started and the estimator page."""
    data: pd.DataFrame = load_sib200_sample(languages="eng_Latn")
    train, test = data[data.split == "train"], data[data.split == "test"]
    clf = Pipeline([("embed", MoEEmbeddingTransformer(cache="embeddings.sqlite")),
                    ("clf", LogisticRegression(max_iter=1000))])
    accuracy: float = clf.fit(train.text, train.category).score(test.text, test.category)
    print(accuracy)

    embedder = MoEEmbeddingTransformer(
        model=Path("/models/nomic-embed-text-v2-moe"), revision=None, prompt_name="clustering",
        prompt=None, max_length=512, long_text="chunk", chunk_overlap=64, truncate_dim=256,
        normalize="l2", center=False, batch_size=32, max_tokens_per_batch=8192, device="cpu",
        dtype="int8", compile=False, output_dtype="float16", cache=EmbeddingCache("e.sqlite"),
        verbose=0, local_files_only=True)
    fitted: MoEEmbeddingTransformer = embedder.fit(texts)
    X: np.ndarray = fitted.transform(texts)
    X_all: np.ndarray = embedder.fit_transform(texts)
    names: np.ndarray = embedder.get_feature_names_out()
    width: int = embedder.n_features_out_
    print(X.shape, X_all.dtype, list(names)[:3], width, embedder.center_, embedder.prompt_)
    e5 = MoEEmbeddingTransformer("/models/multilingual-e5-small", prompt="query: ", normalize=2.0)
    print(e5.get_params()["normalize"])

    # set_output: pandas columns embedding_0 ... sklearn's wrapper picks the container, so
    # ``transform`` is annotated with its default (ndarray); the DataFrame comes through
    # set_output's own result or a Pipeline (scikit-learn has no annotations: Any)
    pandas_pipe = make_pipeline(MoEEmbeddingTransformer(center=True, normalize=1.25))
    pandas_pipe.set_output(transform="pandas")
    frame: pd.DataFrame = pandas_pipe.fit_transform(pd.Series(texts))
    frame2: pd.DataFrame = MoEEmbeddingTransformer().set_output(transform="pandas").fit(
        texts).transform(texts)
    print(frame.columns, frame2.index)

    grid = GridSearchCV(
        Pipeline([("embed", MoEEmbeddingTransformer(cache="embeddings.sqlite")),
                  ("clf", LogisticRegression(max_iter=1000))]),
        {"embed__truncate_dim": [None, 256, 128], "clf__C": [0.1, 1, 10]})
    grid.fit(texts, labels)

    out: Any = embedder.embed_to(texts, "vectors.parquet", ids=list(range(len(texts))))
    print(out, embedder.cache_stats())
    encoder: SentenceEncoder = embedder.get_encoder()
    print(encoder.embedding_dim + encoder.hidden_size, encoder.recipe, encoder.device)


def similarity_and_search(questions: list[str], passages: list[str]) -> None:
    """The similarity and search page."""
    embedder = MoEEmbeddingTransformer(cache="embeddings.sqlite")
    sim: np.ndarray = embedder.similarity(questions, passages, query_prompt_name="query",
                                          document_prompt_name="document")
    own: np.ndarray = embedder.similarity(questions)
    pairwise: np.ndarray = embedder.similarity_pairwise(questions, passages[: len(questions)])
    idx, scores = embedder.search(questions, passages, top_k=5)
    e5 = MoEEmbeddingTransformer("intfloat/multilingual-e5-small")
    idx2: np.ndarray
    scores2: np.ndarray
    idx2, scores2 = e5.search(questions, passages, query_prompt="query: ",
                              document_prompt="passage: ", query_block=256, corpus_block=4096)
    vectors: np.ndarray = embedder.embed(questions)

    Q = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    C = np.load("corpus.npy", mmap_mode="r")
    top: tuple[np.ndarray, np.ndarray] = search_vectors(Q, C, 10, normalize=False,
                                                        dtype=np.float64)
    cos: np.ndarray = cosine_matrix(Q, Q)
    rows: np.ndarray = cosine_rows(Q, Q[::-1])
    print(sim, own, pairwise, idx[0], scores[0], idx2, scores2, vectors, top, cos, rows)

    # sentence-pair classifier
    pairs = pd.DataFrame({"a": questions, "b": passages[: len(questions)]})
    pipe = make_pipeline(PairFeatures(embedder, features=("cosine", "abs_diff")),
                         LogisticRegression(max_iter=1000))
    pipe.fit(pairs, np.arange(len(pairs)) % 2)
    features: np.ndarray = PairFeatures(embedder).fit(pairs).transform(pairs)
    print(features.shape, PairFeatures(embedder).fit(pairs).get_feature_names_out())


def cache_use(texts: list[str], tmp: Path) -> None:
    """The cache page and EmbeddingCache's docstring."""
    cache = EmbeddingCache(tmp / "emb.sqlite", timeout=10.0)
    ns: str = cache_namespace(model="m", revision="abc", prompt="query: ")
    cache.put_many(ns, ["a", "b"], np.ones((2, 4), dtype=np.float32), cut=[False, None])
    cache.put_many(ns, ["c"], np.ones((1, 4), dtype=np.float32), cut=np.array([True]))
    found, vectors = cache.lookup(ns, ["a", "c"])
    hit: list[bool] = found.tolist()
    found2, vectors2, cut = cache.lookup(ns, texts, with_cut=True, dim=4)
    out = np.zeros((len(texts), 4), dtype=np.float32)
    found3, same = cache.lookup(ns, texts, out=out, count=False)
    stats: CacheStats = cache.stats()
    entries: int = stats.entries + stats.hits + stats.misses
    why: str | None = stats.stopped
    spaces: dict[str, tuple[int, int]] = cache.namespaces()
    removed: int = cache.clear(ns)
    problems: list[str] = cache.check()
    opened: EmbeddingCache | None = resolve_cache("other.sqlite")
    warnings.simplefilter("error", CacheUnavailableWarning)
    print(hit, vectors.shape, vectors2, cut, found2, found3, same, entries, why, spaces,
          removed, problems, opened, len(cache), cache.labels())


def learned_pooling(train_texts: list[str], train_labels: list[str],
                    test_texts: list[str], anchor_positive_pairs: np.ndarray) -> None:
    """The learned-pooling page."""
    pooling = LearnedPooling(DEFAULT_MODEL, random_state=0, max_iter="auto", heads=2,
                             objective="cross_entropy", normalize=1.25)
    clf = make_pipeline(pooling, LogisticRegression()).fit(train_texts, train_labels)
    weights: pd.DataFrame = pooling.token_weights(test_texts[:5])
    ax: Any = plot_token_weights(weights, max_texts=4)
    pairs = LearnedPooling("/models/e5", temperature=0.05, max_iter=10).fit(anchor_positive_pairs)
    sim: np.ndarray = pairs.similarity(test_texts, train_texts)
    X: np.ndarray = pooling.fit_transform(train_texts, train_labels)
    attention: np.ndarray = pooling.attention_
    names: np.ndarray = pooling.get_feature_names_out()
    clear_memo()
    print(clf, ax, sim, X, attention, names)


def evaluation(data: pd.DataFrame) -> None:
    """The evaluation page and examples/few_shot_baseline.py."""
    train, test = data[data.split == "train"], data[data.split == "test"]
    embedder = MoEEmbeddingTransformer(prompt_name="classification", cache="e.sqlite")

    X = embedder.fit_transform(train.text.tolist())
    cv = FewShotSplit(n_per_class=8, n_splits=10, random_state=0)
    n_splits: int = cv.get_n_splits()
    for train_rows, test_rows in cv.split(X, train.category):
        print(train_rows.shape, test_rows.shape)
    cv_scores: np.ndarray = cross_val_score(LogisticRegression(max_iter=100), X,
                                            train.category, cv=cv)

    def scorer(est: Any, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(est.predict(X) == y))

    report: pd.DataFrame = probe_report(
        train.text.tolist(), train.category, groups=train.language,
        X_test=test.text.tolist(), y_test=test.category, groups_test=test.language,
        transformer=embedder, samples_per_label=[8, 16], n_experiments=5,
        metrics=("accuracy", "f1_macro"), random_state=0)
    # metrics: a scorer name or callable, a sequence of them, or a dict name -> either
    report = probe_report(X, train.category, samples_per_label=4, metrics="accuracy",
                          test_size=0.5)
    report = probe_report(X, train.category, metrics=[get_scorer("accuracy"), "f1_macro"])
    report = probe_report(X, train.category, metrics=[scorer])
    report = probe_report(X, train.category, metrics={"acc": scorer, "f1": "f1_macro"})
    table: pd.DataFrame = summarize(report, by=["group"])
    for r in table[table.metric == "accuracy"].itertuples():
        print(r.group, r.k, r.mean, r.std, r.n, n_splits, cv_scores)

    matrix: pd.DataFrame = transfer_matrix(
        train.text, train.category, train.language, X_test=test.text, y_test=test.category,
        languages_test=test.language, train_languages=["eng_Latn"], transformer=embedder,
        samples_per_label=16, metrics={"acc": scorer})
    pivot: pd.DataFrame = transfer_table(matrix, metric="acc", k=16)
    regimes: pd.DataFrame = transfer_regimes(
        train.text, train.category, train.language, X_test=test.text, y_test=test.category,
        languages_test=test.language, regimes=("each", "en"), source_language="eng_Latn",
        transformer=embedder, metrics=["accuracy"])
    clusters: pd.DataFrame = cluster_report(test.text, test.category, groups=test.language,
                                            transformer=embedder, n_bootstrap=3)
    pairs = load_sts17("STS17", tracks=["en-en"])
    sts: pd.DataFrame = sts_report(pairs.sentence1, pairs.sentence2, pairs.score,
                                   groups=pairs.track, transformer=embedder)
    bitext: pd.DataFrame = bitext_report(data.text.tolist(), data.language, data.index_id,
                                         pairs=[("eng_Latn", "fra_Latn")], transformer=embedder)
    rd: ReportData = prepare_data(data, text_column="text", label_column="category",
                                  id_column="index_id", source_language="eng_Latn")
    print(pivot, regimes, clusters, sts, bitext, rd.train, rd.languages, list(STS17_TRACKS))

    # plots: matplotlib Figures, saved when given a path
    figures: list[Figure] = [
        plot_probe(report, metric="accuracy", chance=1 / 7, path="accuracy.png"),
        plot_transfer(matrix, k=16, vmin=0.0, vmax=1.0, path=Path("transfer.svg")),
        plot_embedding_map(X, train.language, n_neighbors=10, title="map"),
    ]
    full = load_sib200("sib200", languages=["eng_Latn", "fra_Latn"], splits="test")
    folder: Path = build_report(embedder, full, "skmoe-report", shots=8, seeds=3, umap=False)
    print(figures, folder)


def routing_and_encoder(texts: list[str], languages: list[str]) -> None:
    """The MoE encoder page: routing records, routing statistics, model facts, precision."""
    encoder = skmoe.load_encoder("nomic-ai/nomic-embed-text-v2-moe", device="cpu",
                                 dtype="float32")
    ids, _ = encoder.tokenize(["classification: Der Hund schläft.",
                               "classification: The dog sleeps."])
    cfg: NomicMoEConfig | None = encoder.moe_config
    with capture_routing(encoder) as records:
        for rows, _vectors in Engine(encoder).iter_batches(ids, pipelined=False):
            if cfg is not None:
                last: list[RoutingRecord] = records[-len(cfg.moe_layers):]
                for rec in last:
                    print(rows, rec.layer, rec.top_experts.shape, rec.top_weights.sum(dim=1).mean())
    stats: RoutingStats = routing_stats(encoder, texts, languages, tokens="text",
                                        split_half=True, long_text="chunk")
    js: pd.DataFrame = stats.divergence_matrix(layer=None)
    fig: Figure = plot_routing(stats, value="share", vmin=0.0)
    total, active = count_parameters(cfg) if cfg is not None else (0, 0)
    info: dict[str, Any] = model_info("path/to/config.json")
    text: str = format_model_info(info)
    words: list[list[str]] = tokens(encoder, texts, "query: ")
    print(stats.top_k, stats.num_experts, js, fig, total + active, text, words)

    # precision and pre-quantized folders
    modes: tuple[str, ...] = supported_precisions("cpu")
    folder: Path = quantize_folder("nomic-ai/nomic-embed-text-v2-moe", "me-int4", dtype="int4",
                                   group_size=32)
    q: dict[str, Any] | None = quantization_of(folder)
    small: SentenceEncoder = load_encoder(folder)
    int8: SentenceEncoder = apply_precision(get_encoder(DEFAULT_MODEL, device="cpu"), "int8")
    est = MoEEmbeddingTransformer(model="me-int4")
    vectors: np.ndarray = Embedder.for_encoder(small, "query: ", max_length=256).embed(texts)
    batches = plan_batches(np.array([5, 3, 9]), batch_size=2, max_tokens=16)
    n_cut: int = Engine(small).warn_if_truncated(texts, "query: ", cut=np.full(len(texts), -1))
    print(n_cut, Engine(small).truncated(texts, cut=[1, 0]))
    print(modes, q, int8, est, vectors, batches)
    clear(DEFAULT_MODEL)


def postprocessing(x: np.ndarray) -> None:
    """Matryoshka truncation, normalisation and output quantization on vectors."""
    floats: np.ndarray = truncate_and_normalize(x, 256, "l2")
    codes: np.ndarray = quantize(floats, "binary")
    print(codes)


def streaming(texts: list[str]) -> Iterator[np.ndarray]:
    """Vectors chunk by chunk (the road's stream)."""
    embedder = Embedder.for_encoder(load_encoder(DEFAULT_MODEL), "")
    for _start, chunk in embedder.iter_embed(texts, chunk_size=256):
        yield chunk
