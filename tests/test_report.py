"""The main job's report builder on local models: every file, and numbers that hang together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.decomposition import PCA

import skmoe.estimator as estimator_module
from skmoe.datasets import load_sib200_sample
from skmoe.estimator import MoEEmbeddingTransformer
from skmoe.report import (
    ReportError,
    _inline_html,
    _map_names,
    build_report,
    markdown_table,
    prepare_data,
)

LANGS = ["eng_Latn", "zho_Hans"]
TABLES = ["probe_per_language", "transfer_from_source", "transfer_matrix"]
# The reports below project with PCA(2): the map files are named after it.
PLOTS = ["accuracy_by_language.png", "transfer_heatmap.png", "pca_map.png", "pca_languages.png"]


class _CountingEngine(estimator_module.Engine):
    """The estimator's engine, counting the texts it is asked to encode."""

    texts: list[str] = []

    def iter_embed_batches(self, texts, prompt="", **kwargs):
        type(self).texts.extend(texts)
        return super().iter_embed_batches(texts, prompt, **kwargs)


@pytest.fixture(scope="module")
def moe_report(tmp_path_factory, random_moe_xlmr_path):
    """The report of the tiny random MoE (real XLM-R tokenizer) on two languages of the sample."""
    out = tmp_path_factory.mktemp("report-moe")
    data = load_sib200_sample(languages=LANGS)
    transformer = MoEEmbeddingTransformer(str(random_moe_xlmr_path))
    _CountingEngine.texts = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(estimator_module, "Engine", _CountingEngine)
        index = build_report(transformer, data, out, shots=4, seeds=3, umap=PCA(2),
                             progress=False)
    return out, index, data, list(_CountingEngine.texts)


def _png_ok(path):
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, (path, img.shape)
    assert img.std() > 0, f"{path} is blank"


def test_moe_report_writes_every_file(moe_report):
    out, index, data, _ = moe_report
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
    assert not (out / "umap_map.png").exists() and not (out / "umap_languages.png").exists()
    assert "umap_" not in html and "umap_" not in md


def test_html_renders_the_markdown_inline_code(moe_report):
    out, index, _, _ = moe_report
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
    out, _, _, _ = moe_report
    per = pd.read_csv(out / "probe_per_language.csv")
    assert list(per["language"]) == LANGS
    assert (per["n_train"] == 112).all() and (per["n_test"] == 56).all() and (per["draws"] == 3).all()
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
    out, _, _, _ = moe_report
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
    _, _, data, encoded = moe_report
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
    assert (per["n_test"] == 56).all()  # a third of 168 rows held out per language
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
    from skmoe.report import _markdown

    meta = [("transformer", "Pipeline(steps=[('tfidf',\n      TfidfVectorizer()) | x])"), ("rows", "3")]
    lines = _markdown("t", meta, []).splitlines()
    at = lines.index("|---|---|")
    assert lines[at + 1] == "| transformer | Pipeline(steps=[('tfidf', TfidfVectorizer()) \\| x]) |"
    assert lines[at + 2] == "| rows | 3 |"


def test_transfer_text_gives_chance_and_names_languages_near_it():
    from skmoe.report import ReportData, _sections

    labels = [f"t{i}" for i in range(7)] * 2
    test = pd.DataFrame({"text": "x", "label": labels, "language": "eng_Latn"})
    rd = ReportData(test, test, ["eng_Latn", "zho_Hans", "deu_Latn"], "eng_Latn", "note")
    from_src = pd.DataFrame({"test_language": ["eng_Latn", "zho_Hans", "deu_Latn"],
                             "accuracy": [0.8, 0.15, 0.7], "gap": [0.0, 0.004, 0.05]})
    text = _sections(rd, pd.DataFrame(), pd.DataFrame(), from_src, 8, 5, [], False, None, "",
                     "")[1].text
    assert "Chance (majority-class rate): 0.143" in text
    assert "closest to in-language: zho_Hans (gap +0.004); furthest: deu_Latn (gap +0.050)" in text
    assert "Near chance (transfer accuracy below chance + 0.1): zho_Hans: no transfer" in text
    train = pd.concat([test, test.assign(language="fra_Latn")[test.label != "t3"]])
    rd = ReportData(train, test, ["eng_Latn", "fra_Latn"], "eng_Latn", "note")
    protocol = _sections(rd, pd.DataFrame(), pd.DataFrame(), from_src[:1], 8, 5, [], False, None,
                         "", "")[0].text
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
