"""The ``skmoe`` console script: ``demo``, ``embed``, ``probe``, ``info`` and ``cache``.

It parses, calls the layers below and prints. User mistakes (a bad path, a missing column, an
unreadable file, a model that cannot be found) end with one line ``skmoe: error: ...`` on stderr
and a non-zero exit code, never a traceback; set ``SKMOE_DEBUG=1`` to see the traceback anyway.

Exit codes: 0 success, 1 the model or the cache cannot be used, 2 bad input or options (the same
code argparse uses), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sqlite3
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

DEFAULT_MODEL = "nomic-ai/nomic-embed-text-v2-moe"  # same as skmoe.encoder.DEFAULT_MODEL (no torch import here)
DEFAULT_REPORT_DIR = "skmoe-report"
INPUT_FORMATS = ("txt", "csv", "tsv", "parquet", "jsonl")
OUTPUT_FORMATS = ("npy", "parquet")
# Texts per transform call in ``embed``: the unit of progress and of what one interruption loses
# (finished chunks are in the cache already).
EMBED_CHUNK = 1024
EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 2, 1, 130


class CLIError(Exception):
    """A user mistake, reported as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


# -- defaults -----------------------------------------------------------------------------------
def default_cache_path() -> Path:
    """``$SKMOE_CACHE``, else ``$XDG_CACHE_HOME/skmoe/embeddings.sqlite`` (``~/.cache`` default)."""
    env = os.environ.get("SKMOE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "skmoe" / "embeddings.sqlite"


# -- reading user files -------------------------------------------------------------------------
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def input_format(path: Path, explicit: str | None = None) -> str:
    """The format of an input file from ``--input-format`` or its extension."""
    if explicit:
        return explicit
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    ext = {"pq": "parquet", "ndjson": "jsonl", "text": "txt"}.get(ext, ext)
    if ext not in INPUT_FORMATS:
        raise CLIError(
            f"cannot tell the format of {path} from its extension; use one of "
            f"{', '.join('.' + f for f in INPUT_FORMATS)} or pass --input-format"
        )
    return ext


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise CLIError(f"input file not found: {path}")
    if path.is_dir():
        raise CLIError(f"input is a folder, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise CLIError(f"input file is not readable (permission denied): {path}")


def read_lines(path: Path) -> list[str]:
    """One text per line (UTF-8); empty lines are kept as empty texts so rows match lines."""
    with open(path, encoding="utf-8", newline="") as fh:
        data = fh.read()
    if data.startswith("\ufeff"):  # a UTF-8 byte-order mark is not part of the first text
        data = data[1:]
    lines = data.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_table(path: Path, fmt: str) -> Any:
    """Read a CSV/TSV/Parquet/JSON-lines file into a DataFrame, with one-line errors."""
    import pandas as pd

    _check_readable(path)
    try:
        if fmt in ("csv", "tsv"):
            # Text columns stay text: no NA guessing ("NA", "null" are words), no number parsing.
            return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                               keep_default_na=False, encoding="utf-8")
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise CLIError(f"{path} is empty") from None
    except pd.errors.ParserError as exc:
        raise CLIError(f"cannot parse {path} as {fmt.upper()}: {_one_line(exc)}") from None
    except (KeyError, ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise CLIError(f"cannot read {path} as {fmt}: {_one_line(exc)}") from None
    raise CLIError(f"unsupported table format {fmt!r}")


def pick_column(frame: Any, column: str | None, path: Path, option: str = "--column") -> str:
    """The text column: the one asked for, else ``text``, else the only column."""
    names = [str(c) for c in frame.columns]
    if column is not None:
        if column not in names:
            raise CLIError(f"column {column!r} not found in {path}; columns: {_listing(names)}")
        return column
    if "text" in names:
        return "text"
    if len(names) == 1:
        return names[0]
    raise CLIError(f"{path} has several columns ({_listing(names)}); choose one with {option}")


def column_texts(frame: Any, column: str, path: Path) -> list[str]:
    """A column as validated texts (errors name the file, the column and the row)."""
    from .validation import validate_texts

    try:
        return validate_texts(frame[column].reset_index(drop=True))
    except (TypeError, ValueError) as exc:
        raise CLIError(f"{path}, column {column!r}: {_one_line(exc)}") from None


def read_texts(path: Path, column: str | None = None, fmt: str | None = None) -> list[str]:
    """The texts of an input file: lines of a .txt, or one column of a table."""
    _check_readable(path)
    fmt = input_format(path, fmt)
    if fmt == "txt":
        if column is not None:
            raise CLIError(f"--column does not apply to a text file with one text per line: {path}")
        try:
            texts = read_lines(path)
        except UnicodeDecodeError as exc:
            raise CLIError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        frame = read_table(path, fmt)
        texts = column_texts(frame, pick_column(frame, column, path), path)
    if not texts:
        raise CLIError(f"no texts in {path}")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:  # kept (rows must match the input) but most likely missing data: say so
        where = f"line {blank[0] + 1}" if fmt == "txt" else f"row {blank[0]}"
        warnings.warn(f"{len(blank):,} empty text(s) in {path} (first at {where}) are embedded "
                      "as the empty string", stacklevel=2)
    return texts


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _listing(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _one_line(exc: BaseException | str) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()


# -- the model ----------------------------------------------------------------------------------
def make_transformer(args: argparse.Namespace, *, cache: Path | None, verbose: int = 0) -> Any:
    """A ``MoEEmbeddingTransformer`` from the shared model options."""
    from .estimator import MoEEmbeddingTransformer

    return MoEEmbeddingTransformer(
        args.model,
        revision=args.revision,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
        max_length=args.max_length,
        truncate_dim=args.truncate_dim,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        device=args.device,
        dtype=args.dtype,
        output_dtype=getattr(args, "output_dtype", "float32"),
        normalize=False if getattr(args, "no_normalize", False) else "rms",
        cache=str(cache) if cache is not None else None,
        verbose=verbose,
        local_files_only=args.local_files_only,
    )


def cache_of(args: argparse.Namespace) -> Path | None:
    """The cache file the command uses (None with ``--no-cache``); its folder is created."""
    if args.no_cache:
        return None
    path = Path(args.cache).expanduser() if args.cache else default_cache_path()
    if path.is_dir():
        raise CLIError(f"--cache must be a file, got a folder: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create the cache folder {path.parent}: {exc.strerror}") from None
    return path


def load_model(transformer: Any, texts: Sequence[str] = ()) -> Any:
    """Load (and check) the model before any work starts, so a missing model fails first."""
    from .encoder.sentence import UnknownPromptError

    say(f"loading model {transformer.model} ...")
    try:
        transformer.fit(list(texts[:1]))
    except UnknownPromptError as exc:  # the API's advice names prompt=; here it is an option
        raise CLIError(str(UnknownPromptError(
            exc.name, exc.model, exc.known,
            how='--prompt PREFIX (e5 models: --prompt "query: "; --prompt "" for none)'))) from None
    encoder = transformer.get_encoder()
    kind = "MoE" if encoder.is_moe else "dense"
    say(f"model: {encoder.source.name} ({kind}, {encoder.embedding_dim}-d, revision "
        f"{encoder.source.revision}, prompt {transformer.prompt_!r})")
    return encoder


def say(message: str) -> None:
    """Progress messages go to stderr, so stdout stays for results."""
    print(message, file=sys.stderr, flush=True)


# -- writing embeddings -------------------------------------------------------------------------
class EmbeddingWriter:
    """Write embeddings chunk by chunk to ``.npy`` or Parquet, atomically.

    Rows go to ``OUTPUT.partial`` (a memory-mapped ``.npy``, or Parquet row groups) and the file
    is renamed to ``OUTPUT`` only when every row is written: an interrupted run never leaves a
    truncated file that looks complete.

    ``.npy``: one array ``[n, width]`` in input order. Parquet: one row per text with columns
    ``text`` (string) and ``embedding`` (fixed-size list of ``width`` numbers).
    """

    def __init__(self, path: Path, fmt: str, n_rows: int) -> None:
        self.path, self.fmt, self.n_rows = path, fmt, n_rows
        self.tmp = path.with_name(path.name + ".partial")
        self._array: Any = None
        self._parquet: Any = None
        self._written = 0

    def __enter__(self) -> EmbeddingWriter:
        return self

    def write(self, start: int, texts: Sequence[str], vectors: Any) -> None:
        """Store rows ``start .. start + len(texts)``."""
        import numpy as np

        vectors = np.asarray(vectors)
        if self.fmt == "npy":
            if self._array is None:
                self._array = np.lib.format.open_memmap(
                    self.tmp, mode="w+", dtype=vectors.dtype, shape=(self.n_rows, vectors.shape[1])
                )
            self._array[start : start + len(texts)] = vectors
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
            table = pa.table({
                "text": pa.array(list(texts), type=pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            })
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table)
        self._written += len(texts)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._array is not None:
            self._array.flush()
            del self._array
        if self._parquet is not None:
            self._parquet.close()
        if exc_type is None and self._written == self.n_rows:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()


# -- commands -----------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    """Embed a file of texts into .npy or Parquet, chunk by chunk through the cache."""
    from tqdm.auto import tqdm

    src, dst = Path(args.input).expanduser(), Path(args.output).expanduser()
    fmt = args.format or _output_format(dst)
    implied = _OUTPUT_EXTENSIONS.get(dst.suffix.lower())
    if implied is not None and implied != fmt:
        raise CLIError(f"--format {fmt} does not match the extension of {dst}; name it "
                       f"{dst.with_suffix('.' + fmt).name} or drop --format")
    if not dst.parent.is_dir():
        raise CLIError(f"output folder does not exist: {dst.parent}")
    if dst.is_dir():
        raise CLIError(f"output is a folder, not a file: {dst}")
    texts = read_texts(src, args.column, args.input_format)
    cache = cache_of(args)
    transformer = make_transformer(args, cache=cache)
    load_model(transformer, texts)
    before = transformer.cache_stats()
    say(f"embedding {len(texts):,} texts from {src}"
        + (f" (cache: {cache})" if cache else " (no cache: an interruption loses the work)"))
    with EmbeddingWriter(dst, fmt, len(texts)) as out, tqdm(
        total=len(texts), unit="text", desc="embedding", disable=args.quiet
    ) as bar:
        for start in range(0, len(texts), EMBED_CHUNK):
            chunk = texts[start : start + EMBED_CHUNK]
            out.write(start, chunk, transformer.transform(chunk))
            bar.update(len(chunk))
    if cache is not None:  # counters are per process: report this command's share
        after = transformer.cache_stats()
        say(f"cache: {after.hits - before.hits:,} found, "
            f"{after.misses - before.misses:,} computed ({cache})")
    print(f"wrote {len(texts):,} x {transformer.n_features_out_} "
          f"({transformer.output_dtype}) embeddings to {dst}")
    return 0


_OUTPUT_EXTENSIONS = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}


def _output_format(path: Path) -> str:
    fmt = _OUTPUT_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise CLIError(
            f"cannot tell the output format of {path}; end it in .npy or .parquet or pass --format"
        )
    return fmt


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the bundled SIB-200 sample."""
    from .datasets import load_sib200_sample

    data = load_sib200_sample(languages=args.languages)
    return _run_report(args, data, text="text", label="category", language="language",
                       split="split", ids="index_id", what="the bundled SIB-200 sample")


def cmd_probe(args: argparse.Namespace) -> int:
    """The main job's report on a user table with text, label and language columns."""
    path = Path(args.input).expanduser()
    fmt = input_format(path, args.input_format)
    if fmt == "txt":
        raise CLIError(f"probe needs a table with text, label and language columns, not {path}")
    frame = read_table(path, fmt)
    columns = {"text": args.text_column, "label": args.label_column,
               "language": args.language_column}
    if args.split_column:
        columns["split"] = args.split_column
    if args.id_column:
        columns["id"] = args.id_column
    for role, name in columns.items():
        if name not in frame.columns:
            raise CLIError(f"{role} column {name!r} not found in {path}; columns: "
                           f"{_listing([str(c) for c in frame.columns])}"
                           f" (choose it with --{role}-column)")
    column_texts(frame, args.text_column, path)
    for role in ("label", "language"):
        # CSV/TSV are read without NA guessing, so a missing cell arrives as "".
        name = columns[role]
        missing = (frame[name].isna() | (frame[name].astype(str).str.strip() == "")).to_numpy()
        if missing.any():
            raise CLIError(f"{path}: missing {role} at row {int(missing.argmax())} of column "
                           f"{name!r}; fill or drop such rows first")
    if args.languages:
        frame = _only_languages(frame, args.language_column, args.languages, path)
    return _run_report(args, frame, text=args.text_column, label=args.label_column,
                       language=args.language_column, split=args.split_column,
                       ids=args.id_column, what=str(path))


def _only_languages(frame: Any, column: str, languages: Sequence[str], path: Path) -> Any:
    have = list(dict.fromkeys(frame[column].astype(str)))
    unknown = [lang for lang in languages if lang not in have]
    if unknown:
        raise CLIError(f"language(s) {unknown} not in {path}; it has {_listing(have)}")
    return frame[frame[column].astype(str).isin(languages)]


def _run_report(args: argparse.Namespace, data: Any, *, text: str, label: str, language: str,
                split: str | None, what: str, ids: str | None = None) -> int:
    from .report import ReportError, build_report, prepare_data

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out must be a folder, got a file: {out}")
    try:  # the data's own checks (languages, splits, labels) before minutes of model loading
        prepare_data(data, text_column=text, label_column=label, language_column=language,
                     split_column=split, id_column=ids, source_language=args.source_language)
    except ReportError as exc:
        raise CLIError(str(exc)) from None
    transformer = make_transformer(args, cache=cache_of(args), verbose=0 if args.quiet else 1)
    load_model(transformer, list(data[text][:1]))
    say(f"report on {what}: {len(data):,} rows, "
        f"{_count(data[language].nunique(), 'language')} -> {out}")
    try:
        index = build_report(
            transformer, data, out,
            text_column=text, label_column=label, language_column=language, split_column=split,
            id_column=ids, source_language=args.source_language, shots=args.shots, seeds=args.seeds,
            umap=_map_reducer(args.map), progress=not args.quiet,
        )
    except ReportError as exc:
        raise CLIError(str(exc)) from None
    print(f"report written to {index}")
    return 0


def _map_reducer(kind: str) -> Any:
    if kind == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=0)
    return kind == "umap"


def cmd_info(args: argparse.Namespace) -> int:
    """Config, total/active parameters, MoE layers and revision of a model (no weights loaded)."""
    import json

    from .encoder.info import format_model_info, model_info

    info = model_info(args.model, revision=args.revision, local_files_only=args.local_files_only)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_model_info(info))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``cache stats`` and ``cache clear`` on a cache file."""
    from .cache import EmbeddingCache

    path = Path(args.path).expanduser() if args.path else default_cache_path()
    if not path.is_file():
        where = "" if args.path else " (the default; set another with PATH or $SKMOE_CACHE)"
        raise CLIError(f"no cache file at {path}{where}")
    _check_sqlite(path)
    cache = EmbeddingCache(str(path))
    if args.cache_command == "stats":
        stats = cache.stats()
        print(f"path        {stats.path}")
        print(f"entries     {stats.entries:,}")
        print(f"namespaces  {stats.namespaces}")
        print(f"size        {_human_bytes(stats.bytes)}")
        labels = cache.labels()
        for name, (dim, count) in cache.namespaces().items():
            print(f"  {name[:12]}  {dim:>5}-d  {count:>9,} entries  {_describe(labels.get(name))}")
        return 0
    namespace = _pick_namespace(cache, args.namespace) if args.namespace else None
    deleted = cache.clear(namespace)
    cache.vacuum()
    what = f"namespace {namespace[:12]}" if namespace else "all namespaces"
    print(f"cleared {deleted:,} entries ({what}) from {path} "
          f"(now {_human_bytes(cache.stats().bytes)})")
    return 0


def _describe(labels: dict[str, Any] | None) -> str:
    """One line telling a namespace's model, prompt, length and precision."""
    if not labels:
        return "(no description: written by an older skmoe)"
    return (f"{labels.get('model')} @ {labels.get('revision')}, prompt {labels.get('prompt')!r}, "
            f"max_length {labels.get('max_length')}, {labels.get('precision')}")


def _pick_namespace(cache: Any, prefix: str) -> str:
    names = list(cache.namespaces())
    matches = [n for n in names if n.startswith(prefix)]
    if len(matches) != 1:
        shown = ", ".join(n[:12] for n in names) or "none"
        problem = "no namespace starts" if not matches else f"{len(matches)} namespaces start"
        raise CLIError(f"{problem} with {prefix!r} in {cache.path}; namespaces: {shown} "
                       "(see `skmoe cache stats`)")
    return matches[0]


def _check_sqlite(path: Path) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(16)
    if not magic:  # opening it would turn the file into an (empty) cache
        raise CLIError(f"{path} is an empty file, not an skmoe cache")
    if magic != b"SQLite format 3\x00":
        raise CLIError(f"{path} is not an skmoe cache (not an SQLite file)")


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


# -- the parser ---------------------------------------------------------------------------------
def _model_options(p: argparse.ArgumentParser, *, prompt_default: str | None) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                   help="hub id or local folder with config.json + model.safetensors "
                        f"(default: {DEFAULT_MODEL}, ~1.9 GB from the Hugging Face hub on first use)")
    g.add_argument("--revision", help="hub branch, tag or commit")
    g.add_argument("--local-files-only", action="store_true",
                   help="never download; use a local folder or the Hugging Face cache")
    g.add_argument("--prompt-name", default=prompt_default,
                   help="task prompt from the model's table: query, passage/document, "
                        f"classification, clustering (default: {prompt_default})")
    g.add_argument("--prompt", help='raw prefix, wins over --prompt-name (e5 models: "query: "; "" for none)')
    g.add_argument("--max-length", type=_positive_int, default=512, help="tokens per text (512)")
    g.add_argument("--truncate-dim", type=_positive_int, help="Matryoshka width (e.g. 256)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "int8"),
                   help="compute precision (default: float32 on CPU, bfloat16 on GPU)")
    g.add_argument("--batch-size", type=_positive_int, help="texts per forward pass")
    g.add_argument("--max-tokens-per-batch", type=_positive_int,
                   help="padded tokens per forward pass")
    c = p.add_argument_group("cache")
    c.add_argument("--cache", metavar="PATH",
                   help="SQLite embedding cache; reruns reuse it (default: $SKMOE_CACHE or "
                        "~/.cache/skmoe/embeddings.sqlite)")
    c.add_argument("--no-cache", action="store_true", help="do not read or write a cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _report_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("report")
    g.add_argument("--out", default=DEFAULT_REPORT_DIR, metavar="DIR",
                   help=f"report folder (default: {DEFAULT_REPORT_DIR})")
    g.add_argument("--shots", type=_positive_int, default=8,
                   help="training examples per label for each probe (default: 8)")
    g.add_argument("--seeds", type=_positive_int, default=5,
                   help="seeded few-shot draws per probe (default: 5)")
    g.add_argument("--source-language", default=None,
                   help="language the transfer probes train on (default: English when present)")
    g.add_argument("--languages", nargs="+", metavar="LANG", help="only these languages")
    g.add_argument("--map", choices=("umap", "pca", "none"), default="umap",
                   help="2-D map of the test texts: UMAP (default; the slowest step), PCA, or none")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The ``skmoe`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="skmoe",
        description="Sentence embeddings and multilingual probes with the "
                    "nomic-embed-text-v2-moe Mixture-of-Experts encoder.",
        epilog="Exit codes: 0 ok, 1 model or cache unusable, 2 bad input or options, "
               "130 interrupted. SKMOE_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"skmoe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="the main job: a report folder from the bundled SIB-200 sample",
        description="Embed the bundled SIB-200 sample (8 languages, 7 topics) once, run the "
                    "per-language few-shot probe and the transfer from the source language to "
                    "the others, and write tables (CSV + Markdown), plots (PNG) and "
                    "index.html / report.md to --out.",
    )
    _model_options(demo, prompt_default="classification")
    _report_options(demo)
    demo.set_defaults(func=cmd_demo, split_column="split")

    embed = sub.add_parser(
        "embed", help="embed a file of texts into .npy or Parquet",
        description="Embed INPUT (.txt one text per line; .csv/.tsv/.parquet/.jsonl with "
                    "--column) and write OUTPUT: .npy (float array [n, dim], input order) or "
                    ".parquet (columns 'text' and 'embedding', a fixed-size list per row). "
                    "Vectors go to the cache chunk by chunk, so rerunning an interrupted "
                    "command only computes what is missing.",
    )
    embed.add_argument("input", metavar="INPUT", help="input file")
    embed.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                       help="output file (.npy or .parquet)")
    embed.add_argument("--column", help="text column of a table (default: 'text' or the only one)")
    embed.add_argument("--input-format", choices=INPUT_FORMATS,
                       help="input format when the extension does not tell")
    embed.add_argument("--format", choices=OUTPUT_FORMATS,
                       help="output format when the extension does not tell")
    embed.add_argument("--output-dtype", default="float32",
                       choices=("float32", "float16", "binary", "ubinary"),
                       help="stored precision (binary: sign bits packed 8 per byte)")
    embed.add_argument("--no-normalize", action="store_true", help="keep raw pooled vectors")
    _model_options(embed, prompt_default="classification")
    embed.set_defaults(func=cmd_embed)

    probe = sub.add_parser(
        "probe", help="the demo's report on your own labelled multilingual table",
        description="The report of `skmoe demo` on INPUT (.csv/.tsv/.parquet/.jsonl) with "
                    "text, label and language columns. With --split-column (values 'train' and "
                    "'test') the split is yours; otherwise a seeded third, stratified by label, "
                    "is held out as the test set: of the sentence ids with --id-column, else of "
                    "each language's rows by position.",
    )
    probe.add_argument("input", metavar="INPUT", help="input table")
    probe.add_argument("--text-column", default="text", help="(default: text)")
    probe.add_argument("--label-column", default="label", help="(default: label)")
    probe.add_argument("--language-column", default="language", help="(default: language)")
    probe.add_argument("--split-column", help="column with 'train' / 'test' values (optional)")
    probe.add_argument("--id-column",
                       help="the id a sentence shares with its translations (e.g. index_id): "
                            "adds bitext retrieval to the report and, without --split-column, "
                            "the hold-out takes whole ids")
    probe.add_argument("--input-format", choices=INPUT_FORMATS[1:],
                       help="input format when the extension does not tell")
    _model_options(probe, prompt_default="classification")
    _report_options(probe)
    probe.set_defaults(func=cmd_probe)

    info = sub.add_parser(
        "info", help="config, total/active parameters, MoE layers and revision of a model",
        description="Describe MODEL (hub id, folder or config.json) from its config alone: "
                    "sizes, experts, MoE layers, total and active parameters; revision and "
                    "weights fingerprint when the weights are present. Loads no weights.",
    )
    info.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL",
                      help=f"hub id, folder or config.json (default: {DEFAULT_MODEL})")
    info.add_argument("--revision", help="hub branch, tag or commit")
    info.add_argument("--local-files-only", action="store_true", help="never download")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    cache = sub.add_parser(
        "cache", help="inspect or clear an embedding cache",
        description="Inspect (stats) or empty (clear) an skmoe embedding cache file.",
    )
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    for name, text in (("stats", "entries, size on disk, and each namespace's model and prompt"),
                       ("clear", "delete every entry (or one namespace's) and shrink the file")):
        p = cache_sub.add_parser(name, help=text, description=f"Cache {name}: {text}.")
        p.add_argument("path", nargs="?", metavar="PATH",
                       help="cache file (default: $SKMOE_CACHE or ~/.cache/skmoe/embeddings.sqlite)")
        if name == "clear":
            p.add_argument("--namespace", metavar="PREFIX",
                           help="only the namespace whose id starts with PREFIX (ids: cache stats)")
        p.set_defaults(func=cmd_cache)
    return parser


# -- entry point --------------------------------------------------------------------------------
def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "the input or the environment is wrong", not "skmoe is"."""
    from .cache import CacheDimensionError, CacheFormatError
    from .encoder.config import UnsupportedConfigError
    from .encoder.loading import CheckpointError, ModelNotAvailableError
    from .estimator import WeightsChangedError

    return (ModelNotAvailableError, CheckpointError, UnsupportedConfigError, WeightsChangedError,
            CacheDimensionError, CacheFormatError)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"skmoe: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skmoe`` command line; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    debug = os.environ.get("SKMOE_DEBUG", "").strip() not in ("", "0")
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    # huggingface_hub logs every retry of an unreachable hub; the final error says it all.
    hub_logger = logging.getLogger("huggingface_hub")
    old_level = hub_logger.level
    if not debug:
        hub_logger.setLevel(logging.ERROR)
    try:
        return args.func(args)
    except CLIError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        say("skmoe: interrupted (finished chunks are in the cache; rerun to resume)")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        code = _classify(exc)
        if code is None:
            raise
        return _fail(_one_line(exc), code)
    finally:
        warnings.showwarning = old_show
        hub_logger.setLevel(old_level)


def _classify(exc: Exception) -> int | None:
    """Exit code of a user-facing exception, None for a bug (which keeps its traceback)."""
    if isinstance(exc, _user_error_types()):
        return EXIT_MODEL
    if isinstance(exc, sqlite3.DatabaseError):
        return EXIT_MODEL
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError,
                        UnicodeDecodeError, ValueError)):
        return EXIT_INPUT
    return None


def _fail(message: str, code: int) -> int:
    print(f"skmoe: error: {_one_line(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
