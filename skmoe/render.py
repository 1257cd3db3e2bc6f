"""Render a report's sections as Markdown and as one self-contained HTML page.

A :class:`Section` is a title, a paragraph (Markdown with only inline code and bold), an
optional table and optional images with captions. :func:`to_markdown` and :func:`to_html` turn
a title, a metadata table and sections into text; nothing here computes or decides content.
Written by hand (about 100 lines) rather than with a template engine, which the package does
not depend on.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The list of files a report wrote, kept in its folder, so that the next report into the same
#: folder removes what it would not write again (a map, learned pooling) and nothing else.
MANIFEST = ".skmoe-report-files"


def publish_report(work: Path, out: Path) -> None:
    """Move the report written whole in folder ``work`` into ``out``, replacing the files the
    previous report there listed (the user's own are never touched), the manifest last.

    Until here the previous report stands: a run that fails part way (a full disk, Ctrl-C)
    leaves it as it was, never a cut ``index.html`` or a folder with neither report. The moves
    are renames within one folder tree, so they need no free space.
    """
    names = sorted(p.name for p in work.iterdir() if p.is_file() and p.name != MANIFEST)
    (work / MANIFEST).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    listed = out / MANIFEST
    if listed.is_file():
        for name in listed.read_text(encoding="utf-8").splitlines():
            path = out / name
            if name and "/" not in name and name not in names and path.is_file():
                path.unlink()
    for name in [*names, MANIFEST]:
        os.replace(work / name, out / name)


@dataclass
class Section:
    """One part of a report: title, Markdown paragraph, table, and (file, caption) images."""

    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    table_index: bool = False
    images: list[tuple[str, str]] = field(default_factory=list)


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


def mean_std_cells(mean: pd.DataFrame, std: pd.DataFrame, fmt: str = ".3f") -> pd.DataFrame:
    """A table of ``"mean ± std"`` strings (for display; the CSV files keep the numbers)."""
    def cell(m: float, s: float) -> str:
        if not np.isfinite(m):
            return ""
        return format(m, fmt) + ("" if not np.isfinite(s) else f" ± {format(s, fmt)}")

    out = pd.DataFrame([[cell(m, s) for m, s in zip(mr, sr, strict=True)]
                        for mr, sr in zip(mean.to_numpy(float), std.to_numpy(float), strict=True)],
                       index=mean.index, columns=mean.columns)
    out.index.name, out.columns.name = mean.index.name, mean.columns.name
    return out


def to_markdown(title: str, meta: list[tuple[str, str]], sections: Sequence[Section]) -> str:
    """The report as Markdown: a title, a two-column metadata table, then each section."""
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


def inline_html(text: str) -> str:
    """HTML of one paragraph of the report's Markdown: escaped, with `code` and **bold**.

    Only inline code and bold are rendered; code spans are kept verbatim, so ``**`` inside
    them stays literal.
    """
    parts = _CODE.split(text)  # odd indices: the inside of a code span
    out = []
    for i, part in enumerate(parts):
        esc = html.escape(part)
        out.append(f"<code>{esc}</code>" if i % 2 else _BOLD.sub(r"<strong>\1</strong>", esc))
    return "".join(out)


def to_html(title: str, meta: list[tuple[str, str]], sections: Sequence[Section]) -> str:
    """The report as one HTML page (inline CSS; images referenced by file name)."""
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>", "<table>"]
    body += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta]
    body.append("</table>")
    for s in sections:
        body.append(f"<h2>{esc(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{inline_html(s.text)}</p>")
        if s.table is not None:
            body.append(s.table.to_html(index=s.table_index, float_format=lambda v: f"{v:.3f}",
                                        na_rep="", border=0))
        for file, caption in s.images:
            body.append(f'<figure><img src="{esc(file)}" alt="{esc(caption)}">'
                        f"<figcaption>{inline_html(caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
