"""Embedding files: ``.npy`` or Parquet written chunk by chunk, renamed only when complete.

:class:`EmbeddingWriter` is what :meth:`skmoe.embedding.Embedder.embed_to` (the estimator's
``embed_to``, ``skmoe embed``) streams into; :data:`OUTPUT_EXTENSIONS` tells a format by its
file name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._partial_files import apply_umask, make_partial

OUTPUT_EXTENSIONS = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}
OUTPUT_FORMATS = ("npy", "parquet")


def output_format(path: Path, asked: str | None = None, *, option: str = "format=") -> str:
    """The output format: ``asked`` (``npy`` or ``parquet``) or the one ``path``'s extension
    names; a ValueError when neither tells it or they disagree (Parquet bytes in a ``.npy``).
    ``option``: how the caller spells the argument in messages (the CLI: ``"--format "``)."""
    if asked is not None and asked not in OUTPUT_FORMATS:
        raise ValueError(f"{option}{asked} is not a format; use npy or parquet")
    implied = OUTPUT_EXTENSIONS.get(path.suffix.lower())
    if asked is None and implied is None:
        raise ValueError(f"cannot tell the output format of {path}; end it in .npy or .parquet "
                         f"or pass {option}npy or {option}parquet")
    if asked is not None and implied is not None and implied != asked:
        raise ValueError(f"{option}{asked} does not match the extension of {path}; name it "
                         f"{path.with_suffix('.' + asked).name} or leave out {option.strip()}")
    return asked or implied


class EmbeddingWriter:
    """Write embeddings chunk by chunk to ``.npy`` or Parquet, atomically.

    Rows go to ``OUTPUT.<host>.<pid>.<random>.partial`` (a memory-mapped ``.npy``, or Parquet row
    groups) and the file is renamed to ``OUTPUT`` only when every row is written: an interrupted
    run never leaves a truncated file that looks complete.

    ``.npy``: one array ``[n, width]`` in input order. Parquet: one row per text with columns
    ``text`` (string) and ``embedding`` (fixed-size list of ``width`` numbers), after any
    ``columns`` given (one value per row, e.g. the input's ids); ``metadata``
    (where the vectors come from: model, fingerprint, prompt, output settings) is stored as JSON
    under the schema's ``skmoe`` key (``pq.read_schema(path).metadata[b"skmoe"]``).
    """

    def __init__(self, path: Path, fmt: str, n_rows: int,
                 metadata: dict[str, Any] | None = None,
                 columns: dict[str, Sequence[Any]] | None = None) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"format must be 'npy' or 'parquet', got {fmt!r}")
        columns = dict(columns or {})
        if columns and fmt != "parquet":
            raise ValueError(f"columns beside the vectors ({', '.join(columns)}) need Parquet "
                             "output; .npy holds the vectors only")
        # each column converted once, to one Arrow type, before anything is embedded (chunk by
        # chunk, a str id after ints failed after the earlier chunks' work, as a raw Arrow error)
        self.columns = {name: _column_array(name, values, n_rows)
                        for name, values in columns.items()}
        self.path, self.fmt, self.n_rows = Path(path), fmt, n_rows
        self.tmp = make_partial(self.path)
        self._array: Any = None
        self._parquet: Any = None
        self._written = 0
        self.metadata = metadata

    def __enter__(self) -> EmbeddingWriter:
        return self

    def write(self, start: int, texts: Sequence[str], vectors: Any) -> None:
        """Store rows ``start .. start + len(texts)``."""
        vectors = np.asarray(vectors)
        if self.fmt == "npy" and self.n_rows == 0:  # no rows to map: a plain (0, width) file
            with open(self.tmp, "wb") as fh:
                np.save(fh, vectors)
        elif self.fmt == "npy":
            if self._array is None:
                with _naming(self.path):  # e.g. EFBIG under ulimit -f, before the reservation
                    self._array = np.lib.format.open_memmap(
                        self.tmp, mode="w+", dtype=vectors.dtype,
                        shape=(self.n_rows, vectors.shape[1]))
                _reserve(self.tmp)
            self._array[start : start + len(texts)] = vectors
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
            table = pa.table({
                **{name: array.slice(start, len(texts)) for name, array in self.columns.items()},
                "text": pa.array(list(texts), type=pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            })
            if self._parquet is None:
                schema = table.schema if self.metadata is None else table.schema.with_metadata(
                    {b"skmoe": json.dumps(self.metadata, default=str).encode()})
                self._parquet = pq.ParquetWriter(self.tmp, schema)
            with _naming(self.path):
                self._parquet.write_table(table)
        self._written += len(texts)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            with _naming(self.path):  # the Parquet footer, the last pages: a full disk here too
                if self._array is not None:
                    array, self._array = self._array, None
                    array.flush()
                    del array
                if self._parquet is not None:
                    writer, self._parquet = self._parquet, None
                    writer.close()
            if exc_type is None and self._written == self.n_rows:
                apply_umask(self.tmp)  # mkstemp made it 0600: give it the mode of any new file
                os.replace(self.tmp, self.path)  # gone (removed by someone): an error
        finally:
            self.tmp.unlink(missing_ok=True)  # not finished, or failed to finish: never left


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An ``OSError`` without a file name (numpy's, pyarrow's) raised again naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path})") from exc


#: The columns every Parquet output has: no extra column (e.g. ids) may take their names.
PARQUET_COLUMNS = ("text", "embedding")


def _column_array(name: str, values: Any, n_rows: int) -> Any:
    """``values`` (one per row) as one Arrow array of one type; a ValueError naming the column
    and its first row that cannot share the type of the rows before it."""
    import pyarrow as pa

    shape = getattr(values, "shape", None)
    if shape is not None and len(shape) != 1:
        extra = f" ({shape[1]} column{'s' * (shape[1] != 1)})" if len(shape) == 2 else ""
        raise ValueError(f"column {name!r}: one value per row needed, got a "
                         f"{type(values).__name__} of shape {tuple(shape)}{extra}; pass a single "
                         "column, e.g. frame['id']")
    items = list(values)
    if name in PARQUET_COLUMNS:
        raise ValueError(f"column {name!r}: the Parquet file's own columns are "
                         f"{' and '.join(PARQUET_COLUMNS)}; name this one otherwise")
    if len(items) != n_rows:
        raise ValueError(f"column {name!r}: one value per row ({n_rows}) needed, got "
                         f"{len(items)}")
    try:  # an array or Series keeps its dtype (nullable ints, dates); NaN and NA are missing
        return pa.array(values if hasattr(values, "dtype") else items, from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        error = exc

    def fails(k: int) -> bool:
        try:
            pa.array(items[:k], from_pandas=True)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return True
        return False

    lo, hi = 1, len(items)  # the shortest failing prefix has hi rows
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fails(mid) else (mid + 1, hi)
    bad = items[hi - 1]
    what = (f"does not fit the type of the rows before it "
            f"({pa.array(items[:hi - 1], from_pandas=True).type})"
            if hi > 1 else "has no Arrow type")
    raise ValueError(f"column {name!r}: row {hi - 1} ({bad!r}, a {type(bad).__name__}) {what} "
                     f"({type(error).__name__}: {error}); give every value one type, e.g. all "
                     "str") from None


def _reserve(path: Path) -> None:
    """Allocate the blocks of the (sparse) memory-mapped file ``path`` now: on a full disk a
    page of a sparse mapping cannot be stored and the kernel kills the process (SIGBUS, no
    message); reserved first, the disk says ENOSPC here, as an ``OSError``."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return  # a file system that cannot reserve: write as before
            raise OSError(exc.errno, f"cannot reserve {os.fstat(fh.fileno()).st_size:,} bytes "
                          f"for {path}: {exc.strerror}") from None
