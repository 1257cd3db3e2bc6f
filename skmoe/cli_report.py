"""``skmoe demo`` and ``skmoe probe``: the report of :mod:`skmoe.report` from the command line.

The table is read through :mod:`skmoe.io` and checked by :func:`skmoe.evaluation.prepare_data`
(the same checks the report makes) before the model is loaded, so a bad table fails in a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_common import (
    CLIError,
    add_command,
    add_model_options,
    cache_of,
    count,
    load_model,
    make_transformer,
    positive_int,
    say,
)
from .io import INPUT_FORMATS, input_format, listing, read_table, warn_empty

DEFAULT_REPORT_DIR = "skmoe-report"


def cmd_demo(args: argparse.Namespace) -> int:
    """Embed the bundled SIB-200 sample (8 languages, 7 topics) once, run the per-language
    few-shot probe and the transfer from the source language to the others, compare learned
    attention pooling with mean pooling per language (--no-learned-pooling to skip), and write
    tables (CSV + Markdown), plots (PNG) and index.html / report.md to --out."""
    from .datasets import load_sib200_sample

    try:
        data = load_sib200_sample(languages=args.languages)
    except ValueError as exc:  # an unknown --languages code: the message lists the sample's
        raise CLIError(str(exc)) from None
    return run_report(args, data, text="text", label="category", language="language",
                      split="split", ids="index_id", what="the bundled SIB-200 sample")


def cmd_probe(args: argparse.Namespace) -> int:
    """The report of `skmoe demo` on INPUT (.csv/.tsv/.parquet/.jsonl) with text, label and
    language columns. With --split-column (values 'train' and 'test'; 'dev'/'validation' rows
    are left out, any other value is an error) the split is yours; otherwise a seeded third,
    stratified by label, is held out as the test set: of the sentence ids with --id-column, else
    of each language's rows by position."""
    path = Path(args.input).expanduser()
    fmt = input_format(path, args.input_format)
    if fmt == "txt":
        raise CLIError(f"probe needs a table with text, label and language columns, not {path}")
    frame = read_table(path, fmt)
    if args.languages:
        frame = _only_languages(frame, args.language_column, args.languages, path)
    return run_report(args, frame, text=args.text_column, label=args.label_column,
                      language=args.language_column, split=args.split_column,
                      ids=args.id_column, what=str(path), path=path)


def _only_languages(frame: Any, column: str, languages: Sequence[str], path: Path) -> Any:
    if column not in frame.columns:
        return frame  # prepare_data names the missing column and its option
    have = list(dict.fromkeys(frame[column].astype(str)))
    unknown = [lang for lang in languages if lang not in have]
    if unknown:
        raise CLIError(f"language(s) {unknown} not in {path}; it has {listing(have)}")
    return frame[frame[column].astype(str).isin(languages)]


def run_report(args: argparse.Namespace, data: Any, *, text: str, label: str, language: str,
               split: str | None, what: str, ids: str | None = None,
               path: Path | None = None) -> int:
    """Check the table, load the model, build the report and say where it is."""
    from sklearn.base import clone

    from .evaluation import DataError, prepare_data
    from .report import build_report

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out must be a folder, got a file: {out}")
    try:  # the data's own checks (columns, splits, labels) before minutes of model loading
        prepare_data(data, text_column=text, label_column=label, language_column=language,
                     split_column=split, id_column=ids, source_language=args.source_language)
    except DataError as exc:
        where = f"{path}: " if path is not None else ""
        option = (f" (choose it with --{exc.column_role}-column)"
                  if exc.column_role and path is not None else "")
        raise CLIError(f"{where}{exc}{option}") from None
    if path is not None:
        warn_empty(list(data[text]), path, "row", rows=list(data.index))
    transformer = make_transformer(args, cache=cache_of(args), verbose=0 if args.quiet else 2)
    load_model(transformer, list(data[text][:1]))
    say(f"report on {what}: {len(data):,} rows, "
        f"{count(data[language].nunique(), 'language')} -> {out}")
    # load_model fitted it on one text (a check; one text learns no centre): the report gets an
    # unfitted clone, fitted on the training texts and centred, as build_report's own callers
    index = build_report(
        clone(transformer), data, out,
        text_column=text, label_column=label, language_column=language, split_column=split,
        id_column=ids, source_language=args.source_language, shots=args.shots, seeds=args.seeds,
        umap=args.map == "umap", learned_pooling=args.learned_pooling,
        progress=not args.quiet,
    )
    print(f"report written to {index}")
    return 0


def _report_options(p: argparse.ArgumentParser, *, learned_pooling: bool) -> None:
    g = p.add_argument_group("report")
    g.add_argument("--out", default=DEFAULT_REPORT_DIR, metavar="DIR",
                   help=f"report folder (default: {DEFAULT_REPORT_DIR})")
    g.add_argument("--shots", type=positive_int, default=8,
                   help="training examples per label for each probe (default: 8)")
    g.add_argument("--seeds", type=positive_int, default=5,
                   help="seeded few-shot draws per probe (default: 5)")
    g.add_argument("--source-language", default=None,
                   help="language the transfer probes train on (default: English when present)")
    g.add_argument("--languages", nargs="+", metavar="LANG", help="only these languages")
    g.add_argument("--map", choices=("umap", "none"), default="umap",
                   help="2-D maps of the test texts: UMAP (default; the slowest step) or none")
    g.add_argument("--learned-pooling", action=argparse.BooleanOptionalAction,
                   default=learned_pooling,
                   help="add learned attention pooling vs mean pooling per language (a second "
                        "encoder pass for token states, then small fits; default: "
                        f"{'on' if learned_pooling else 'off'})")


def add_report_commands(sub: Any) -> None:
    """The ``demo`` and ``probe`` sub-parsers."""
    demo = add_command(sub, "demo", cmd_demo, split_column="split",
                       help="the main job: a report folder from the bundled SIB-200 sample")
    add_model_options(demo, prompt_default="classification")
    _report_options(demo, learned_pooling=True)

    probe = add_command(sub, "probe", cmd_probe,
                        help="the demo's report on your own labelled multilingual table")
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
    add_model_options(probe, prompt_default="classification")
    _report_options(probe, learned_pooling=False)
