"""The ``skmoe`` command line: every subcommand, the main job end to end, and user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

import skmoe.cli as cli
import skmoe.cli_report as cli_report
import skmoe.embedding as embedding_module
from skmoe import registry
from skmoe.cli import main
from skmoe.datasets import load_sib200_sample
from skmoe.estimator import MoEEmbeddingTransformer
from skmoe.postprocessing import UNCENTRED_NORMALIZE  # `skmoe embed` writes uncentred rows

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["The cat sat on the mat.", "Le chat est sur le tapis.", "", "猫在垫子上。",
         "Die Katze sitzt.", "El gato.", "Кошка сидит на ковре.", "القطة", "बिल्ली",
         "The cat sat on the mat."]


@pytest.fixture(autouse=True)
def _no_default_cache(tmp_path, monkeypatch):
    """Never write the user's ~/.cache: the default cache lives in the test's folder."""
    monkeypatch.setenv("SKMOE_CACHE", str(tmp_path / "default-cache.sqlite"))


@pytest.fixture
def moe(random_moe_xlmr_path) -> str:
    return str(random_moe_xlmr_path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, expected_code, *fragments):
    assert code == expected_code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("skmoe: error:")]
    assert len(errors) == 1, err
    assert err.rstrip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


class _CountingEngine(embedding_module.Engine):
    texts: list[str] = []

    def iter_embed_chunks(self, chunks, prompt="", **kwargs):
        seen = type(self).texts
        return super().iter_embed_chunks((seen.extend(c) or c for c in chunks), prompt, **kwargs)


# -- help, version, console script ------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["embed", "--help"],
                                  ["probe", "--help"], ["info", "--help"], ["cache", "--help"],
                                  ["cache", "stats", "--help"], ["cache", "clear", "--help"]])
def test_help_everywhere(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out.startswith("usage: skmoe")


def test_each_command_is_described_by_its_function(capsys):
    """``skmoe NAME --help`` shows the docstring of the function that runs NAME."""
    import inspect
    import re

    from skmoe.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "probe", "quantize", "embed", "info", "cache"}
    for name, parser in sub.choices.items():
        func = parser.get_default("func")
        assert func.__name__ == f"cmd_{name}"
        code, out, _ = run(capsys, name, "--help")
        text = re.sub(r"\s+", "", inspect.getdoc(func))  # argparse re-wraps (also at hyphens)
        assert code == 0 and text and text in re.sub(r"\s+", "", out), name


def test_no_command_prints_help_and_fails(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: skmoe" in err


def test_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "embed", "x.txt")  # -o missing
    assert code == 2 and "-o/--output" in err
    code, _, err = run(capsys, "demo", "--shots", "0")
    assert code == 2 and "positive integer" in err


def test_console_script_and_module():
    """``python -m skmoe`` and the installed ``skmoe`` script both run (no torch for --help)."""
    res = subprocess.run([sys.executable, "-m", "skmoe", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "demo" in res.stdout and "embed" in res.stdout
    script = Path(sys.executable).with_name("skmoe")
    assert script.is_file(), "console script not installed (pip install -e .)"
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "skmoe 0.1.0"


@pytest.mark.slow
def test_demo_without_network_ends_with_the_clear_message(tmp_path):
    """The default model is not on this machine and there is no network: one clear line, exit 1,
    no traceback, no report folder, and never a substitute model."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "SKMOE_CACHE": str(tmp_path / "c.sqlite")}
    out = tmp_path / "report"
    res = subprocess.run([Path(sys.executable).with_name("skmoe"), "demo", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(res.returncode, res.stderr, 1,
                          "Could not load model 'nomic-ai/nomic-embed-text-v2-moe'",
                          "--model FOLDER", "never substitutes")
    assert not out.exists()


# -- the main job end to end ---------------------------------------------------------------------
@pytest.mark.slow
def test_demo_end_to_end_on_a_local_moe(capsys, tmp_path, moe):
    """`skmoe demo --model PATH`: every report file exists and is non-empty, the PNGs decode,
    the tables have one row per language (real UMAP, routing heatmap since the model is MoE)."""
    out = tmp_path / "report"
    langs = ["eng_Latn", "hin_Deva"]
    code, stdout, err = run(capsys, "demo", "--model", moe, "--out", out, "--languages", *langs,
                            "--shots", 4, "--seeds", 2, "--cache", tmp_path / "c.sqlite")
    assert code == 0, err
    assert str(out / "index.html") in stdout
    assert "report:" in err and "embedding:" in err  # progress bars
    pngs = ["accuracy_by_language.png", "transfer_heatmap.png", "umap_map.png",
            "umap_languages.png", "routing_heatmap.png", "token_weights.png"]
    tables = ["probe_per_language", "transfer_from_source", "transfer_matrix", "bitext_retrieval",
              "learned_pooling"]  # learned pooling: on by default in the demo
    files = pngs + [f"{t}.{e}" for t in tables for e in ("csv", "md")] + [
        "routing.csv", "report.md", "index.html"]
    for name in files:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in pngs:
        img = imread(out / name)
        assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0, name
    assert list(pd.read_csv(out / "probe_per_language.csv")["language"]) == langs
    assert list(pd.read_csv(out / "transfer_from_source.csv")["test_language"]) == langs
    assert pd.read_csv(out / "bitext_retrieval.csv")["n"].tolist() == [168]  # sample ids paired
    report = (out / "report.md").read_text()
    assert "UMAP (cosine)" in report and "336 distinct" in report and "(0 from the cache)" in report


def test_learned_pooling_is_on_for_demo_and_off_for_probe_by_default():
    """The help says so; an argument-level default once overrode the demo's (the demo ran
    without it while its help and the docs said it was on)."""
    from skmoe.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo"]).learned_pooling is True
    assert parser.parse_args(["demo", "--no-learned-pooling"]).learned_pooling is False
    assert parser.parse_args(["probe", "t.csv"]).learned_pooling is False
    assert parser.parse_args(["probe", "t.csv", "--learned-pooling"]).learned_pooling is True


def test_probe_on_a_user_table(capsys, tmp_path, moe, monkeypatch):
    data = load_sib200_sample(languages=["spa_Latn", "rus_Cyrl"])
    data = data.groupby(["language", "category"]).head(6)  # 42 rows per language
    table = data.rename(columns={"text": "sentence", "category": "topic", "language": "lang"})
    path = tmp_path / "mine.csv"
    table[["sentence", "topic", "lang", "index_id"]].to_csv(path, index=False)
    out = tmp_path / "rep"
    code, _, err = run(capsys, "probe", path, "--text-column", "sentence", "--label-column",
                       "topic", "--language-column", "lang", "--out", out, "--map", "none",
                       "--shots", 3, "--seeds", 2, "--model", moe, "-q", "--id-column", "index_id")
    assert code == 0, err
    per = pd.read_csv(out / "probe_per_language.csv")
    assert list(per["language"]) == ["spa_Latn", "rus_Cyrl"]
    assert (per["test_rows"] == 14).all()  # a stratified third held out
    assert "of the sentence ids (column 'index_id')" in (out / "report.md").read_text()
    assert not (out / "umap_map.png").exists() and (out / "routing_heatmap.png").is_file()
    # the source language falls back to the first language when English is absent
    assert set(pd.read_csv(out / "transfer_from_source.csv")["train_language"]) == {"spa_Latn"}

    code, _, err = run(capsys, "probe", path, "--out", out)
    assert_one_line_error(code, err, 2, "text column 'text' not found", "sentence, topic, lang",
                          "--text-column")
    code, _, err = run(capsys, "probe", path, "--text-column", "sentence", "--label-column",
                       "topic", "--language-column", "lang", "--languages", "xx", "--out", out)
    assert_one_line_error(code, err, 2, "language(s) ['xx'] not in")

    # checked before the model loads: a source language that is not there, an empty label cell
    def no_model(*args):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(cli_report, "load_model", no_model)
    options = ["--text-column", "sentence", "--label-column", "topic", "--language-column",
               "lang", "--out", out, "--model", moe, "-q"]
    code, _, err = run(capsys, "probe", path, *options, "--source-language", "xx")
    assert_one_line_error(code, err, 2, "source language 'xx' is not in the data")
    holes = table[["sentence", "topic", "lang"]].copy()
    holes.loc[holes.index[5], "topic"] = ""
    holes.to_csv(path, index=False)
    code, _, err = run(capsys, "probe", path, *options)
    assert_one_line_error(code, err, 2, "missing label at row 5 of column 'topic'")


# -- embed ---------------------------------------------------------------------------------------
def test_embed_txt_to_npy_matches_the_estimator(capsys, tmp_path, moe):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    dst = tmp_path / "out.npy"
    code, stdout, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--no-cache", "-q")
    assert code == 0, err
    assert f"wrote {len(TEXTS)} x 64" in stdout
    assert "warning: 1 empty text(s) in" in err and "(first at line 3)" in err
    got = np.load(dst)
    want = MoEEmbeddingTransformer(moe, normalize=UNCENTRED_NORMALIZE).fit([]).transform(TEXTS)
    assert got.shape == (len(TEXTS), 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_embed_reads_compressed_text_files(capsys, tmp_path, moe, suffix):
    """.txt.gz was told apart by its extension but read as raw bytes ("not valid UTF-8")."""
    import bz2
    import gzip
    import lzma

    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    src = tmp_path / f"in.txt{suffix}"
    src.write_bytes(compress(("\n".join(TEXTS) + "\n").encode("utf-8")))
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe,
                       "--no-cache", "-q")
    assert code == 0, err
    want = MoEEmbeddingTransformer(moe, normalize=UNCENTRED_NORMALIZE).fit([]).transform(TEXTS)
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), want, atol=1e-6)


def test_a_stray_quote_in_a_tsv_is_pointed_at(tmp_path):
    """TSV is read with CSV quoting (SIB-200's files need it); a stray quote merges lines into
    one cell, which is said, with the row."""
    from skmoe.io import read_texts

    src = tmp_path / "in.tsv"
    src.write_text('text\tid\n"a\t1\nb\t2\nc"\t3\nd\t4\n', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 cell\(s\) of column 'text' hold a line break inside "
                      r"quotes \(first at row 0\).*stray \""):
        assert read_texts(src, "text") == ["a\t1\nb\t2\nc", "d"]


def test_quotes_inside_a_field_are_kept_or_refused_never_dropped(tmp_path):
    """`"Hello" she said` was read as `Hello she said`: pandas takes the opening quote for CSV
    quoting and drops the quotes. A TSV is then plain TSV (warned, with the line); a CSV is
    refused with its line. A file quoted as pandas writes it reads back to the letter, unwarned."""
    import warnings

    from skmoe.io import InputError, read_texts

    tsv = tmp_path / "in.tsv"
    tsv.write_text('text\tid\nplain\t1\n"Hello" she said\t2\n"x"\t3\n', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"line 3 is not CSV-quoted \(text follows a closing "
                      r"quote\): the file is read as plain TSV"):
        assert read_texts(tsv, "text") == ["plain", '"Hello" she said', '"x"']
    csv = tmp_path / "in.csv"
    csv.write_text('text,id\nplain,1\n"Hello" she said,2\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"in.csv: line 3: text follows a closing quote; a quoted "
                       "field must end"):
        read_texts(csv, "text")
    texts = ['"Hello" she said', 'a "b" c', "tab\there", '"', "x"]
    for sep, name in (("\t", "ok.tsv"), (",", "ok.csv")):
        pd.DataFrame({"text": texts}).to_csv(tmp_path / name, sep=sep, index=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = read_texts(tmp_path / name, "text")
        assert got == texts


def test_embed_refuses_to_write_over_its_input(capsys, tmp_path, moe):
    src = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_parquet(src)
    before = src.read_bytes()
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "." / "t.parquet", "--model", moe,
                       "--no-cache")
    assert_one_line_error(code, err, 2, "output is the input file", "name another output")
    assert src.read_bytes() == before
    # nor over its cache (the output replaced the SQLite file, exit 0, the cache gone)
    cache = tmp_path / "c.npy"
    cache.write_bytes(b"")
    code, _, err = run(capsys, "embed", src, "-o", cache, "--model", moe, "--cache", cache)
    assert_one_line_error(code, err, 2, "output is the cache file", "name another output")


def test_a_cache_folder_that_cannot_be_made_names_the_ways_out(capsys, tmp_path, moe):
    src = tmp_path / "in.txt"
    src.write_text("a\n", encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe,
                       "--cache", blocker / "sub" / "c.sqlite")
    assert_one_line_error(code, err, 2, "cannot create the cache folder", "--no-cache",
                          "$SKMOE_CACHE")


def test_embed_never_centres_its_file(capsys, tmp_path, moe, monkeypatch):
    """The file is uncentred by the option, not because the command happens to fit on fewer
    texts than the centre needs: let one text teach a centre and the file stays the same."""
    import skmoe.estimator
    import skmoe.postprocessing

    for module in (skmoe.estimator, skmoe.postprocessing):
        monkeypatch.setattr(module, "MIN_CENTER_ROWS", 1)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    dst = tmp_path / "out.npy"
    code, _, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--no-cache", "-q",
                       "--normalize", "l2")
    assert code == 0, err
    want = MoEEmbeddingTransformer(moe, normalize="l2", center=False).fit([]).transform(TEXTS)
    np.testing.assert_allclose(np.load(dst), want, atol=1e-6)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_embed_tables_to_parquet(capsys, tmp_path, moe, fmt):
    frame = pd.DataFrame({"id": range(len(TEXTS)), "body": TEXTS})
    src = tmp_path / f"in.{fmt}"
    if fmt in ("csv", "tsv"):
        frame.to_csv(src, sep="\t" if fmt == "tsv" else ",", index=False)
    elif fmt == "jsonl":
        frame.to_json(src, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(src)
    dst = tmp_path / "out.parquet"
    code, _, err = run(capsys, "embed", src, "-o", dst, "--column", "body", "--model", moe,
                       "--truncate-dim", 32, "--cache", tmp_path / "c.sqlite", "-q")
    assert code == 0, err
    assert "1 empty text(s)" in err and "(first at row 2) are embedded as the empty string" in err
    table = pd.read_parquet(dst)
    assert list(table.columns) == ["text", "embedding"]
    assert list(table["text"]) == TEXTS  # "" stays an empty text, not a missing value
    vectors = np.stack(table["embedding"].to_numpy())
    want = MoEEmbeddingTransformer(moe, truncate_dim=32, normalize=UNCENTRED_NORMALIZE).fit([]).transform(TEXTS)
    np.testing.assert_allclose(vectors, want, atol=1e-6)
    # where the vectors come from travels with them (the file said nothing)
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(dst).metadata[b"skmoe"])
    assert meta["model"] == str(moe) and meta["prompt"] == "classification: "
    assert meta["truncate_dim"] == 32 and meta["normalize"] == UNCENTRED_NORMALIZE
    assert meta["centred"] is False and len(meta["fingerprint"]) > 16


def test_embed_keeps_a_tables_ids_for_joining_back(capsys, tmp_path, moe):
    """Only the text column reached the output: joining back relied on row order."""
    src = tmp_path / "in.csv"
    pd.DataFrame({"doc": ["d7", "d3", "d9"], "text": ["one", "two", "one"]}).to_csv(src, index=False)
    dst = tmp_path / "out.parquet"
    code, _, err = run(capsys, "embed", src, "-o", dst, "--id-column", "doc", "--model", moe,
                       "--no-cache", "-q")
    assert code == 0, err
    table = pd.read_parquet(dst)
    assert list(table.columns) == ["doc", "text", "embedding"]
    assert list(table["doc"]) == ["d7", "d3", "d9"] and list(table["text"]) == ["one", "two", "one"]
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--id-column", "doc",
                       "--model", moe, "--no-cache")
    assert_one_line_error(code, err, 2, "--id-column", "needs Parquet output")
    code, _, err = run(capsys, "embed", src, "-o", dst, "--id-column", "nope", "--model", moe,
                       "--no-cache")
    assert_one_line_error(code, err, 2, "id column 'nope' not found", "doc, text")
    pd.DataFrame({"doc": ["a", None], "text": ["x", "y"]}).to_parquet(tmp_path / "m.parquet")
    code, _, err = run(capsys, "embed", tmp_path / "m.parquet", "-o", dst, "--id-column", "doc",
                       "--model", moe, "--no-cache")
    assert_one_line_error(code, err, 2, "id column 'doc': missing id at row 1")
    txt = tmp_path / "in.txt"
    txt.write_text("a\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", txt, "-o", dst, "--id-column", "doc", "--model", moe,
                       "--no-cache")
    assert_one_line_error(code, err, 2, "--id-column does not apply to a text file")
    # the output's own column names: an "internal error, a bug" after loading the model (audit)
    for name in ("text", "embedding"):
        code, _, err = run(capsys, "embed", src, "-o", dst, "--id-column", name, "--model",
                           "/no/such/model", "--no-cache")  # refused before the model is sought
        assert_one_line_error(code, err, 2, f"--id-column '{name}'", "rename that column")


def _stopped_after_the_first_chunk(tmp_path, monkeypatch, stop):
    """Ten texts in chunks of 4, ``stop()`` called when the second chunk starts; returns the
    input, output and cache paths, the texts, the call log and the real ``Embedder._embed``."""
    texts = [f"sentence number {i}" for i in range(10)]
    src, dst, cache = tmp_path / "in.txt", tmp_path / "out.npy", tmp_path / "c.sqlite"
    src.write_text("\n".join(texts), encoding="utf-8")
    monkeypatch.setattr(cli, "EMBED_CHUNK", 4)
    real_embed = embedding_module.Embedder._embed
    calls = []

    def stopping(self, X, tick, *rest):
        calls.append(len(X))
        if len(calls) == 2:  # after the first chunk
            stop()
        return real_embed(self, X, tick, *rest)

    monkeypatch.setattr(embedding_module.Embedder, "_embed", stopping)
    return src, dst, cache, texts, calls, real_embed


def test_sigterm_unwinds_like_ctrl_c(capsys, tmp_path, moe, monkeypatch):
    """SIGTERM (timeout, SLURM, Kubernetes) ended the run with no message and left a full-size
    OUTPUT.partial whose missing rows read back as zeros."""
    import os
    import signal

    src, dst, cache, *_ = _stopped_after_the_first_chunk(
        tmp_path, monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--cache", cache, "-q")
    assert code == 143 and "skmoe: terminated (finished chunks are in the cache" in err
    assert not dst.exists() and not list(tmp_path.glob("*.partial"))
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the command's only


def test_embed_is_resumable_through_the_cache(capsys, tmp_path, moe, monkeypatch):
    """Interrupted after the first chunk: nothing half-written; the rerun computes only the rest;
    a third run computes nothing."""
    def interrupt():
        raise KeyboardInterrupt

    src, dst, cache, texts, calls, real_embed = _stopped_after_the_first_chunk(
        tmp_path, monkeypatch, interrupt)
    code, _, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--cache", cache, "-q")
    assert code == 130 and "rerun to resume" in err
    assert not dst.exists() and not list(tmp_path.glob("*.partial"))
    np.save(dst, np.zeros((1, 1)))  # an earlier run's file: kept on interruption, and said so
    calls.clear()  # without a cache there is nothing to resume, and the message says so
    code, _, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--no-cache", "-q")
    assert code == 130 and "no cache: what was computed is lost" in err and "resume" not in err
    assert "exists (an earlier run's): it is replaced once every row is written" in err
    assert np.load(dst).shape == (1, 1)
    dst.unlink()

    monkeypatch.setattr(embedding_module.Embedder, "_embed", real_embed)
    monkeypatch.setattr(embedding_module, "Engine", _CountingEngine)
    _CountingEngine.texts = []
    code, _, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--cache", cache, "-q")
    assert code == 0, err
    assert _CountingEngine.texts == texts[4:]  # the first chunk came from the cache
    assert "cache: 4 found, 6 computed" in err

    _CountingEngine.texts = []
    code, _, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--cache", cache, "-q")
    assert code == 0 and _CountingEngine.texts == []
    assert "cache: 10 found, 0 computed" in err
    np.testing.assert_allclose(np.load(dst), MoEEmbeddingTransformer(moe, normalize=UNCENTRED_NORMALIZE).fit([]).transform(texts),
                               atol=1e-6)


def _embed_cached(capsys, src, out, moe, cache):
    return run(capsys, "embed", src, "-o", out, "--model", moe, "--cache", cache, "-q")


def _cached_then_a_new_process(capsys, tmp_path, moe, monkeypatch, texts, load):
    """Embed ``texts`` into a fresh cache (to ``cold.npy``), then forget every loaded model (a new
    process) and load weights through ``load`` from then on; returns the input and cache files."""
    src, cache = tmp_path / "in.txt", tmp_path / "c.sqlite"
    src.write_text("\n".join(texts), encoding="utf-8")
    code, _, err = _embed_cached(capsys, src, tmp_path / "cold.npy", moe, cache)
    assert code == 0, err
    registry.clear()
    monkeypatch.setattr(registry, "load_encoder", load)
    return src, cache


def test_a_fully_cached_embed_never_loads_the_model(capsys, tmp_path, moe, monkeypatch):
    """A warm ``skmoe embed`` (a new process: nothing loaded) reads the cache only; a text the
    cache lacks loads the weights, once."""
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    real_load = registry.load_encoder
    src, cache = _cached_then_a_new_process(capsys, tmp_path, moe, monkeypatch, TEXTS, no_load)
    code, _, err = _embed_cached(capsys, src, tmp_path / "warm.npy", moe, cache)
    assert code == 0, err
    assert "loading model" not in err and "weights not loaded" in err
    assert f"cache: {len(set(TEXTS))} found, 0 computed" in err  # one text twice
    cold = np.load(tmp_path / "cold.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "warm.npy"), cold)
    monkeypatch.setattr(registry, "load_encoder", real_load)
    src.write_text("\n".join(TEXTS + ["a text not cached yet"]), encoding="utf-8")
    code, _, err = _embed_cached(capsys, src, tmp_path / "more.npy", moe, cache)
    assert code == 0, err
    assert err.count("loading model") == 1 and "1 computed" in err
    np.testing.assert_array_equal(np.load(tmp_path / "more.npy")[:-1], cold)


def test_loading_the_model_late_with_options_it_refuses_is_one_line_exit_1(capsys, tmp_path, moe,
                                                                           monkeypatch):
    """Weights that load only at the first uncached text still fail as a model error, not a bug."""
    def refuse(*args, **kwargs):
        raise ValueError("Precision 'int8' is not available on this device")

    src, cache = _cached_then_a_new_process(capsys, tmp_path, moe, monkeypatch, ["hello"], refuse)
    src.write_text("a text not cached\n", encoding="utf-8")
    code, _, err = _embed_cached(capsys, src, tmp_path / "b.npy", moe, cache)
    assert_one_line_error(code, err, 1, "cannot use", "not available on this device", "--debug")
    assert "internal error" not in err


def test_a_token_limit_the_prompt_fills_is_a_model_option_error(capsys, tmp_path, moe):
    """--max-length below prompt + special tokens was reported as an internal bug."""
    src = tmp_path / "in.txt"
    src.write_text("hello there\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe,
                       "--prompt", "query: ", "--max-length", "3", "--no-cache", "-q")
    assert_one_line_error(code, err, 1, "max_length=3 leaves no room for text")
    assert "internal error" not in err


#: Input files a user may get wrong: case -> (file name, content, what the error must say).
BAD_INPUT_FILES = {
    "utf8_txt": ("bad.txt", b"ok\n\xff\xfe broken\n", ["not valid UTF-8"]),
    "utf8_csv": ("bad.csv", b"text\n\xe9t\xe9\n", ["not valid UTF-8"]),
    "empty": ("empty.txt", b"", ["no texts in"]),
    "extension": ("in.docx", b"x", ["cannot tell the format", "--input-format"]),
    "bad_parquet": ("bad.parquet", b"this is not parquet", ["cannot read", "as parquet"]),
    "null_text": ("in.jsonl", b'{"text": "a"}\n{"text": null}\n',
                  ["column 'text'", "Missing text at row 1"]),
    "numbers": ("in.jsonl", b'{"text": "a"}\n{"text": 3}\n', ["row 1", "int"]),
    "ragged_csv": ("ragged.csv", b"text,label\nfine,1\ntoo,many,fields,here\n",
                   ["ragged.csv: line 3 has 4 fields, the header 2"]),
    # one field more than the header on the first row: pandas took column 1 for an index and
    # shifted every text (exit 0, wrong texts); now refused with the line
    "long_first_row": ("long.csv", b"text,x\n1,2,3\nq,4\n",
                       ["long.csv: line 2 has 3 fields, the header 2", "quote the fields"]),
    "zst_txt": ("in.txt.zst", b"\x28\xb5\x2f\xfd", ["reading .zst needs the zstandard package"]),
}


@pytest.mark.parametrize("case", ["missing", "folder", "column", "several_columns",
                                  *BAD_INPUT_FILES, "no_out_dir", "out_ext", "column_on_txt",
                                  "parquet_column", "device_unknown", "device_absent",
                                  "format_mismatch"])
def test_embed_user_mistakes(capsys, tmp_path, moe, case):
    """Each user mistake: exit 2, one line naming the problem, no traceback, no model load."""
    src, dst = tmp_path / "in.csv", tmp_path / "out.npy"
    pd.DataFrame({"id": [1, 2], "text": ["a", "b"], "other": ["c", "d"]}).to_csv(src, index=False)
    args, fragments = [src], []
    if case in BAD_INPUT_FILES:
        name, content, fragments = BAD_INPUT_FILES[case]
        bad = tmp_path / name
        bad.write_bytes(content)
        args = [bad]
    elif case == "missing":
        args, fragments = [tmp_path / "nope.txt"], ["input file not found", "nope.txt"]
    elif case == "folder":
        args, fragments = [tmp_path], ["is a folder"]
    elif case == "column":
        args, fragments = [src, "--column", "body"], ["column 'body' not found", "id, text, other"]
    elif case == "several_columns":
        src2 = tmp_path / "two.csv"
        pd.DataFrame({"a": ["x"], "b": ["y"]}).to_csv(src2, index=False)
        args, fragments = [src2], ["several columns", "--column"]
    elif case == "no_out_dir":
        dst = tmp_path / "nowhere" / "out.npy"
        fragments = ["output folder does not exist"]
    elif case == "out_ext":
        dst = tmp_path / "out.bin"
        fragments = ["cannot tell the output format", "--format"]
    elif case == "column_on_txt":
        txt = tmp_path / "in.txt"
        txt.write_text("a\n")
        args, fragments = [txt, "--column", "text"], ["--column does not apply"]
    elif case == "parquet_column":
        pq = tmp_path / "in.parquet"
        pd.DataFrame({"body": ["a"], "id": [1]}).to_parquet(pq)
        args, fragments = [pq, "--column", "text"], ["column 'text' not found", "body, id"]
    elif case == "device_unknown":
        args, fragments = [src, "--column", "text", "--device", "foo"], ["Unknown device 'foo'"]
    elif case == "device_absent":  # no such GPU here, whether torch has CUDA or not
        args, fragments = [src, "--column", "text", "--device", "cuda:99"], ["device='cuda:99'"]
    elif case == "format_mismatch":
        args, fragments = [src, "--column", "text", "--format", "parquet"], [
            "--format parquet does not match the extension of", "out.parquet"]
    loads = dict(registry.LOAD_COUNTS)
    code, _, err = run(capsys, "embed", *args, "-o", dst, "--model", moe, "-q")
    assert_one_line_error(code, err, 2, *fragments)
    assert not dst.exists()
    assert dict(registry.LOAD_COUNTS) == loads  # input is checked before any model work


def test_embed_binary_output(capsys, tmp_path, moe):
    src, dst = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("\n".join(TEXTS), encoding="utf-8")
    code, out, err = run(capsys, "embed", src, "-o", dst, "--model", moe, "--output-dtype",
                         "ubinary", "--no-cache", "-q")
    assert code == 0, err
    bits = np.load(dst)
    assert bits.shape == (len(TEXTS), 8) and bits.dtype == np.uint8  # 64 signs, 8 per byte
    floats = MoEEmbeddingTransformer(moe, normalize=UNCENTRED_NORMALIZE).fit([]).transform(TEXTS)
    np.testing.assert_array_equal(np.unpackbits(bits, axis=1).astype(bool), floats > 0)


def test_demo_user_mistakes(capsys, tmp_path):
    """Checked before any model is looked for (the default model is not on this machine)."""
    code, _, err = run(capsys, "demo", "--languages", "xx_Latn", "--out", tmp_path / "r")
    assert_one_line_error(code, err, 2, "xx_Latn", "eng_Latn")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = run(capsys, "demo", "--out", a_file)
    assert_one_line_error(code, err, 2, "--out must be a folder")


def test_model_errors_exit_1(capsys, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model",
                       tmp_path / "no-such-model")
    assert_one_line_error(code, err, 1, "no-such-model", "neither an existing folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", broken)
    assert code in (1, 2) and "Traceback" not in err
    assert err.rstrip().splitlines()[-1].startswith("skmoe: error:")


# -- info ----------------------------------------------------------------------------------------
def test_info(capsys, moe, nomic_config_path):
    code, out, _ = run(capsys, "info", moe)
    assert code == 0
    assert "MoE layers" in out and "1, 3" in out and "revision           local" in out
    code, out, _ = run(capsys, "info", nomic_config_path)
    assert code == 0 and "475,292,928" in out and "305,423,616" in out
    code, out, _ = run(capsys, "info", moe, "--json")
    info = json.loads(out)
    assert info["experts"] == 8 and info["moe_layers"] == [1, 3] and info["weights"] is True


def test_info_errors(capsys, tmp_path):
    code, _, err = run(capsys, "info", tmp_path / "missing")
    assert_one_line_error(code, err, 1, "missing")
    # HF_HUB_OFFLINE=1 in the tests: a hub id that is not cached fails at once, with the remedy
    code, _, err = run(capsys, "info", "nobody/no-such-model")
    assert_one_line_error(code, err, 1, "nobody/no-such-model", "--model FOLDER")
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    code, _, err = run(capsys, "info", notes)
    assert_one_line_error(code, err, 2, "notes.txt is not a JSON model config")


# -- cache ---------------------------------------------------------------------------------------
def test_a_closed_pipe_ends_quietly(capsys, tmp_path, monkeypatch):
    """`skmoe cache stats | head -3` printed "skmoe: error: [Errno 32] Broken pipe"."""
    from skmoe.cache import EmbeddingCache

    cache = tmp_path / "c.sqlite"
    EmbeddingCache(str(cache)).put_many("ns", ["a"], np.ones((1, 4), np.float32))

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_print_stats", closed)
    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)  # pytest's captured stdout stays
    code, _, err = run(capsys, "cache", "stats", cache)
    assert code == 0 and err == ""


def test_cache_stats_and_clear(capsys, tmp_path, moe):
    src, cache = tmp_path / "in.txt", tmp_path / "c.sqlite"
    src.write_text("\n".join(TEXTS), encoding="utf-8")
    assert run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe, "--cache", cache,
               "-q")[0] == 0
    code, out, _ = run(capsys, "cache", "stats", cache)
    distinct = len(set(TEXTS))
    assert code == 0 and f"entries     {distinct}" in out and "64-d" in out
    # each namespace says which model, prompt, length and precision it holds
    assert f"{moe} @ local, prompt 'classification: ', max_length 512, float32" in out
    assert run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe, "--cache", cache,
               "--prompt", "query: ", "-q")[0] == 0
    code, out, _ = run(capsys, "cache", "stats", cache)
    assert "namespaces  2" in out and "prompt 'query: '" in out
    assert "long texts in windows" not in out
    assert run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe, "--cache", cache,
               "--prompt", "query: ", "--long-text", "chunk", "--chunk-overlap", "16",
               "-q")[0] == 0  # one namespace more, told apart from the truncating one
    code, out, _ = run(capsys, "cache", "stats", cache)
    assert "max_length 512, long texts in windows overlapping 16 tokens, float32" in out
    chunk_ns = next(line.split()[0] for line in out.splitlines() if "windows" in line)
    assert run(capsys, "cache", "clear", cache, "--namespace", chunk_ns[:8])[0] == 0
    query_ns = next(line.split()[0] for line in out.splitlines() if "'query: '" in line)
    code, out, _ = run(capsys, "cache", "clear", cache, "--namespace", query_ns[:6])
    assert code == 0 and f"cleared {distinct} entries (namespace {query_ns})" in out
    code, out, _ = run(capsys, "cache", "stats", cache)
    assert "namespaces  1" in out and "'query: '" not in out
    code, _, err = run(capsys, "cache", "clear", cache, "--namespace", "zzzz")
    assert_one_line_error(code, err, 2, "no namespace starts with 'zzzz'")
    code, out, _ = run(capsys, "cache", "clear", cache)
    assert code == 0 and f"cleared {distinct} entries (all namespaces)" in out
    code, out, _ = run(capsys, "cache", "stats", cache)
    assert code == 0 and "entries     0" in out
    # --cache as in every other command (the positional path is kept as an alias)
    code, out, _ = run(capsys, "cache", "stats", "--cache", cache)
    assert code == 0 and "entries     0" in out
    code, _, err = run(capsys, "cache", "stats", "--cache", cache, tmp_path / "other.sqlite")
    assert_one_line_error(code, err, 2, "two cache files given")


def test_cache_default_path_and_errors(capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "cache", "stats")
    assert_one_line_error(code, err, 2, "no cache file at", "default-cache.sqlite")
    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello, I am not a database")
    code, _, err = run(capsys, "cache", "clear", not_db)
    assert_one_line_error(code, err, 2, "not an skmoe cache")
    assert not_db.read_text() == "hello, I am not a database"
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    code, _, err = run(capsys, "cache", "stats", empty)
    assert_one_line_error(code, err, 2, "is an empty file, not an skmoe cache")
    assert empty.stat().st_size == 0  # a read-only command leaves the file alone


def test_embed_with_an_unusable_cache_says_it_did_not_use_it(capsys, tmp_path, moe):
    """A damaged cache: one warning, then no line claiming the cache was used (the run said
    "(cache: X)" and "cache: 0 found, N computed (X)" after "continuing without the cache")."""
    src, bad = tmp_path / "in.txt", tmp_path / "c.sqlite"
    src.write_text("one\ntwo\n", encoding="utf-8")
    bad.write_text("text,label\nnot,a database\n")
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", moe,
                       "--cache", bad)
    assert code == 0, err
    assert err.count("continuing without the cache") == 1
    assert f"(cache {bad} unusable, see the warning" in err and "found" not in err
    assert f"cache: not used ({bad}, reading and writing: the file is not an SQLite file" in err
    assert "delete" not in err  # someone's file (a typo in --cache), not a damaged cache


def test_an_unknown_prompt_name_names_the_cli_option(capsys, tmp_path, minilm_path):
    src = tmp_path / "in.txt"
    src.write_text("a text\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", src, "-o", tmp_path / "o.npy", "--model", minilm_path,
                       "--no-cache", "-q")
    assert_one_line_error(code, err, 2, "Unknown prompt_name 'classification'", "--prompt PREFIX")
    assert "prompt=" not in err


# -- user mistakes vs. bugs ----------------------------------------------------------------------
def _probe_table(tmp_path, rows_per_topic=6, **changes):
    data = load_sib200_sample(languages=["eng_Latn", "fra_Latn"])
    data = data.groupby(["language", "split", "category"]).head(rows_per_topic).reset_index(drop=True)
    for column, (row, value) in changes.items():
        data.loc[row, column] = value
    path = tmp_path / "t.csv"
    data[["text", "category", "language", "split"]].to_csv(path, index=False)
    return path, ["--label-column", "category", "--split-column", "split", "--out",
                  tmp_path / "rep", "--map", "none", "--shots", 2, "--seeds", 2, "-q"]


def test_the_report_is_centred_on_the_training_texts_as_in_python(capsys, tmp_path, moe):
    """The CLI fitted its transformer on one text (to check the model before any work) and
    handed it to build_report as it was: one text learns no centre, so every CLI report, the
    demo's too, ran on uncentred vectors (e5-small: fra 0.632 where Python's report says
    0.664). It is the Python API's report, and says how its vectors were made."""
    from skmoe.report import build_report

    path, options = _probe_table(tmp_path)
    code, _, err = run(capsys, "probe", path, *options, "--model", moe, "--no-cache")
    assert code == 0, err
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| vectors | centred on the mean of the training texts, L2 length 1.25 |" in report
    data = pd.read_csv(path)
    build_report(MoEEmbeddingTransformer(moe), data, tmp_path / "py", label_column="category",
                 split_column="split", shots=2, seeds=2, umap=False, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rep" / "probe_per_language.csv"),
                                  pd.read_csv(tmp_path / "py" / "probe_per_language.csv"))


def test_a_cached_rerun_says_every_text_came_from_the_cache(capsys, tmp_path, moe):
    """The count of cached texts began after the transformer was fitted on the training texts:
    a rerun read all 1,344 texts from the cache and the report said 448 (the test texts)."""
    path, options = _probe_table(tmp_path)
    options += ["--model", moe, "--cache", tmp_path / "c.sqlite"]
    for expected in ("(0 from the cache)", "(168 from the cache)"):
        code, _, err = run(capsys, "probe", path, *options)
        assert code == 0, err
        report = (tmp_path / "rep" / "report.md").read_text()
        assert "168 distinct" in report and expected in report, report[:800]


@pytest.mark.parametrize("exc", [ValueError("inner shapes differ"), KeyError("column_x")])
def test_an_internal_error_is_a_bug_with_a_hint_not_a_user_mistake(capsys, tmp_path, moe,
                                                                    monkeypatch, exc):
    """A ValueError/KeyError raised inside the computation (here: the probe) is not the user's
    mistake: exit 1, one line that says so and how to see the traceback."""
    import skmoe.report as report

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(report, "probe_report", broken)
    path, options = _probe_table(tmp_path)
    code, _, err = run(capsys, "probe", path, *options, "--model", moe, "--no-cache")
    assert_one_line_error(code, err, 1, "internal error, a bug in skmoe",
                          type(exc).__name__, "rerun with --debug")
    for debug in (["--debug"], []):  # the flag after the command, or the environment variable
        if not debug:
            monkeypatch.setenv("SKMOE_DEBUG", "1")
        code, _, err = run(capsys, "probe", path, *options, "--model", moe, "--no-cache", *debug)
        assert code == 1 and "Traceback (most recent call last)" in err and "in broken" in err
        assert err.rstrip().splitlines()[-1].startswith("skmoe: error: internal error")
        assert "rerun with --debug" not in err


@pytest.mark.parametrize("exc", [
    RuntimeError("unable to mmap 470045872 bytes from file <model.safetensors>: Cannot allocate "
                 "memory (12)"),
    MemoryError("out of memory on cpu embedding one text of 2048 tokens"),
    # CUDA's, on one text (the engine raises it as it is): was called "internal error"
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                           "capacity of 79.10 GiB of which 1.06 GiB is free."),
])
def test_running_out_of_memory_is_the_machine_not_a_bug(capsys, tmp_path, moe, monkeypatch,
                                                        exc):
    """torch's allocator fails as a RuntimeError (mapping the weights, or a batch): the CLI said
    "internal error, a bug in skmoe". It is the machine's limit: exit 1, its own words."""
    import skmoe.report as report

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(report, "probe_report", broken)
    path, options = _probe_table(tmp_path)
    code, _, err = run(capsys, "probe", path, *options, "--model", moe, "--no-cache")
    assert code == 1 and ("allocate memory" in err or "out of memory" in err), err
    assert "internal error" not in err and "bug" not in err


def test_debug_flag_before_the_command_and_user_mistakes_stay_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "--debug", "embed", tmp_path / "nope.txt", "-o", tmp_path / "o.npy")
    assert code == 2 and "Traceback" in err and "input file not found" in err.splitlines()[-1]


def test_probe_table_mistakes_are_named_before_the_model_loads(capsys, tmp_path, monkeypatch):
    def no_model(*args):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(cli_report, "load_model", no_model)
    path, options = _probe_table(tmp_path, split=(3, "tset"))
    code, _, err = run(capsys, "probe", path, *options)
    assert_one_line_error(code, err, 2, "'tset' (1 rows); first at row 3", str(path))
    path, options = _probe_table(tmp_path, category=(150, "weather"))  # a fra_Latn test row
    code, _, err = run(capsys, "probe", path, *options)
    assert_one_line_error(code, err, 2, "test label(s) 'weather'", "never appear in the training")
    # a table filtered with --languages names rows as they are numbered in the file too
    path, options = _probe_table(tmp_path, category=(150, ""))
    code, _, err = run(capsys, "probe", path, *options, "--languages", "fra_Latn")
    assert_one_line_error(code, err, 2, "missing label at row 66 (index 150) of column 'category'")
    js = tmp_path / "mixed.jsonl"
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else 1, "language": "en"} for i in range(8)]
    js.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, _, err = run(capsys, "probe", js, "--out", tmp_path / "rep")
    assert_one_line_error(code, err, 2, "mix several kinds of value", "str ('a')", "number (1)")


def test_probe_warns_about_empty_texts_naming_the_row(capsys, tmp_path, moe):
    path, options = _probe_table(tmp_path, rows_per_topic=4, text=(5, " "))
    code, _, err = run(capsys, "probe", path, *options, "--model", moe, "--no-cache")
    assert code == 0, err
    assert f"warning: 1 empty text(s) in {path} (first at row 5)" in err
    path, options = _probe_table(tmp_path, rows_per_topic=4, text=(60, ""))  # a fra_Latn row
    code, _, err = run(capsys, "probe", path, *options, "--model", moe, "--no-cache",
                       "--languages", "fra_Latn", "--source-language", "fra_Latn")
    assert code == 0, err
    assert f"warning: 1 empty text(s) in {path} (first at row 60)" in err


def test_the_pca_map_is_gone(capsys, tmp_path):
    code, _, err = run(capsys, "demo", "--map", "pca", "--out", tmp_path / "r")
    assert code == 2 and "invalid choice: 'pca'" in err


def test_the_cli_names_the_packages_default_model():
    from skmoe.encoder import DEFAULT_MODEL

    assert cli.DEFAULT_MODEL is DEFAULT_MODEL
    assert "DEFAULT_MODEL =" not in (REPO / "skmoe" / "cli.py").read_text()


# -- every sub-command: exit 2 for a user mistake, exit 1 and a hint for a bug ------------------
def _commands(parser=None, prefix=()):
    """Every runnable command of the parser (``("cache", "stats")`` for nested ones)."""
    import argparse

    parser = parser or cli.build_parser()
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name)) or [(*prefix, name)]
    return found


COMMANDS = _commands()


def _a_cache_file(tmp_path):
    from skmoe.cache import EmbeddingCache

    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).put_many("ns", ["a"], np.ones((1, 2), np.float32))
    return path


#: A user mistake that reaches each command's own checks: (arguments, what the error says).
USER_MISTAKES = {
    ("demo",): lambda tmp: (["--out", tmp / "in.txt"], "--out must be a folder"),
    ("probe",): lambda tmp: ([tmp / "nope.csv"], "input file not found"),
    ("embed",): lambda tmp: ([tmp / "nope.txt", "-o", tmp / "o.npy"], "input file not found"),
    ("info",): lambda tmp: ([tmp / "in.txt"], "is not a JSON model config"),
    **{("cache", action): lambda tmp: ([tmp / "in.txt"], "is not an skmoe cache")
       for action in ("stats", "check", "clear")},
}


def test_every_command_has_its_user_mistake_case():
    assert set(USER_MISTAKES) <= set(COMMANDS)
    assert {c[0] for c in COMMANDS} >= {"demo", "probe", "embed", "info", "cache"}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_ends_a_user_mistake_with_exit_2(capsys, tmp_path, command):
    """An unknown option (argparse) and, where the test knows one, a mistake the command itself
    finds: exit 2, no traceback."""
    code, _, err = run(capsys, *command, "--no-such-option")  # or a missing argument first
    assert code == 2 and " error: " in err.splitlines()[-1] and "Traceback" not in err
    if command in USER_MISTAKES:
        (tmp_path / "in.txt").write_text("not what the command wants\n")
        args, fragment = USER_MISTAKES[command](tmp_path)
        code, _, err = run(capsys, *command, *args)
        assert_one_line_error(code, err, 2, fragment)


def _bug(*args, **kwargs):
    raise ValueError("a bug deep inside")  # the type the commands are most tempted to catch


#: Where a bug is planted in each command's own work (module, attribute), and the arguments that
#: reach it with a valid input.
BUGS = {
    ("demo",): ("skmoe.report", "build_report", lambda tmp, moe: ["--model", moe, "--no-cache",
                                                                  "--out", tmp / "r"]),
    ("probe",): ("skmoe.report", "build_report",
                 lambda tmp, moe: (lambda path, options: [path, *options, "--model", moe,
                                                          "--no-cache"])(*_probe_table(tmp))),
    ("embed",): ("skmoe.embedding", "Embedder.embed_to",
                 lambda tmp, moe: [tmp / "in.txt", "-o", tmp / "o.npy", "--model", moe,
                                   "--no-cache"]),
    ("info",): ("skmoe.encoder.info", "model_info", lambda tmp, moe: [moe]),
    ("quantize",): ("skmoe.engine.quantized_io", "quantize_folder",
                    lambda tmp, moe: [moe, "--dtype", "int8", "-o", tmp / "q"]),
    ("cache", "stats"): ("skmoe.cache", "EmbeddingCache.stats",
                         lambda tmp, moe: [_a_cache_file(tmp)]),
    ("cache", "check"): ("skmoe.cache", "EmbeddingCache.check",
                         lambda tmp, moe: [_a_cache_file(tmp)]),
    ("cache", "clear"): ("skmoe.cache", "EmbeddingCache.clear",
                         lambda tmp, moe: [_a_cache_file(tmp)]),
}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_reports_a_bug_as_exit_1_with_the_debug_hint(capsys, tmp_path, moe,
                                                                    monkeypatch, command):
    """A ValueError raised inside a command's work is not the user's mistake: exit 1, one line
    naming it a bug, and how to see the traceback. Commands the test does not know get the bug
    in their entry point."""
    import importlib

    (tmp_path / "in.txt").write_text("hello\nworld\n")
    if command in BUGS:
        module, attribute, arguments = BUGS[command]
        owner = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        monkeypatch.setattr(owner, name, _bug)
        args = arguments(tmp_path, moe)
    else:
        real = cli.build_parser

        def planted():
            parser = real()
            sub = parser._subparsers._group_actions[0].choices[command[0]]
            for name in command[1:]:
                sub = sub._subparsers._group_actions[0].choices[name]
            sub.set_defaults(func=_bug)
            return parser

        monkeypatch.setattr(cli, "build_parser", planted)
        args = []
    code, _, err = run(capsys, *command, *args)
    assert_one_line_error(code, err, 1, "internal error, a bug in skmoe", "ValueError",
                          "a bug deep inside", "rerun with --debug")


def test_compile_is_a_gpu_option_refused_on_cpu_in_one_line(capsys, tmp_path, tiny_moe_path):
    (tmp_path / "in.txt").write_text("hello\nworld\n")
    code = main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "--model",
                 str(tiny_moe_path), "--no-cache", "--device", "cpu", "--compile"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "compile=True is for GPUs" in err and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()


def test_info_offline_asks_for_config_json_only(capsys):
    """`skmoe info` needs config.json alone, yet offline it asked for the 1.9 GB of weights."""
    code, _, err = run(capsys, "info", "nobody/no-such-model")
    assert_one_line_error(code, err, 1, "config.json is not in the Hugging Face cache",
                          "`hf download nobody/no-such-model config.json --local-dir FOLDER`",
                          "`skmoe info FOLDER`")
    code, _, err = run(capsys, "info", "nobody/no-such-model", "--revision", "v2")
    assert_one_line_error(code, err, 1, "config.json --revision v2 --local-dir FOLDER")


def test_info_offline_uses_a_cached_config_fetched_by_commit(capsys, tmp_path, monkeypatch,
                                                             nomic_config_path):
    """A cache holding the hub id's config.json at a commit no `refs/main` names (downloaded
    with --revision COMMIT) was reported as missing; its one cached config is read."""
    import shutil

    from _hub_cache import COMMIT, fake_hub_cache
    from huggingface_hub import constants

    cache = fake_hub_cache(tmp_path, nomic_config_path.parent, repo="org/cfg")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    (cache / "models--org--cfg" / "refs" / "main").unlink()
    code, out, err = run(capsys, "info", "org/cfg", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["experts"] == 8 and info["weights"] is False and info["name"] == "org/cfg"
    other = cache / "models--org--cfg" / "snapshots" / ("f" * 40)
    shutil.copytree(cache / "models--org--cfg" / "snapshots" / COMMIT, other, symlinks=True)
    code, _, err = run(capsys, "info", "org/cfg")  # two cached commits: which one is not ours to say
    assert_one_line_error(code, err, 1, "not at revision 'main'", COMMIT[:12], "f" * 12)
