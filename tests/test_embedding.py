"""The road from texts to vectors (skmoe.embedding): dedupe, cache, hit warnings, destinations."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import skmoe.embedding as embedding_module
from skmoe.cache import EmbeddingCache
from skmoe.embedding import Embedder, EmbeddingWriter, ModelCard
from skmoe.encoder import load_encoder
from skmoe.engine import Engine, TruncationWarning


@pytest.fixture(scope="module")
def encoder(random_moe_xlmr_path: Path):
    return load_encoder(random_moe_xlmr_path, device="cpu")


def _counting(encoder, **kwargs) -> tuple[Embedder, list]:
    loads: list[int] = []

    def load():
        loads.append(1)
        return encoder

    emb = Embedder.for_encoder(encoder, "query: ", **kwargs)
    return Embedder(load, dim=emb.dim, prompt=emb.prompt, max_length=emb.max_length,
                    cache=emb.cache, namespace=emb.namespace, labels=emb.labels), loads


def test_vectors_equal_the_engine_in_input_order_with_each_text_computed_once(encoder, monkeypatch):
    texts = ["b", "a", "b", "c", "a"]
    seen: list[str] = []
    real = Engine.iter_embed_chunks

    def spy(self, chunks, prompt="", **kwargs):
        return real(self, (seen.extend(c) or c for c in chunks), prompt, **kwargs)

    monkeypatch.setattr(Engine, "iter_embed_chunks", spy)
    out = Embedder.for_encoder(encoder, "query: ").embed(texts)
    assert sorted(seen) == ["a", "b", "c"]
    ref = Engine(encoder).embed(texts, "query: ")
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)  # batch-mates differ: 1e-7


def test_chunk_bounds_start_small_off_the_cpu(monkeypatch):
    monkeypatch.setattr(embedding_module, "FIRST_CHUNK", 3)
    bounds = embedding_module.chunk_bounds
    assert bounds(12, 5, "cpu") == [0, 5, 10, 12]
    assert bounds(12, 5, "cuda") == [0, 3, 8, 12]
    assert bounds(3, 5, "cuda") == [0, 3] and bounds(2, 5, "cuda") == [0, 2]
    assert bounds(12, 2, "cuda") == [0, 2, 4, 6, 8, 10, 12]  # chunk_size below FIRST_CHUNK
    assert bounds(0, 5, "cuda") == [0]


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_every_row_lands_in_its_place_across_chunks(encoder, monkeypatch, tmp_path, device_type):
    """Rows of every chunk go back where they belong, also around cached hits, whatever the
    chunk boundaries (the accelerator's small first chunk forced on the CPU encoder)."""
    monkeypatch.setattr(embedding_module, "CHUNK_SIZE", 5)
    monkeypatch.setattr(embedding_module, "FIRST_CHUNK", 3)
    real_bounds = embedding_module.chunk_bounds
    monkeypatch.setattr(embedding_module, "chunk_bounds",
                        lambda n, size, _: real_bounds(n, size, device_type))
    sizes: list[int] = []
    real = Engine.iter_embed_chunks

    def spy(self, chunks, prompt="", **kwargs):
        return real(self, (sizes.append(len(c)) or c for c in chunks), prompt, **kwargs)

    monkeypatch.setattr(Engine, "iter_embed_chunks", spy)
    texts = [f"text number {i}" for i in range(14)]
    emb = Embedder.for_encoder(encoder, "query: ", cache=EmbeddingCache(tmp_path / "c.sqlite"))
    emb.embed(texts[4:6])  # two hits in the middle
    sizes.clear()
    out = emb.embed(texts)
    assert sizes == ([5, 5, 2] if device_type == "cpu" else [3, 5, 4])
    np.testing.assert_allclose(out, Engine(encoder).embed(texts, "query: "), atol=1e-6, rtol=0)


def test_a_fully_cached_call_never_loads_the_model(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    first, loads = _counting(encoder, cache=cache)
    vectors = first.embed(["x", "y"])
    assert loads == [1]
    again, loads = _counting(encoder, cache=cache)
    np.testing.assert_array_equal(again.embed(["y", "x", "y"]), vectors[[1, 0, 1]])
    assert loads == []


def test_each_cut_text_is_named_once_per_process(encoder, tmp_path):
    """A grid search fits and transforms the same texts again and again (25 warnings for a
    2 x 2 grid with 3 folds, and 25 more on its rerun from the cache): a cut text is named by
    the first warning only; a later one names only new cut texts and counts the others."""
    long_texts = [f"{i} " + "word " * 200 for i in range(3)]
    emb, _ = _counting(encoder, cache=EmbeddingCache(tmp_path / "c.sqlite"), max_length=16)
    with pytest.warns(TruncationWarning, match=r"^2 text\(s\) .*\(rows 0, 1, counted from 0\); f"):
        emb.embed(long_texts[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb.embed(long_texts[:2] + ["short"])  # computed again or cached: named before
    with pytest.warns(TruncationWarning, match=r"^1 text\(s\) .*\(row 2, counted from 0\); 2 more "
                                               r"were cut, as warned before; first: 'query: 2 "):
        emb.embed(long_texts)
    other, _ = _counting(encoder, max_length=24)  # another limit: named anew
    with pytest.warns(TruncationWarning, match=r"^3 text\(s\) exceed the maximum length \(24"):
        other.embed(long_texts)


def test_a_stream_warns_once_about_its_cut_texts(encoder, tmp_path):
    """embed_to and skmoe embed warned once per chunk (1,024 rows), each naming its own rows:
    a large file gave a warning per chunk; the docs promise one per call."""
    emb, _ = _counting(encoder, max_length=16)
    texts = [f"{i} " + "word " * 200 if i % 2 == 0 else f"short {i}" for i in range(12)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb.embed_to(tmp_path / "v.npy", texts, chunk_size=3)
    cut = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(cut) == 1, [str(w.message) for w in cut]
    assert str(cut[0].message).startswith(
        "6 text(s) exceed the maximum length (16 tokens) and were truncated (rows 0, 2, 4, 6, "
        "8, ... (6 in all), counted from 0); first: 'query: 0 word")


def test_a_cut_text_raised_as_an_error_is_raised_again(encoder):
    """A text was marked as named before its warning was shown: under a filter that turns the
    warning into an error the first call raised and the same call again gave the cut vectors
    silently (audit)."""
    emb, _ = _counting(encoder, max_length=16)
    long_text = ["7 " + "word " * 200]
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error", TruncationWarning)
            with pytest.raises(TruncationWarning, match="exceed the maximum length"):
                emb.embed(long_text)


def test_cached_hits_warn_about_truncation_without_loading(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    long_text = "word " * 2000
    emb, _ = _counting(encoder, cache=cache, max_length=16)
    with pytest.warns(TruncationWarning, match=r"1 text\(s\) exceed the maximum length \(16 tokens\)"):
        emb.embed([long_text, "short"])
    again, loads = _counting(encoder, cache=cache, max_length=16)
    embedding_module._REPORTED_CUTS.clear()  # as in a new process: this one named it already
    with pytest.warns(TruncationWarning, match=r"1 text\(s\) exceed .*first: 'query: word word"):
        again.embed(["short", long_text])
    assert loads == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.embed(["short"])  # nothing cut, nothing said


def test_one_truncation_warning_per_call_names_the_input_rows(encoder, tmp_path):
    """Cached and computed texts were two warnings (one per engine chunk too), counting
    distinct texts without positions; now one, counting input rows (duplicates too), named."""
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    long1, long2 = "word " * 300, "other " * 300
    emb, _ = _counting(encoder, cache=cache, max_length=16)
    with pytest.warns(TruncationWarning):
        emb.embed([long1])  # cached now
    embedding_module._REPORTED_CUTS.clear()  # as in a later process (each cut named once in one)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb.embed(["ok", long1, "fine", long2, long1])
    cut = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(cut) == 1, [str(w.message) for w in cut]
    assert re.search(r"^3 text\(s\) exceed the maximum length \(16 tokens\) and were truncated "
                     r"\(rows 1, 3, 4, counted from 0\); first: 'query: word word", str(cut[0].message))
    embedding_module._REPORTED_CUTS.clear()
    with pytest.warns(TruncationWarning, match=r"\(rows 1001, 1003, counted from 0\)"):  # streamed: rows count on
        list(emb.iter_embed(["a"] * 1001 + [long2, "b", long1], chunk_size=1000))


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_embed_to_a_file_streams_chunks_atomically(encoder, tmp_path, fmt):
    texts = [f"text {i}" for i in range(11)] + ["text 3"]
    emb = Embedder.for_encoder(encoder, "")
    out = tmp_path / f"v.{fmt}"
    assert emb.embed_to(out, texts, chunk_size=4) == out
    ref = emb.embed(texts)
    if fmt == "npy":
        np.testing.assert_allclose(np.load(out), ref, atol=1e-6, rtol=0)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column("text").to_pylist() == texts
        vectors = np.asarray(table.column("embedding").to_pylist())
        np.testing.assert_allclose(vectors, ref, atol=1e-6, rtol=0)
    assert not list(tmp_path.glob("*.partial"))


def test_embed_to_an_array_applies_the_transform_and_checks_the_shape(encoder):
    texts = ["a", "b", "c"]
    emb = Embedder.for_encoder(encoder, "")
    out = np.zeros((3, 8), dtype=np.float32)
    emb.embed_to(out, texts, transform=lambda v: v[:, :8], chunk_size=2)
    np.testing.assert_allclose(out, emb.embed(texts)[:, :8], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="out has shape"):
        emb.embed_to(np.zeros((2, 8), np.float32), texts, transform=lambda v: v[:, :8])


def test_embed_to_checks_its_destination_before_embedding_anything(encoder, tmp_path,
                                                                   monkeypatch):
    """A missing folder, a folder for a file or an array of the wrong length fail before the
    first chunk is computed (they failed after it: without a cache that work was lost)."""
    emb = Embedder.for_encoder(encoder, "")
    monkeypatch.setattr(Embedder, "_embed", lambda *a: pytest.fail("embedded before checking"))
    with pytest.raises(FileNotFoundError, match="the folder of out does not exist: .*missing"):
        emb.embed_to(tmp_path / "missing" / "v.npy", ["a", "b"])
    with pytest.raises(IsADirectoryError, match="out is a folder"):
        emb.embed_to(tmp_path, ["a", "b"], fmt="npy")
    with pytest.raises(ValueError, match=r"out has shape \(3, 8\), expected 2 rows"):
        emb.embed_to(np.zeros((3, 8), np.float32), ["a", "b"])
    with pytest.raises(ValueError, match="cannot tell the output format .*or pass fmt=npy"):
        emb.embed_to(tmp_path / "v.bin", ["a", "b"])
    with pytest.raises(ValueError, match="fmt=parquet does not match the extension of .*v.npy"):
        emb.embed_to(tmp_path / "v.npy", ["a", "b"], fmt="parquet")  # wrote Parquet into v.npy
    with pytest.raises(ValueError, match="fmt=csv is not a format"):
        emb.embed_to(tmp_path / "v.npy", ["a", "b"], fmt="csv")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_embed_to_with_no_texts_writes_an_empty_file_of_the_right_width(encoder, tmp_path, fmt):
    emb = Embedder.for_encoder(encoder, "")
    out = tmp_path / f"v.{fmt}"
    emb.embed_to(out, [], transform=lambda v: v[:, :8])
    if fmt == "npy":
        got = np.load(out)
        assert got.shape == (0, 8) and got.dtype == np.float32
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.num_rows == 0 and table.column_names == ["text", "embedding"]
    assert not list(tmp_path.glob("*.partial"))


def test_an_interrupted_write_leaves_no_file(tmp_path):
    out = tmp_path / "v.npy"
    with pytest.raises(KeyboardInterrupt), EmbeddingWriter(out, "npy", 4) as writer:
        writer.write(0, ["a", "b"], np.ones((2, 3), np.float32))
        raise KeyboardInterrupt
    assert not out.exists() and not list(tmp_path.iterdir())


def test_writers_of_one_output_keep_apart_and_a_full_disk_is_an_error(tmp_path, monkeypatch):
    """Two runs with one -o shared OUTPUT.partial (SIGBUS, or one run's rows gone behind its
    'wrote' line); a sparse memory map on a full disk killed the process with SIGBUS."""
    import errno

    import skmoe.embedding_files as files

    out = tmp_path / "v.npy"
    with EmbeddingWriter(out, "npy", 2) as a, EmbeddingWriter(out, "npy", 1) as b:
        assert a.tmp != b.tmp and a.tmp.name.startswith("v.npy.") and a.tmp.suffix == ".partial"
        a.write(0, ["x", "y"], np.ones((2, 3), np.float32))
        b.write(0, ["z"], np.zeros((1, 3), np.float32))
    assert np.load(out).shape in ((2, 3), (1, 3)) and not list(tmp_path.glob("*.partial"))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match=r"cannot reserve 200 bytes for .*v2\.npy\..*\.partial: No space"):
        with EmbeddingWriter(tmp_path / "v2.npy", "npy", 2) as w:
            w.write(0, ["x", "y"], np.ones((2, 9), np.float32))
    assert not list(tmp_path.glob("v2*"))
    with pytest.raises(ValueError, match="need Parquet output"):
        EmbeddingWriter(tmp_path / "v4.npy", "npy", 1, columns={"id": [1]})
    with pytest.raises(ValueError, match=r"column 'id': .*one value per row \(2\) needed, got 1"):
        EmbeddingWriter(tmp_path / "v4.parquet", "parquet", 2, columns={"id": [1]})
    with pytest.raises(FileNotFoundError):  # its file removed by someone: not a success
        with EmbeddingWriter(tmp_path / "v3.npy", "parquet", 0) as w:
            w.tmp.unlink()


def test_a_failure_to_finish_removes_the_partial_file_and_names_the_output(tmp_path,
                                                                          monkeypatch):
    """A full disk when the Parquet footer is written (at close) left a partial file of the
    whole output on that full disk, and the error (pyarrow's, numpy's) named no file."""
    import errno

    import pyarrow.parquet as pq

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file")

    out = tmp_path / "v.parquet"
    monkeypatch.setattr(pq.ParquetWriter, "close", full)
    with pytest.raises(OSError, match=r"Error writing bytes to file \(writing .*v\.parquet\)"):
        with EmbeddingWriter(out, "parquet", 2) as writer:
            writer.write(0, ["x", "y"], np.ones((2, 3), np.float32))
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()

    def too_large(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(np.lib.format, "open_memmap", too_large)
    with pytest.raises(OSError, match=r"File too large \(writing .*v\.npy\)") as caught:
        with EmbeddingWriter(tmp_path / "v.npy", "npy", 2) as writer:
            writer.write(0, ["x", "y"], np.ones((2, 3), np.float32))
    assert caught.value.errno == errno.EFBIG and not list(tmp_path.iterdir())


def test_a_killed_runs_partial_file_is_removed_by_the_next_run(tmp_path):
    """A SIGKILLed run's OUTPUT.<...>.partial (the size of the whole output) stayed forever once
    the names were per run; a later run removes those of dead processes on this host."""
    import os
    import subprocess
    import sys

    import skmoe._partial_files as files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "v.npy"
    host = files._HOST
    killed = tmp_path / f"v.npy.{host}.{dead.pid}.abc.partial"
    alive = tmp_path / f"v.npy.{host}.{os.getpid()}.def.partial"
    elsewhere = tmp_path / f"v.npy.otherhost.{dead.pid}.ghi.partial"
    for f in (killed, alive, elsewhere):
        f.write_bytes(b"x")
    with EmbeddingWriter(out, "npy", 1) as w:
        assert w.tmp.name.startswith(f"v.npy.{host}.{os.getpid()}.")
        w.write(0, ["a"], np.ones((1, 2), np.float32))
    assert not killed.exists() and alive.exists() and elsewhere.exists()


def test_progress_bar_counts_rows_and_stays_quiet_when_asked(encoder, capsys, monkeypatch):
    emb = Embedder.for_encoder(encoder, "", verbose=2)
    emb.embed(["a", "b", "a"])
    assert "3/3" in capsys.readouterr().err
    emb.verbose = 1  # short call: the bar waits PROGRESS_DELAY seconds, so nothing shows
    emb.embed(["c", "d"])
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(embedding_module, "PROGRESS_DELAY", 0.0)
    emb.embed(["e", "f"])
    assert "2/2" in capsys.readouterr().err
    emb.verbose = 0
    emb.embed(["g"])
    assert capsys.readouterr().err == ""


def test_model_card_round_trips_through_its_facts(encoder):
    card = ModelCard.of(encoder)
    assert ModelCard.from_facts(encoder.source, card.facts()) == card
    assert card.resolve_prompt("query") == encoder.resolve_prompt("query")
    assert card.embedding_dim == encoder.embedding_dim and card.has_tokenizer


def test_engine_streaming_methods_are_deprecated_but_work(encoder, tmp_path):
    engine = Engine(encoder)
    with pytest.warns(DeprecationWarning, match="skmoe.embedding"):
        chunks = list(engine.iter_embed(["a", "b", "c"], chunk_size=2))
    assert [start for start, _ in chunks] == [0, 2]
    with pytest.warns(DeprecationWarning, match="skmoe.embedding") as caught:
        engine.embed_to(tmp_path / "v.npy", ["a", "b"])
    assert caught[0].filename == __file__  # the caller's line
    assert np.load(tmp_path / "v.npy").shape == (2, encoder.embedding_dim)
    cut = np.ones(3, dtype=bool)
    with pytest.warns(DeprecationWarning, match="skmoe.embedding"):
        batches = list(engine.iter_embed_batches(["a", "b", "c"], cut_out=cut))
    done = np.concatenate([rows for rows, _ in batches])
    vectors = np.concatenate([v for _, v in batches])[np.argsort(done)]
    assert sorted(done) == [0, 1, 2] and not cut.any()
    np.testing.assert_allclose(vectors, engine.embed(["a", "b", "c"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_an_output_file_gets_the_mode_the_umask_gives(tmp_path, fmt, umask):
    """The .partial file came from mkstemp (0600) and the rename kept that mode: under umask 022
    a teammate could not read vectors.npy, while every other file skmoe writes was 0644."""
    import os

    out = tmp_path / f"v.{fmt}"
    old = os.umask(umask)
    try:
        with EmbeddingWriter(out, fmt, 2) as writer:
            writer.write(0, ["a", "b"], np.ones((2, 3), np.float32))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_ids_are_checked_as_one_column_before_any_text_is_embedded(encoder, tmp_path,
                                                                   monkeypatch):
    """Ids were turned into Arrow chunk by chunk: a str id after ints failed with a raw Arrow
    error after every earlier chunk was embedded (and thrown away), as did ints after a first
    chunk of None (schema `null`) or a float after ints (schema `int64`)."""
    import pyarrow.parquet as pq

    emb = Embedder.for_encoder(encoder, "")
    texts = [f"text {i}" for i in range(6)]
    out = tmp_path / "v.parquet"
    with monkeypatch.context() as m:
        m.setattr(Embedder, "_embed", lambda *a: pytest.fail("embedded before checking the ids"))
        with pytest.raises(ValueError, match=r"column 'id': row 4 \('x', a str\) does not fit "
                                             r"the type of the rows before it \(int64\)"):
            emb.embed_to(out, texts, columns={"id": [0, 1, 2, 3, "x", 5]}, chunk_size=2)
        with pytest.raises(ValueError, match=r"column 'id': row 0 \(<object .*\) has no Arrow "
                                             "type"):
            emb.embed_to(out, texts, columns={"id": [object()] * 6}, chunk_size=2)
        import pandas as pd

        frame = pd.DataFrame({"id": range(6), "other": range(6)})
        with pytest.raises(ValueError, match=r"column 'id': .* a DataFrame of shape \(6, 2\) "
                                             r"\(2 columns\); pass a single column"):
            emb.embed_to(out, texts, columns={"id": frame}, chunk_size=2)
    assert not list(tmp_path.iterdir())
    for ids, kind in (([None, None, 2, 3, 4, 5], "int64"), ([0, 1, 2, 3, 4.5, 5], "double"),
                      (np.arange(6), "int64"), (pd.Series(list("abcdef")), "string")):
        emb.embed_to(out, texts, columns={"id": ids}, chunk_size=2)
        table = pq.read_table(out)
        assert str(table.schema.field("id").type).removeprefix("large_") == kind  # pandas 3 str
        assert table.column("id").to_pylist() == [None if v is None else v for v in list(ids)]
    # missing values of pandas and numpy are missing ids (were "does not fit the type"), dtypes kept
    for ids, kind, want in (
            (pd.Series([0, pd.NA, 2, 3, 4, 5], dtype="Int64"), "int64", [0, None, 2, 3, 4, 5]),
            (["a", float("nan"), "c", "d", "e", "f"], "string", ["a", None, "c", "d", "e", "f"]),
            (np.arange(6).astype("datetime64[D]"), "date32[day]", None)):
        emb.embed_to(out, texts, columns={"id": ids}, chunk_size=2)
        column = pq.read_table(out).column("id")
        assert str(column.type) == kind and (want is None or column.to_pylist() == want)
        assert table.column("text").to_pylist() == texts


def test_the_next_chunk_is_prepared_ahead_only_when_there_is_one(encoder, monkeypatch):
    """A worker thread was started for every call, a single-chunk one too (about 0.4 ms of a
    small call's 3.6 ms on a tiny model: a service's every request)."""
    from skmoe.engine import Engine

    asked = []
    real = Engine.iter_embed_chunks

    def spy(self, chunks, prompt="", **kwargs):
        asked.append(kwargs["prefetch"])
        return real(self, chunks, prompt, **kwargs)

    monkeypatch.setattr(Engine, "iter_embed_chunks", spy)
    emb = Embedder.for_encoder(encoder, "")
    one = emb.embed(["a", "b", "c"])
    emb.chunk_size = 2
    two = emb.embed(["d", "e", "f"])
    assert asked == [False, True]
    assert one.shape == two.shape == (3, encoder.embedding_dim)


def test_the_progress_rate_leaves_the_model_load_out(encoder, monkeypatch):
    """The bar started before the model loaded and counted the load as embedding time: a first
    call showed a 5.5-minute ETA for a 15-second job (audit)."""
    import time

    import tqdm.std

    emb = Embedder.for_encoder(encoder, "")
    emb._engine = None  # as a lazy road before its first miss
    emb.load = lambda: (time.sleep(1.5), encoder)[1]  # a slow load
    emb.verbose = 2
    elapsed = []
    real_close = tqdm.std.tqdm.close

    def close(bar):
        elapsed.append(bar.format_dict["elapsed"])
        real_close(bar)

    monkeypatch.setattr(tqdm.std.tqdm, "close", close)
    emb.embed(["a", "b", "c"])
    assert elapsed and elapsed[0] < 1.0  # the 1.5 s load is not in the bar's time
