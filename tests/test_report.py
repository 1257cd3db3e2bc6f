"""The main job's report builder on local models: every file, and numbers that hang together."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.decomposition import PCA

import skmoe.embedding as embedding_module
import skmoe.plotting as plotting_module
from skmoe._learned_pooling_fit import AUTO_EPOCHS_SMALL
from skmoe.datasets import load_sib200_sample
from skmoe.estimator import MoEEmbeddingTransformer
from skmoe.evaluation import DataError, ReportData, prepare_data
from skmoe.render import inline_html as _inline_html
from skmoe.render import markdown_table
from skmoe.report import ReportError, _map_names, build_report, nearest_neighbour_shares
from skmoe.report_sections import ReportResults, map_caption, sections

LANGS = ["eng_Latn", "zho_Hans"]
TABLES = ["probe_per_language", "transfer_from_source", "transfer_matrix"]
# The reports below project with PCA(2): the map files are named after it.
PLOTS = ["accuracy_by_language.png", "transfer_heatmap.png", "pca_map.png", "pca_languages.png"]


class _CountingEngine(embedding_module.Engine):
    """The estimator's engine, counting the texts it is asked to encode."""

    texts: list[str] = []

    def iter_embed_chunks(self, chunks, prompt="", **kwargs):
        seen = type(self).texts
        return super().iter_embed_chunks((seen.extend(c) or c for c in chunks), prompt, **kwargs)


@pytest.fixture(scope="module")
def moe_report(tmp_path_factory, random_moe_xlmr_path):
    """The report of the tiny random MoE (real XLM-R tokenizer) on two languages of the sample."""
    out = tmp_path_factory.mktemp("report-moe")
    data = load_sib200_sample(languages=LANGS)
    transformer = MoEEmbeddingTransformer(str(random_moe_xlmr_path))
    _CountingEngine.texts = []
    heatmaps = []
    original = plotting_module.plot_transfer

    def recording_plot_transfer(*args, **kwargs):
        fig = original(*args, **kwargs)
        heatmaps.append(fig.axes[0].images[0].get_clim())
        return fig

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedding_module, "Engine", _CountingEngine)
        mp.setattr(plotting_module, "plot_transfer", recording_plot_transfer)
        index = build_report(transformer, data, out, shots=4, seeds=3, umap=PCA(2),
                             learned_pooling=True, progress=False)
    # the user's unfitted transformer is left as it was: the report fitted a clone
    assert not hasattr(transformer, "model_fingerprint_")
    return out, index, data, list(_CountingEngine.texts), heatmaps


def _png_ok(path):
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, (path, img.shape)
    assert img.std() > 0, f"{path} is blank"


def test_moe_report_writes_every_file(moe_report):
    out, index, data, _, _ = moe_report
    assert index == out / "index.html"
    expected = [f"{t}.{ext}" for t in TABLES for ext in ("csv", "md")] + PLOTS + [
        "routing_heatmap.png", "routing.csv", "probe_scores.csv", "transfer_scores.csv",
        "report.md", "index.html"]
    for name in expected:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in PLOTS + ["routing_heatmap.png"]:
        _png_ok(out / name)
    html, md = index.read_text(), (out / "report.md").read_text()
    for name in PLOTS + ["routing_heatmap.png"]:
        assert f'src="{name}"' in html and f"({name})" in md, name
    assert html.count("<table") >= 4 and "Expert routing" in md
    assert "| precision | float32 |" in md  # routing moves with the arithmetic: said which
    assert re.search(r"Sampling noise: two random halves of one language's texts differ by "
                     r"0\.\d{3} \(median over languages; up to 0\.\d{3}", md)
    assert "share of a language's routing slots" in md and "shares sum to 1" in md
    assert not (out / "umap_map.png").exists() and not (out / "umap_languages.png").exists()
    assert "umap_" not in html and "umap_" not in md


def test_html_renders_the_markdown_inline_code(moe_report):
    out, index, _, _, _ = moe_report
    html, md = index.read_text(), (out / "report.md").read_text()
    assert "`gap`" in md  # the Markdown keeps its backticks ...
    assert "`" not in html and "<code>gap</code>" in html  # ... the HTML renders them


def test_inline_html_escapes_then_renders_code_and_bold():
    assert _inline_html("a <b> & `x<y` **note**") == (
        "a &lt;b&gt; &amp; <code>x&lt;y</code> <strong>note</strong>")
    assert _inline_html("`**kept**`") == "<code>**kept**</code>"  # no bold inside code
    assert _inline_html("one ` backtick") == "one ` backtick"


def test_map_files_are_named_after_the_projection():
    assert _map_names(True) == ("UMAP (cosine)", "umap")  # the default keeps its file names
    assert _map_names(PCA(2)) == ("PCA", "pca")


def test_tables_have_one_row_per_language(moe_report):
    out, _, _, _, _ = moe_report
    per = pd.read_csv(out / "probe_per_language.csv")
    assert list(per["language"]) == LANGS
    assert list(per.columns[:5]) == ["language", "train_pool", "shots_per_label", "test_rows",
                                     "draws"]
    assert (per["train_pool"] == 112).all() and (per["shots_per_label"] == 4).all()
    assert (per["test_rows"] == 56).all() and (per["draws"] == 3).all()
    assert per["accuracy"].between(0, 1).all() and per["f1_macro"].between(0, 1).all()
    src = pd.read_csv(out / "transfer_from_source.csv")
    assert list(src["test_language"]) == LANGS and set(src["train_language"]) == {"eng_Latn"}
    matrix = pd.read_csv(out / "transfer_matrix.csv", index_col=0)
    assert list(matrix.index) == LANGS and list(matrix.columns) == LANGS
    md = (out / "probe_per_language.md").read_text().strip().splitlines()
    assert len(md) == 2 + len(LANGS)  # header, rule, one row per language
    routing = pd.read_csv(out / "routing.csv")
    assert set(routing["group"]) == set(LANGS) and set(routing["layer"]) == {1, 3}
    share = routing.groupby(["layer", "group"])["share"].sum()
    np.testing.assert_allclose(share, 1.0, rtol=1e-9)


def test_numbers_hang_together(moe_report):
    """Transfer diagonal = in-language probe (same draws); source row = from-source table."""
    out, _, _, _, _ = moe_report
    per = pd.read_csv(out / "probe_per_language.csv").set_index("language")
    matrix = pd.read_csv(out / "transfer_matrix.csv", index_col=0)
    src = pd.read_csv(out / "transfer_from_source.csv").set_index("test_language")
    for lang in LANGS:
        assert matrix.loc[lang, lang] == pytest.approx(per.loc[lang, "accuracy"], abs=1e-12)
        assert src.loc[lang, "accuracy"] == pytest.approx(matrix.loc["eng_Latn", lang], abs=1e-12)
        assert src.loc[lang, "gap"] == pytest.approx(
            per.loc[lang, "accuracy"] - matrix.loc["eng_Latn", lang], abs=1e-12)
    scores = pd.read_csv(out / "probe_scores.csv")
    acc = scores[scores.metric == "accuracy"].groupby("group")["score"].mean()
    np.testing.assert_allclose(acc[LANGS].to_numpy(), per.loc[LANGS, "accuracy"].to_numpy())


def test_each_distinct_text_is_encoded_once(moe_report):
    _, _, data, encoded, _ = moe_report
    assert len(encoded) == data["text"].nunique()
    assert sorted(encoded) == sorted(set(data["text"]))


@pytest.mark.slow
def test_dense_model_real_signal_and_no_routing(tmp_path, minilm_path):
    """A real (English) model on English + French with a held-out split: no routing files, and
    the English probe is far above chance, so texts, labels and vectors are wired correctly."""
    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"]).drop(columns="split")
    transformer = MoEEmbeddingTransformer(str(minilm_path), prompt_name=None)
    index = build_report(transformer, data, tmp_path, label_column="category", split_column=None,
                         id_column="index_id", shots=8, seeds=3, umap=PCA(2), progress=False)
    assert index.is_file()
    bitext = pd.read_csv(tmp_path / "bitext_retrieval.csv")
    assert list(bitext.columns) == ["language", "n", "from_eng_Latn", "to_eng_Latn", "chance"]
    assert bitext["language"].tolist() == ["fra_Latn"] and bitext["n"].tolist() == [168]
    assert bitext["chance"][0] == pytest.approx(1 / 168)
    assert "## Bitext retrieval" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "routing.csv").exists() and not (tmp_path / "routing_heatmap.png").exists()
    assert "Expert routing" not in index.read_text()
    per = pd.read_csv(tmp_path / "probe_per_language.csv").set_index("language")
    assert list(per.index) == ["eng_Latn", "fra_Latn"]
    assert (per["test_rows"] == 56).all()  # a third of 168 rows held out per language
    assert per.loc["eng_Latn", "accuracy"] > 0.45, per  # chance is 1/7
    for name in PLOTS:
        _png_ok(tmp_path / name)


def test_holdout_is_the_same_sentences_in_every_language():
    data = load_sib200_sample(languages=["eng_Latn", "deu_Latn"])
    rd = prepare_data(data.drop(columns="split"), split_column=None)
    ids = data.set_index("text")["index_id"]
    test_ids = {lang: sorted(ids[rd.test[rd.test.language == lang]["text"]])
                for lang in ["eng_Latn", "deu_Latn"]}
    assert test_ids["eng_Latn"] == test_ids["deu_Latn"]
    assert len(test_ids["eng_Latn"]) == 56
    counts = rd.test.groupby(["language", "label"]).size()
    assert counts.max() - counts.min() <= 1  # stratified by label


def test_holdout_by_id_keeps_translations_together_whatever_the_row_order():
    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn", "zho_Hans"]).drop(columns="split")
    shuffled = pd.concat([part.sample(frac=1.0, random_state=i)  # each language in its own order
                          for i, (_, part) in enumerate(data.groupby("language"))])
    by_position = prepare_data(shuffled, split_column=None)
    ids = shuffled.set_index("text")["index_id"]

    def test_ids(rd, lang):
        return set(ids[rd.test[rd.test.language == lang]["text"]])

    assert test_ids(by_position, "eng_Latn") != test_ids(by_position, "fra_Latn")  # the leak
    assert "by position" in by_position.split_note
    rd = prepare_data(shuffled, split_column=None, id_column="index_id")
    held = test_ids(rd, "eng_Latn")
    assert held == test_ids(rd, "fra_Latn") == test_ids(rd, "zho_Hans")
    assert held.isdisjoint(ids[rd.train["text"]])  # no test row translates a training row
    assert len(rd.test) == 3 * len(held) and abs(len(held) / ids.nunique() - 1 / 3) < 0.02
    counts = rd.test[rd.test.language == "eng_Latn"].label.value_counts()
    assert counts.max() - counts.min() <= 1  # stratified by label
    with pytest.raises(ReportError, match="id column 'sid' not found"):
        prepare_data(shuffled, split_column=None, id_column="sid")
    twice = shuffled.assign(index_id=shuffled["index_id"].where(shuffled["language"] != "zho_Hans", 1))
    with pytest.raises(ReportError, match="id 1 repeats within language 'zho_Hans'"):
        prepare_data(twice, split_column=None, id_column="index_id")


def test_prepare_data_errors():
    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    with pytest.raises(ReportError, match="label column 'topic' not found"):
        prepare_data(data, label_column="topic")
    with pytest.raises(ReportError, match="source language 'deu_Latn' is not in the data"):
        prepare_data(data, source_language="deu_Latn")
    no_test = data[~((data.language == "fra_Latn") & (data.split == "test"))]
    with pytest.raises(ReportError, match="'fra_Latn' has no test rows"):
        prepare_data(no_test)
    one_label = data[~((data.language == "fra_Latn") & (data.split == "train")
                       & (data.category != "sports"))]
    with pytest.raises(ReportError, match="'fra_Latn' has a single label \\('sports'\\) in its 16"):
        prepare_data(one_label)  # before any model is loaded
    assert prepare_data(data).source_language == "eng_Latn"
    assert prepare_data(data[data.language == "fra_Latn"]).source_language == "fra_Latn"


def test_markdown_table():
    df = pd.DataFrame({"name": ["a|b", "c"], "x": [0.12345, np.nan], "n": [1, 2]})
    lines = markdown_table(df).strip().splitlines()
    assert lines[0] == "| name | x | n |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| a\\|b | 0.123 | 1 |"
    assert lines[3] == "| c |  | 2 |"


def test_markdown_metadata_of_a_multi_line_repr_stays_one_table_row():
    from skmoe.render import to_markdown

    meta = [("transformer", "Pipeline(steps=[('tfidf',\n      TfidfVectorizer()) | x])"), ("rows", "3")]
    lines = to_markdown("t", meta, []).splitlines()
    at = lines.index("|---|---|")
    assert lines[at + 1] == "| transformer | Pipeline(steps=[('tfidf', TfidfVectorizer()) \\| x]) |"
    assert lines[at + 2] == "| rows | 3 |"


def test_transfer_text_gives_chance_and_names_languages_near_it():
    labels = [f"t{i}" for i in range(7)] * 2
    test = pd.DataFrame({"text": "x", "label": labels, "language": "eng_Latn"})
    rd = ReportData(test, test, ["eng_Latn", "zho_Hans", "deu_Latn"], "eng_Latn", "note")
    from_src = pd.DataFrame({"test_language": ["eng_Latn", "zho_Hans", "deu_Latn"],
                             "accuracy": [0.8, 0.15, 0.7], "gap": [0.0, 0.004, 0.05]})
    text = sections(ReportResults(rd, 8, 5, chance=1 / 7, from_source=from_src))[1].text
    assert "Chance (majority-class rate): 0.143" in text
    assert ("Smallest gap (transfer loses least): zho_Hans (+0.004); largest: deu_Latn "
            "(+0.050). ") in text
    # a negative gap is transfer above the in-language probe: said, not called "closest"
    from_src["gap"] = [0.0, -0.011, -0.007]
    text = sections(ReportResults(rd, 8, 5, chance=1 / 7, from_source=from_src))[1].text
    assert ("Smallest gap (transfer loses least): zho_Hans (-0.011); largest: deu_Latn (-0.007); "
            "transfer scored above the in-language probe in zho_Hans, deu_Latn.") in text
    assert "Near chance (transfer accuracy below chance + 0.1): zho_Hans: no transfer" in text
    train = pd.concat([test, test.assign(language="fra_Latn")[test.label != "t3"]])
    rd = ReportData(train, test, ["eng_Latn", "fra_Latn"], "eng_Latn", "note")
    protocol = sections(ReportResults(rd, 8, 5, chance=1 / 7, from_source=from_src[:1]))[0].text
    assert "some languages lack labels in their training rows (fra_Latn: t3)" in protocol


def test_bitext_table_directions_and_chance():
    from skmoe.report import bitext_table

    e = np.eye(3)
    eng, fra = e, np.array([e[0], e[0] + 0.1 * e[1], e[2]])
    rows = pd.DataFrame({"language": ["eng"] * 3 + ["fra"] * 3, "id": [7, 8, 9, 7, 8, 9]})
    table = bitext_table(np.vstack([eng, fra]), rows, "eng")
    # eng queries find their fra translation every time; fra row 8 lies nearer eng row 7
    assert table.to_dict("records") == [{"language": "fra", "n": 3, "from_eng": 1.0,
                                         "to_eng": pytest.approx(2 / 3),
                                         "chance": pytest.approx(1 / 3)}]


# -- an honest report: captions, scales, spread --------------------------------------------------
def test_learned_pooling_section_comes_from_the_run(moe_report, random_moe_xlmr_path):
    """Learned vs mean pooling per language: the table, its sentence and the token-weights
    plot; the mean-pooling column agrees with LogisticRegression() on the transformer's own
    vectors (mean pooling), computed here independently."""
    from sklearn.linear_model import LogisticRegression

    out, _, data, _, _ = moe_report
    table = pd.read_csv(out / "learned_pooling.csv")
    assert list(table["language"]) == LANGS
    assert (table["train_rows"] == 112).all() and (table["test_rows"] == 56).all()
    for col in ("mean_pooling", "learned_pooling"):
        assert table[col].between(0, 1).all()
        np.testing.assert_allclose(table[col] * 56, np.round(table[col] * 56), atol=1e-9)
    np.testing.assert_allclose(table["difference"],
                               table["learned_pooling"] - table["mean_pooling"], atol=1e-12)
    assert np.isfinite(table[["ci_low", "ci_high"]]).all().all()
    assert (table["ci_low"] <= table["difference"] + 1e-12).all()
    assert (table["difference"] <= table["ci_high"] + 1e-12).all()
    assert table["epochs"].between(1, AUTO_EPOCHS_SMALL).all()  # 112 rows: no held-out split
    for lang, row in table.set_index("language").iterrows():
        part = data[data.language == lang]
        tr, te = part[part.split == "train"], part[part.split == "test"]
        emb = MoEEmbeddingTransformer(str(random_moe_xlmr_path)).fit(tr.text)  # centred on tr
        acc = LogisticRegression().fit(emb.transform(tr.text), tr.category).score(
            emb.transform(te.text), te.category)
        assert row["mean_pooling"] == pytest.approx(acc, abs=1 / 56 + 1e-9), lang
    md = (out / "report.md").read_text()
    assert "## Learned pooling vs mean pooling" in md
    d = table["difference"]
    assert f"Mean difference {d.mean():+.3f} (from {d.min():+.3f} to {d.max():+.3f})" in md
    took = float(md.split("This part took ")[1].split(" s")[0])
    states = float(md.split("This part took ")[1].split(" s, ")[1].split(" s of it")[0])
    assert 0 < states <= took
    _png_ok(out / "token_weights.png")
    assert "(token_weights.png)" in md


def test_heatmap_scale_runs_from_chance_to_one(moe_report):
    out, _, _, _, heatmaps = moe_report
    chance = 8 / 56  # 8 test rows of each of the 7 topics per language
    assert heatmaps == [(pytest.approx(chance), 1.0)]
    md = (out / "report.md").read_text()
    assert f"from chance ({chance:.3f}, the majority-class rate) to 1.0" in md


def test_every_mean_has_its_spread(moe_report):
    out, _, _, _, _ = moe_report
    src = pd.read_csv(out / "transfer_from_source.csv")
    for mean in ("accuracy", "in_language_accuracy", "gap"):
        assert f"{mean}_std" in src.columns and src[f"{mean}_std"].notna().all(), mean
    std = pd.read_csv(out / "transfer_matrix_std.csv", index_col=0)
    scores = pd.read_csv(out / "transfer_scores.csv")
    cell = scores[(scores.train_language == "eng_Latn") & (scores.test_language == "zho_Hans")]
    assert std.loc["eng_Latn", "zho_Hans"] == pytest.approx(cell["score"].std())
    assert src.set_index("test_language").loc["zho_Hans", "accuracy_std"] == pytest.approx(
        cell["score"].std())
    matrix_md = (out / "transfer_matrix.md").read_text()
    assert matrix_md.count(" ± ") == len(LANGS) ** 2
    per = pd.read_csv(out / "probe_per_language.csv")
    assert {"accuracy_std", "f1_macro_std"} <= set(per.columns)


def test_map_captions_say_what_the_maps_show(moe_report):
    out, _, _, _, _ = moe_report
    md = (out / "report.md").read_text()
    assert "PCA of the 56 eng_Latn test texts only, one translation per sentence" in md
    assert "PCA of all 112 test texts (2 languages), coloured by language" in md
    assert "Topics that cluster across languages" not in md  # the old, unchecked claim
    assert "starts at 0 (a router without preference gives each expert 1/8 = 0.125)" in md


def test_map_caption_names_translation_blobs():
    # three sentences in two languages: each text's nearest neighbour is its translation
    e = np.eye(3)
    X = np.vstack([e, e + 0.01])
    rows = pd.DataFrame({"id": [1, 2, 3] * 2, "label": ["a", "b", "a"] * 2,
                         "language": ["eng"] * 3 + ["fra"] * 3})
    shares = nearest_neighbour_shares(X, rows)
    assert shares == {"id": 1.0, "label": 1.0, "language": 0.0, "queries": 6}
    sample = nearest_neighbour_shares(X, rows, max_queries=4)  # 4 rows ask, all 6 answer
    assert sample == {"id": 1.0, "label": 1.0, "language": 0.0, "queries": 4}
    assert "Each of a seeded sample of 4 texts: its nearest neighbour is a translation" in (
        map_caption("UMAP", "language", rows, "eng", sample))
    caption = map_caption("UMAP", "language", rows, "eng", shares)
    assert "is a translation of the same sentence for 100%" in caption
    assert "mostly one sentence in its translations, not topics" in caption
    apart = nearest_neighbour_shares(np.vstack([e[[0, 0, 0]], e[[1, 1, 1]]]) + 0.01 * np.eye(6, 3),
                                     rows.drop(columns="id"))
    assert apart["language"] == 1.0
    assert "languages mostly sit in regions of their own" in map_caption(
        "UMAP", "language", rows.drop(columns="id"), "eng", apart)


def test_prepare_data_moved_with_a_deprecation_warning():
    import skmoe.report as report

    with pytest.warns(DeprecationWarning, match="skmoe.evaluation.prepare_data"):
        moved = report.prepare_data
    assert moved is prepare_data
    assert ReportError is DataError


# -- probe and report inputs (issue 19 item 6) -----------------------------------------------------
def test_unknown_split_values_are_an_error_and_dev_rows_are_named():
    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    typo = data.copy()
    typo.loc[typo.index[[3, 9]], "split"] = "tset"
    with pytest.raises(DataError, match=r"split value\(s\) other than train / test: 'tset' "
                                        r"\(2 rows\); first at row 3"):
        prepare_data(typo)
    dev = data.copy()
    dev.loc[dev.index[:10], "split"] = "dev"
    rd = prepare_data(dev)
    assert len(rd.train) + len(rd.test) == len(data) - 10
    assert "10 rows marked dev not used" in rd.split_note


def test_test_labels_never_seen_in_training_are_an_error():
    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    odd = data.copy()
    odd.loc[(odd.split == "test") & (odd.index % 50 == 0), "category"] = "weather"
    n = int((odd.category == "weather").sum())
    with pytest.raises(DataError, match=f"test label\\(s\\) 'weather' .*{n} test rows.*never "
                                        "appear in the training rows"):
        prepare_data(odd)


def test_labels_mixing_int_and_str_are_a_clear_error():
    data = load_sib200_sample(languages=["eng_Latn"]).astype({"index_id": object})
    data["category"] = data["category"].astype(object)
    data.loc[data.index[4], "category"] = 3
    with pytest.raises(DataError, match=r"mix several kinds of value: str \('.*'\), number \(3\)"):
        prepare_data(data)
    blank = load_sib200_sample(languages=["eng_Latn"])
    blank.loc[blank.index[7], "category"] = " "
    with pytest.raises(DataError, match="missing label at row 7 of column 'category'"):
        prepare_data(blank)


def test_learned_pooling_section_mirrors_every_shared_setting_of_the_transformer():
    from skmoe import LearnedPooling
    from skmoe.report_pooling import pooling_params

    est = MoEEmbeddingTransformer("some/model", prompt="query: ", max_length=128,
                                  long_text="chunk", chunk_overlap=16, normalize=True,
                                  center=False)
    params = pooling_params(est)
    assert params["long_text"] == "chunk" and params["chunk_overlap"] == 16
    assert params["normalize"] is True and params["center"] is False
    assert params["max_length"] == 128 and params["prompt"] == "query: "
    LearnedPooling(**params)  # every one is a LearnedPooling parameter


def test_a_second_report_in_the_same_folder_leaves_none_of_the_first_ones_files(tmp_path,
                                                                              minilm_path):
    """The first report draws PCA maps, the second none: its folder then held pca_map.png from
    the first, which its index no longer showed. A report removes only what the previous
    report listed (.skmoe-report-files), never the user's files."""
    from skmoe.render import MANIFEST

    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    transformer = MoEEmbeddingTransformer(str(minilm_path), prompt_name=None,
                                          cache=str(tmp_path / "c.sqlite"))
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    build_report(transformer, data, out, label_column="category", shots=4, seeds=2,
                 umap=PCA(2), routing=False, progress=False)
    assert (out / "pca_map.png").is_file()
    listed = (out / MANIFEST).read_text().split()
    assert "pca_map.png" in listed and "index.html" in listed and "notes.txt" not in listed
    build_report(transformer, data, out, label_column="category", shots=4, seeds=2,
                 umap=False, routing=False, progress=False)
    assert not (out / "pca_map.png").exists() and not (out / "pca_languages.png").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "index.html").is_file()
    assert "pca_map.png" not in (out / MANIFEST).read_text()


def test_a_report_that_fails_part_way_leaves_the_previous_one_whole(tmp_path, minilm_path,
                                                                   monkeypatch):
    """On a full disk the first report in a folder left a cut index.html under its name, and a
    second one removed the first report before writing its own: neither was left. A report is
    written in a folder of its own and moved in whole once written."""
    import errno

    import skmoe.render as render

    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    transformer = MoEEmbeddingTransformer(str(minilm_path), prompt_name=None,
                                          cache=str(tmp_path / "c.sqlite"))
    out = tmp_path / "report"
    build_report(transformer, data, out, label_column="category", shots=4, seeds=2,
                 umap=False, routing=False, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render, "to_html", full)  # the last file written
    with pytest.raises(OSError, match="No space"):
        build_report(transformer, data, out, label_column="category", shots=4, seeds=3,
                     umap=False, routing=False, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-new
    first = tmp_path / "first"
    with pytest.raises(OSError, match="No space"):
        build_report(transformer, data, first, label_column="category", shots=4, seeds=2,
                     umap=False, routing=False, progress=False)
    assert list(first.iterdir()) == []  # no cut report under the names users open


def test_routing_note_reads_the_pairs_against_the_sampling_noise():
    from types import SimpleNamespace

    from skmoe.report_sections import routing_note

    div = pd.DataFrame({"layer": [1] * 3 + [3] * 3, "group_a": ["a", "a", "b"] * 2,
                        "group_b": ["b", "c", "c"] * 2,
                        "js_divergence": [0.001, 0.01, 0.02, 0.003, 0.01, 0.02]})
    halves = pd.DataFrame({"layer": [1, 1, 1, 3, 3, 3], "group": ["a", "b", "c"] * 2,
                           "js_divergence": [0.002, 0.001, np.nan, 0.004, 0.001, np.nan]})
    note = routing_note(SimpleNamespace(divergence=div, split_half=halves))
    assert "most different pair b / c (0.020), most similar a / b (0.002)" in note
    assert "differ by 0.002 (median over languages; up to 0.003" in note  # a 0.003, b 0.001
    assert note.endswith("within that noise (their difference may be noise alone): 1 of 3.")
    one = routing_note(SimpleNamespace(divergence=div[div.group_b == "b"], split_half=halves))
    assert "mean over MoE layers: a / b 0.002." in one and "most similar" not in one


def test_a_fully_cached_report_of_a_dense_model_loads_no_weights(minilm_path, tmp_path):
    """The report loaded the model only to fill its table of facts (model, precision), after
    every text came from the cache (2.4 s for e5-small; the real model's weights are 1.9 GB)."""
    from skmoe import registry

    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    data = data.groupby(["language", "split", "category"]).head(3).reset_index(drop=True)
    kwargs = {"shots": 2, "seeds": 2, "umap": False, "progress": False}
    est = MoEEmbeddingTransformer(str(minilm_path), prompt="", cache=str(tmp_path / "c.sqlite"))
    build_report(est, data, tmp_path / "first", **kwargs)
    registry.clear()
    build_report(est, data, tmp_path / "again", **kwargs)
    assert registry.loaded() == []
    facts = [(tmp_path / d / "report.md").read_text().split("| languages |")[0]
             for d in ("first", "again")]
    assert facts[0] == facts[1] and "| precision | float32 |" in facts[0]
    assert "| architecture | dense |" in facts[0]
