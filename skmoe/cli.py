"""The ``skmoe`` console script: ``demo``, ``embed``, ``probe``, ``info``, ``cache`` and
``quantize`` (:mod:`skmoe.cli_quantize`).

It parses, calls the layers below and prints; files are read through :mod:`skmoe.io`, the
report's commands live in :mod:`skmoe.cli_report`. User mistakes (a bad path, a missing
column, an unreadable file, a model that cannot be found) end with one line
``skmoe: error: ...`` on stderr and a non-zero exit code, never a traceback. Anything else is a
bug in skmoe: one line too, with exit 1 and a hint to rerun with ``--debug`` (or
``SKMOE_DEBUG=1``), which prints the traceback.

Exit codes: 0 success, 1 the model or the cache cannot be used, or not with these options (or an
internal error), 2 bad input or options (the same code argparse uses), 130 interrupted,
143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._defaults import DEFAULT_MODEL
from ._out_of_memory import is_out_of_memory
from .cli_common import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    MODEL_ERRORS,
    CLIError,
    add_command,
    add_model_options,
    cache_of,
    default_cache_path,
    load_model,
    loaded_classes,
    make_transformer,
    say,
)
from .cli_quantize import add_quantize_command
from .cli_report import DEFAULT_REPORT_DIR, add_report_commands
from .io import (
    INPUT_FORMATS,
    InputError,
    column_texts,
    input_format,
    one_line,
    pick_column,
    read_inputs,
    read_lines,
    read_table,
    read_texts,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_REPORT_DIR", "CLIError", "EmbeddingWriter",  # noqa: F822 (lazy, see __getattr__)
           "build_parser",
           "cache_of", "column_texts", "default_cache_path", "input_format", "load_model",
           "main", "make_transformer", "pick_column", "read_lines", "read_table", "read_texts",
           "say"]

# Texts per transform call in ``embed`` (None: the road's STREAM_CHUNK); tests make it small.
EMBED_CHUNK: int | None = None


# -- writing embeddings: skmoe.embedding owns it ------------------------------------------------
def __getattr__(name: str) -> Any:
    if name == "EmbeddingWriter":  # moved to skmoe.embedding_files (lazily: the CLI starts fast)
        from .embedding_files import EmbeddingWriter

        return EmbeddingWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- commands -----------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    """Embed INPUT (.txt one text per line; .csv/.tsv/.parquet/.jsonl with --column) and write
    OUTPUT: .npy (float array [n, dim], input order) or .parquet (columns 'text' and
    'embedding', a fixed-size list per row; model, fingerprint, prompt and output settings in
    the schema metadata's 'skmoe' key). Vectors go to the cache chunk by chunk, so rerunning
    an interrupted command only computes what is missing."""
    src, dst = Path(args.input).expanduser(), Path(args.output).expanduser()
    fmt = _output_format(dst, args.format)
    if not dst.parent.is_dir():
        raise CLIError(f"output folder does not exist: {dst.parent}")
    if dst.is_dir():
        raise CLIError(f"output is a folder, not a file: {dst}")
    if dst.exists() and src.exists() and dst.samefile(src):
        raise CLIError(f"output is the input file {src}: writing it would replace the texts; "
                       "name another output")
    if args.id_column is not None and fmt != "parquet":
        raise CLIError(f"--id-column writes the ids beside the vectors, which needs Parquet "
                       f"output; {dst.name} is .{fmt}")
    from .embedding_files import PARQUET_COLUMNS

    if args.id_column in PARQUET_COLUMNS:  # was an "internal error" after loading the model
        raise CLIError(f"--id-column {args.id_column!r}: the ids are written under the column's "
                       f"name, and the output's own columns are {' and '.join(PARQUET_COLUMNS)};"
                       " rename that column in the input")
    texts, ids = read_inputs(src, args.column, args.input_format, args.id_column)
    cache = cache_of(args)
    if cache is not None and dst.resolve() == cache.resolve():
        raise CLIError(f"output is the cache file {cache}: writing it would replace the cache; "
                       "name another output")
    transformer = make_transformer(args, cache=cache, verbose=0 if args.quiet else 2)
    transformer.set_params(long_text=args.long_text, chunk_overlap=args.chunk_overlap)
    load_model(transformer, texts)
    before = transformer.cache_stats()
    where = (" (no cache: an interruption loses the work)" if cache is None else
             f" (cache {cache} unusable, see the warning: an interruption loses the work)"
             if before.stopped else f" (cache: {cache})")
    distinct = len(set(texts))
    say(f"embedding {len(texts):,} texts{f' ({distinct:,} distinct)' if distinct < len(texts) else ''}"
        f" from {src}{where}")
    if dst.exists():  # an interruption leaves it as it was: say whose it is
        say(f"{dst} exists (an earlier run's): it is replaced once every row is written")
    # the road (skmoe.embedding) streams chunk by chunk into a partial file beside dst, renamed
    # when complete
    chunks = {} if EMBED_CHUNK is None else {"chunk_size": EMBED_CHUNK}
    transformer.embed_to(texts, dst, format=fmt, ids=ids, id_name=args.id_column or "id",
                         **chunks)
    if cache is not None:  # counters are per process: report this command's share
        after = transformer.cache_stats()
        # counted per chunk of lines (STREAM_CHUNK), each text once: a text a chunk computed is
        # "found" when a later chunk repeats it
        found, computed = after.hits - before.hits, after.misses - before.misses
        if before.stopped and not found:  # unusable from the start (said so above)
            say(f"cache: not used ({cache}, {after.stopped})")
        else:  # a side that stopped during the run (a full disk, a read-only file) says so
            say(f"cache: {found:,} found, {computed:,} computed ({cache})" + (
                f"; stopped {after.stopped}" if after.stopped else ""))
    print(f"wrote {len(texts):,} x {transformer.n_features_out_} "
          f"({transformer.output_dtype}) embeddings to {dst}")
    return 0


def _tokens(value: str) -> int:
    """A token count >= 0 (``--chunk-overlap``)."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of tokens >= 0, got {value!r}")
    return n


def _output_format(path: Path, asked: str | None) -> str:
    """The output format: ``--format`` (``asked``) or the extension's, which must agree."""
    from .embedding_files import output_format

    try:
        return output_format(path, asked, option="--format ")
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def cmd_info(args: argparse.Namespace) -> int:
    """Describe MODEL (hub id, folder or config.json) from its config alone: sizes, experts, MoE
    layers, total and active parameters; revision and weights fingerprint when the weights are
    present. Loads no weights."""
    import json

    from .encoder.info import NotAConfigError, format_model_info, model_info

    try:
        info = model_info(args.model, revision=args.revision,
                          local_files_only=args.local_files_only)
    except NotAConfigError as exc:  # MODEL is not a readable config: the user's argument
        raise CLIError(one_line(exc)) from None
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_model_info(info))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """Inspect (stats), verify (check) or empty (clear) an skmoe embedding cache file."""
    from ._cache_db import diagnose
    from .cache import CacheFormatError, EmbeddingCache

    if args.path and args.cache_path and Path(args.path) != Path(args.cache_path):
        raise CLIError(f"two cache files given: {args.cache_path} (--cache) and {args.path}")
    given = args.cache_path or args.path
    path = Path(given).expanduser() if given else default_cache_path()
    if not path.is_file():
        where = "" if given else " (the default; set another with --cache PATH or $SKMOE_CACHE)"
        raise CLIError(f"no cache file at {path}{where}")
    _check_sqlite(path)
    cache = EmbeddingCache(str(path))
    if args.cache_command == "check":
        problems = cache.check()
        for line in problems:
            print(f"{path}: {line}")
        if problems:
            return EXIT_MODEL
        print(f"{path}: ok")
        return 0
    try:
        if args.cache_command == "stats":
            _print_stats(cache)
            return 0
        namespace = _pick_namespace(cache, args.namespace) if args.namespace else None
        deleted = cache.clear(namespace)
        cache.vacuum()
    except (sqlite3.DatabaseError, CacheFormatError) as exc:
        found = diagnose(exc, cache.path)
        if found.damaged and args.cache_command == "clear" and not args.namespace:
            cache.remove()  # a file SQLite cannot read holds nothing to keep
            print(f"removed the damaged cache file {path} ({one_line(exc)})")
            return 0
        fix = found.fix
        if found.damaged:
            fix = (f"`skmoe cache clear {path}` (without --namespace) removes it" if
                   args.cache_command == "clear" else
                   f"see `skmoe cache check {path}`; `skmoe cache clear {path}` removes it")
        raise CLIError(f"cannot {args.cache_command} the cache {path}: {found.what}; {fix}",
                       EXIT_MODEL) from None
    what = f"namespace {namespace[:12]}" if namespace else "all namespaces"
    print(f"cleared {deleted:,} entries ({what}) from {path} "
          f"(now {_human_bytes(cache.stats().bytes)})")
    return 0


def _print_stats(cache: Any) -> None:
    entries = len(cache)  # strict: a damaged file raises here, not in stats()'s warning
    stats = cache.stats()
    print(f"path        {stats.path}")
    print(f"entries     {entries:,}")
    print(f"namespaces  {stats.namespaces}")
    print(f"size        {_human_bytes(stats.bytes)}")
    labels = cache.labels()
    for name, (dim, count) in cache.namespaces().items():
        print(f"  {name[:12]}  {dim:>5}-d  {count:>9,} entries  {_describe(labels.get(name))}")


def _describe(labels: dict[str, Any] | None) -> str:
    """One line telling a namespace's model, prompt, length and precision."""
    if not labels:
        return "(no description: written by an older skmoe)"
    chunked = (f", long texts in windows overlapping {labels.get('chunk_overlap')} tokens"
               if labels.get("long_text") == "chunk" else "")
    device = f" on {labels['device_type']}" if labels.get("device_type") not in (None, "cpu") else ""
    return (f"{labels.get('model')} @ {labels.get('revision')}, prompt {labels.get('prompt')!r}, "
            f"max_length {labels.get('max_length')}{chunked}, {labels.get('precision')}{device}")


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
def build_parser() -> argparse.ArgumentParser:
    """The ``skmoe`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="skmoe",
        description="Sentence embeddings and multilingual probes with the "
                    "nomic-embed-text-v2-moe Mixture-of-Experts encoder.",
        epilog="Exit codes: 0 ok, 1 model or cache unusable, or the model unusable with these "
               "options (a precision the device lacks, --truncate-dim above its width), or an "
               "internal error (rerun with --debug), 2 bad input or options, 130 interrupted, 143 "
               "terminated (SIGTERM). "
               "--debug (or SKMOE_DEBUG=1) shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"skmoe {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (also: SKMOE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_report_commands(sub)
    add_quantize_command(sub)

    embed = add_command(sub, "embed", cmd_embed, help="embed a file of texts into .npy or Parquet")
    embed.add_argument("input", metavar="INPUT", help="input file")
    embed.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                       help="output file (.npy or .parquet), replaced if it exists (not the "
                            "input); written beside it as OUTPUT.<host>.<pid>.<random>.partial "
                            "and renamed when complete")
    embed.add_argument("--column", help="text column of a table (default: 'text' or the only one)")
    embed.add_argument("--id-column", metavar="NAME",
                       help="a table's id column, written as the first column of the Parquet "
                            "output (for joining the vectors back)")
    embed.add_argument("--input-format", choices=INPUT_FORMATS,
                       help="input format when the extension does not tell")
    embed.add_argument("--format", type=str.lower, metavar="{npy,parquet}",
                       help="output format when the extension does not tell")
    embed.add_argument("--output-dtype", default="float32",
                       choices=("float32", "float16", "binary", "ubinary"),
                       help="stored precision (binary: sign bits packed 8 per byte)")
    embed.add_argument("--normalize", default=None, type=str.lower,
                       help="row normalisation, as the estimator's normalize: a row length "
                            "(default 2.0: on these uncentred vectors linear heads work with "
                            "their default regularisation), "
                            "l2 (unit length: dot product = cosine), rms (length sqrt(dim)) or "
                            "none (raw pooled vectors)")
    embed.add_argument("--no-normalize", dest="normalize", action="store_const", const="none",
                       help="same as --normalize none")
    embed.add_argument("--long-text", choices=("truncate", "chunk"), default="truncate",
                       help="texts longer than --max-length: cut them (truncate, the default) "
                            "or embed overlapping windows and average them (chunk)")
    embed.add_argument("--chunk-overlap", type=_tokens, default=64, metavar="N",
                       help="tokens shared by consecutive windows with --long-text chunk (64)")
    add_model_options(embed, prompt_default="classification")

    info = add_command(sub, "info", cmd_info,
                       help="config, total/active parameters, MoE layers and revision of a model")
    info.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL",
                      help=f"hub id, folder or config.json (default: {DEFAULT_MODEL})")
    info.add_argument("--revision", help="hub branch, tag or commit")
    info.add_argument("--local-files-only", action="store_true", help="never download")
    info.add_argument("--json", action="store_true", help="print JSON")

    cache = add_command(sub, "cache", cmd_cache, help="inspect or clear an embedding cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    for name, text in (("stats", "entries, size on disk, and each namespace's model and prompt"),
                       ("check", "scan the file for damage without changing it (exit 1 if any)"),
                       ("clear", "delete every entry (or one namespace's) and shrink the file; "
                                 "a damaged file is removed")):
        p = cache_sub.add_parser(name, help=text, description=f"Cache {name}: {text}.")
        p.add_argument("--cache", metavar="PATH", dest="cache_path",
                       help="cache file, as in every other command (default: $SKMOE_CACHE or "
                            "~/.cache/skmoe/embeddings.sqlite)")
        p.add_argument("path", nargs="?", metavar="PATH", help="the same as --cache PATH")
        if name == "clear":
            p.add_argument("--namespace", metavar="PREFIX",
                           help="only the namespace whose id starts with PREFIX (ids: cache stats)")
    _add_debug_everywhere(parser)
    return parser


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after any subcommand too (``skmoe embed ... --debug``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="print the traceback of an error")
                _add_debug_everywhere(sub)


# -- entry point --------------------------------------------------------------------------------
def user_error_code(exc: BaseException) -> int | None:
    """The exit code of an error that is the user's or the environment's, None for a bug.

    User mistakes (exit 2): :class:`CLIError`, :class:`skmoe.io.InputError` (a file that cannot
    be read as asked), :class:`skmoe.evaluation.DataError` (a table that cannot make a
    report), an unknown prompt name, and a path that is missing, a folder or not permitted.
    The model or the cache unusable (exit 1): the package's model and cache errors, SQLite
    errors, other operating-system errors (a full disk) and running out of memory. Anything
    else, a ``ValueError`` or ``KeyError`` raised inside the computation included, is a bug.
    """
    if isinstance(exc, CLIError):
        return exc.code
    # The package's classes, looked up only where their module is loaded, so that classifying
    # a simple input error does not import torch.
    user = loaded_classes(("skmoe.evaluation.data", "DataError"),
                           ("skmoe.encoder.sentence", "UnknownPromptError"))
    if isinstance(exc, (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                        PermissionError, *user)):
        return EXIT_INPUT
    model = loaded_classes(*MODEL_ERRORS)
    if isinstance(exc, (*model, sqlite3.DatabaseError, OSError)):
        return EXIT_MODEL
    # out of memory, a MemoryError or torch's RuntimeErrors (CUDA's, the CPU allocator's, a
    # file mapping's): the machine's limit, not a bug (the engine halves its batches first)
    if is_out_of_memory(exc):
        return EXIT_MODEL
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"skmoe: warning: {one_line(message)}", file=sys.stderr)


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
    debug = args.debug or os.environ.get("SKMOE_DEBUG", "").strip() not in ("", "0")
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    # huggingface_hub logs every retry of an unreachable hub; the final error says it all.
    hub_logger = logging.getLogger("huggingface_hub")
    old_level = hub_logger.level
    if not debug:
        hub_logger.setLevel(logging.ERROR)
    old_term = _catch_sigterm()
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        if not hasattr(args, "no_cache"):  # info, quantize, cache: nothing to resume
            say(f"skmoe: {what}")
        elif args.no_cache:
            say(f"skmoe: {what} (no cache: what was computed is lost)")
        else:
            say(f"skmoe: {what} (finished chunks are in the cache; rerun to resume)")
        return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader stopped (`skmoe cache stats | head`): not an error
        with contextlib.suppress(OSError, ValueError):  # no second error at interpreter exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        code = user_error_code(exc)
        if code is not None:
            return _fail(str(exc), code)
        hint = "" if debug else "; rerun with --debug to see the traceback"
        return _fail(f"internal error, a bug in skmoe ({type(exc).__name__}: {one_line(exc)})"
                     f"{hint}", EXIT_MODEL)
    finally:
        warnings.showwarning = old_show
        hub_logger.setLevel(old_level)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, SLURM, Kubernetes, systemd), unwound like Ctrl-C: the partial
    output file is removed and the finished chunks stay in the cache."""


EXIT_TERMINATED = 128 + signal.SIGTERM


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _catch_sigterm() -> Any:
    """Handle SIGTERM for the command's duration (main thread only); the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _fail(message: str, code: int) -> int:
    print(f"skmoe: error: {one_line(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
