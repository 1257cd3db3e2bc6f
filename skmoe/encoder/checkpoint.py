"""Reading a checkpoint folder's files defensively: JSON, safetensors headers, finite values.

Every problem is a :class:`CheckpointError` that names the file and what is wrong with it, raised
before anything large is allocated: shapes and dtypes are compared with the safetensors header
(a few kB) against the model built on the ``meta`` device, and only then are weights read.
Both loaders (:mod:`.loading` for the MoE model, :mod:`.dense` for ``transformers`` encoders)
use this module; neither imports the other's errors.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "ModelNotAvailableError",
    "NonFiniteOutputError",
    "check_finite_output",
    "compare_with_header",
    "read_headers",
    "read_json",
]

# safetensors' own limit on a header (the JSON table of tensors) is 100 MB.
_MAX_HEADER = 100_000_000
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}
#: safetensors' name of each torch dtype (for tensors whose stored dtype must match exactly).
SAFETENSORS_DTYPE = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
                     torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
                     torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


class ModelNotAvailableError(OSError):
    """The weights could not be found locally and could not be downloaded."""


class CheckpointError(ValueError):
    """The checkpoint's files are unreadable or do not match the architecture its config describes."""


class NonFiniteOutputError(CheckpointError):
    """The model produced NaN or infinite vectors (its weights were checked finite at load)."""


def read_json(path: Path, kind: type = dict) -> Any:
    """The parsed JSON file, or None when it does not exist.

    Raises :class:`CheckpointError` naming the file when it is not UTF-8 JSON or its top level is
    not a ``kind`` (dict or list).
    """
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno}); restore it from the model's source") from None
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                              "restore it from the model's source") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path} must hold a JSON {'object' if kind is dict else 'array'}, "
                              f"got {type(value).__name__}")
    return value


def _read_header(file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name -> (dtype, shape)`` from one safetensors file, checking it against the file size."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file} is truncated ({size} bytes): not a safetensors file")
        n = int.from_bytes(prefix, "little")
        if n > _MAX_HEADER or n > size - 8:
            raise CheckpointError(
                f"{file}: safetensors header too large ({n:,} bytes declared, file is {size:,}); "
                "the file is damaged or not safetensors")
        raw = fh.read(n)
    try:
        table = json.loads(raw)
        if not isinstance(table, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: unreadable safetensors header ({exc})") from None
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in table.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in (*shape, start, stop)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry") from None
        if stop > data_size or start > stop:
            raise CheckpointError(
                f"{file} is truncated: tensor {name!r} ends at byte {stop:,} of a {data_size:,}-byte "
                "data section; download it again")
        out[name] = (dtype, shape)
    return out


def read_headers(files: list[Path]) -> dict[str, tuple[str, tuple[int, ...], Path]]:
    """``name -> (dtype, shape, file)`` over all files of a (possibly sharded) checkpoint."""
    tensors: dict[str, tuple[str, tuple[int, ...], Path]] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f} is listed by the checkpoint's index but does not exist")
        for name, (dtype, shape) in _read_header(f).items():
            tensors[name] = (dtype, shape, f)
    return tensors


def _dtype_fits(stored: str, wanted: torch.dtype) -> bool:
    if wanted.is_floating_point:
        return stored in _FLOAT_DTYPES
    if wanted == torch.bool:
        return stored == "BOOL"
    return stored in _INT_DTYPES


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def compare_with_header(
    expected: Mapping[str, torch.Tensor],
    header: Mapping[str, tuple[str, tuple[int, ...], Path]],
    where: Path,
    *,
    strict: bool = True,
    rename: Mapping[str, str] | None = None,
    exact: Collection[str] = (),
) -> None:
    """Refuse a checkpoint whose tensors do not fit the model (built on ``meta``).

    Parameters
    ----------
    expected : mapping of name to tensor
        The model's ``state_dict()`` (meta tensors: shapes and dtypes only).
    header : mapping
        From :func:`read_headers`.
    where : Path
        The folder, for the message.
    strict : bool
        Also refuse missing and unexpected tensors (the MoE loader); the dense loader leaves those
        to ``transformers``, which knows the renamed and optional ones.
    rename : mapping, optional
        Model name -> checkpoint name where they differ (a base-model prefix).
    exact : collection of str
        Names whose stored dtype must be exactly the expected tensor's (the integer codes and
        scales of a pre-quantized folder); the others only need the same kind (float or integer).
    """
    rename = rename or {}
    problems: list[str] = []
    wrong, dtypes = [], []
    for name, tensor in expected.items():
        stored = header.get(rename.get(name, name))
        if stored is None:
            continue
        dtype, shape, _ = stored
        if tuple(shape) != tuple(tensor.shape):
            wrong.append(f"{name}: checkpoint {tuple(shape)} vs model {tuple(tensor.shape)}")
        elif not (dtype == SAFETENSORS_DTYPE.get(tensor.dtype) if name in exact
                  else _dtype_fits(dtype, tensor.dtype)):
            dtypes.append(f"{name}: checkpoint {dtype} vs model {str(tensor.dtype).split('.')[-1]}")
    if strict:
        targets = {rename.get(n, n) for n in expected}
        missing = sorted(n for n in expected if rename.get(n, n) not in header)
        unexpected = sorted(set(header) - targets)
        if missing:
            problems.append(f"missing tensor(s): {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected tensor(s): {_listed(unexpected)}")
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong[:5]))
    if dtypes:
        problems.append("wrong dtype: " + "; ".join(dtypes[:5]))
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not match its config.json: "
                              + " | ".join(problems))


def check_finite_tensors(tensors: Iterable[tuple[str, torch.Tensor]], where: Path | str) -> None:
    """One pass over the weights: the first tensor holding NaN or inf is named in the error.

    A tensor's sum is finite unless it holds NaN/inf (weights never come near overflowing a
    float32 sum), so the exact element-wise count runs only for a tensor whose sum is not: the
    scan reads each weight once, at memory speed.
    """
    for name, tensor in tensors:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise CheckpointError(f"{where}: tensor {name!r} holds {bad:,} NaN/inf value(s) of "
                                  f"{tensor.numel():,}; the checkpoint is damaged")


def check_finite_output(vectors: torch.Tensor, model: str = "the model") -> None:
    """Raise :class:`NonFiniteOutputError` when a batch of pooled vectors holds NaN or inf.

    Cheap (one reduction over ``[batch, dim]``); call it where the encoder produces vectors. The
    weights were checked finite at load, so the cause is numeric overflow in the forward pass.
    """
    finite = torch.isfinite(vectors).all(dim=-1)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    raise NonFiniteOutputError(
        f"{model} produced non-finite vectors (NaN/inf) for {bad} of {finite.numel()} texts in "
        f"a batch at {str(vectors.dtype).split('.')[-1]}; its weights are finite, so this is "
        "numeric overflow: use dtype='float32'")
