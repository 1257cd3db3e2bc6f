import numpy as np
import pandas as pd
import pytest

from skmoe.datasets import STS17_TRACKS, load_sib200, load_sib200_sample, load_sts17

SAMPLE_LANGS = ["eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn", "rus_Cyrl", "zho_Hans",
                "arb_Arab", "hin_Deva"]


def test_bundled_sample_shape_balance_and_alignment():
    df = load_sib200_sample()
    assert list(df.columns) == ["language", "split", "index_id", "category", "text"]
    assert list(pd.unique(df.language)) == SAMPLE_LANGS
    sizes = df.groupby(["language", "split"]).size()
    assert set(sizes.xs("train", level="split")) == {112}
    assert set(sizes.xs("test", level="split")) == {56}
    eng = df[df.language == "eng_Latn"]
    assert set(eng[eng.split == "train"].category.value_counts()) == {16}
    assert set(eng[eng.split == "test"].category.value_counts()) == {8}
    for lang in SAMPLE_LANGS[1:]:
        other = df[df.language == lang]
        np.testing.assert_array_equal(other[["split", "index_id", "category"]].to_numpy(),
                                      eng[["split", "index_id", "category"]].to_numpy())
        assert not set(other.text) & set(eng.text)  # translated, not copied
    assert df.text.str.len().min() > 5


def test_bundled_sample_subsets_and_errors():
    df = load_sib200_sample(languages="zho_Hans", splits="test")
    assert len(df) == 56 and set(df.language) == {"zho_Hans"} and set(df.split) == {"test"}
    with pytest.raises(ValueError, match="no language"):
        load_sib200_sample(languages=["xxx_Latn"])
    with pytest.raises(ValueError, match="split"):
        load_sib200_sample(splits="dev")


def test_sample_splits_none_means_all_and_empty_selections_are_refused():
    pd.testing.assert_frame_equal(load_sib200_sample(splits=None), load_sib200_sample())
    for name in ("languages", "splits"):
        with pytest.raises(ValueError, match=f"{name} is empty, which selects no rows"):
            load_sib200_sample(**{name: []})


def test_sample_matches_source(sib200_dir):
    from skmoe.datasets.make_sample import make_sample

    rebuilt = make_sample(sib200_dir)
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), load_sib200_sample(),
                                  check_dtype=False)


def test_license_files_are_package_data():
    from importlib import resources

    data = resources.files("skmoe.datasets").joinpath("data")
    readme = data.joinpath("README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in readme and "FLORES-200" in readme and "SIB-200" in readme
    assert "CC BY-SA 4.0" in data.joinpath("LICENSE").read_text(encoding="utf-8")


def test_load_sib200_full(sib200_dir):
    df = load_sib200(sib200_dir, ["eng_Latn", "jpn_Jpan"], splits=("train", "dev", "test"))
    sizes = df.groupby(["language", "split"]).size().to_dict()
    # tests/data/sib200: English complete, other languages' first rows (see its README)
    assert sizes[("eng_Latn", "train")] == 701 and sizes[("jpn_Jpan", "dev")] == 4
    assert sizes[("eng_Latn", "test")] == 204
    assert sorted(df.category.unique()) == sorted(
        (sib200_dir / "eng_Latn" / "labels.txt").read_text().split("\n")[:7])
    # Quoted fields are unquoted by the CSV parser: no text keeps the file's wrapping quotes
    # and no field holds a stray tab.
    raw = (sib200_dir / "eng_Latn" / "train.tsv").read_text(encoding="utf-8").splitlines()
    quoted = [line.split("\t", 2)[2] for line in raw[1:] if line.split("\t", 2)[2].startswith('"')]
    assert quoted, "expected at least one quoted text in the source file"
    eng = df[(df.language == "eng_Latn") & (df.split == "train")].text
    inner = quoted[0][1:-1].replace('""', '"')
    assert inner in set(eng)
    assert not eng.str.contains("\t").any()
    every = load_sib200(sib200_dir, splits="test")
    assert every.language.nunique() == 32
    with pytest.raises(FileNotFoundError):
        load_sib200(sib200_dir, ["xxx_Latn"])
    with pytest.raises(ValueError, match="split"):
        load_sib200(sib200_dir, "eng_Latn", splits="validation")
    assert set(load_sib200(sib200_dir, "eng_Latn", splits=None).split) == {"train", "dev", "test"}
    with pytest.raises(ValueError, match="languages is empty"):
        load_sib200(sib200_dir, [])


def test_load_sts17(sts17_dir):
    df = load_sts17(sts17_dir)
    assert list(df.columns) == ["track", "language1", "language2", "sentence1", "sentence2",
                                "score"]
    counts = df.track.value_counts().to_dict()
    # tests/data/sts17 keeps the first 50 gold scores per track and 100 track6 input pairs
    assert counts == {t: 50 for t in STS17_TRACKS}  # track6: gold covers the first 50 only
    t5 = df[df.track == "track5.en-en"]
    assert t5.iloc[0].sentence1 == "A person is on a baseball team."
    assert t5.iloc[0].score == pytest.approx(2.4)
    # Column languages follow the text, not the file name (README of the data).
    t2 = df[df.track == "track2.ar-en"].iloc[0]
    assert (t2.language1, t2.language2) == ("en", "ar") and t2.sentence1.isascii()
    t6 = df[df.track == "track6.tr-en"]
    assert (t6.iloc[0].language1, t6.iloc[0].language2) == ("en", "tr")
    line = (sts17_dir / "STS2017.eval.v1.1" / "STS.input.track6.tr-en.txt").read_text(
        encoding="utf-8").splitlines()[49]
    assert t6.iloc[-1].sentence1 + "\t" + t6.iloc[-1].sentence2 == line
    # Literal quote characters stay in the text (track 4b has some).
    assert df[df.track == "track4b.es-en"].sentence1.str.contains('"').any()
    assert df.score.between(0, 5).all()
    one = load_sts17(sts17_dir, "track1.ar-ar")
    assert len(one) == 50 and set(one.language1) == {"ar"}
    with pytest.raises(ValueError, match="unknown"):
        load_sts17(sts17_dir, "track9.xx-xx")
