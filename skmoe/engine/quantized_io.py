"""Pre-quantized folders: ``skmoe quantize`` writes them, :func:`load_encoder` reads them.

A folder holds ``model.safetensors`` with the **portable** quantized tensors, ``config.json``
(the model's own, plus a ``quantization_config`` entry recording the method, the bits, the group
size, the int4 ``rounding`` (absent in older folders: ``rtn``), the quantized modules and the
format version) and the tokenizer and sentence-transformers
side files, copied. The CPU kernels' packed layouts depend on the CPU, so they are made at load
and never stored. Per quantized module ``NAME`` (the same modules :func:`apply_precision
<skmoe.engine.precision.apply_precision>` converts):

==========  ==================================  ==================================================
mode        tensor                              dtype and shape
==========  ==================================  ==================================================
int4        ``NAME.qweight``                    uint8 ``[..., out, in / 2]``: 4-bit codes, column
                                                ``2j`` in the low nibble, ``2j + 1`` in the high
int4        ``NAME.scales``, ``NAME.zeros``     bfloat16 ``[..., out, in / group_size]``;
                                                ``w = (q - 8) * scale + zero``
int8        ``NAME.qweight``                    int8 ``[..., out, in]`` (symmetric, per row)
int8        ``NAME.scales``                     float32 ``[..., out]``
both        ``NAME.bias``                       float32
int4        word embeddings ``qweight/scales``  int8 ``[V, D]`` and float32 ``[V, 1]`` (per row)
==========  ==================================  ==================================================

``...`` is the expert index of an MoE layer's ``up``/``down`` matrices; an MLP's tensors are
``NAME.fc1.*`` and ``NAME.fc2.*``. Every other tensor (LayerNorms, routers, token-type row) is
stored as in the float checkpoint. Loading builds the model on the ``meta`` device, checks every
tensor's name, shape and exact dtype against the safetensors header (:func:`~skmoe.encoder.
checkpoint.compare_with_header`) before reading a byte, checks the floats finite, then builds
each quantized module straight from its stored codes: no float copy of a quantized matrix is
ever made, so loading the int4 folder of the full-size model stays near its 0.5 GB of weights.
The vectors equal those of the same model quantized in memory, bit for bit (tested).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._partial_files import apply_umask, is_partial, make_partial, remove_orphans
from ..encoder.checkpoint import CheckpointError, compare_with_header, read_headers, read_json
from ..encoder.config import NomicMoEConfig, is_nomic_moe_config
from ..encoder.loading import (
    HUB_ALLOW_PATTERNS,
    ModelSource,
    embedding_rows,
    install_fork_guard,
    read_safetensors,
    resolve_device,
    resolve_model_path,
    safetensors_files,
    weights_fingerprint,
)
from ..encoder.nomic_moe import NomicMoEModel
from ..encoder.pages import trim_heap
from ..encoder.sentence import SentenceEncoder
from ..encoder.sentence import load_encoder as load_float_encoder
from ..encoder.tokenization import load_max_length, load_model_tokenizer, load_pooling, load_prompts
from .int4 import (
    INT4_GROUP_SIZE,
    INT4_ROUNDING,
    INT4_ROUNDINGS,
    Int4ShapeError,
    check_int4_rounding,
)
from .int8 import int8_weight_bits
from .memory import release_file_pages
from .precision import (
    ALL_PRECISIONS,
    QUANTIZED,
    apply_precision,
    precision_label,
    resolve_precision,
)
from .quantized_units import (
    install_unit,
    module_from_portable,
    owned_by,
    portable_tensors,
    quantized_units,
)
from .row_embedding import FileRows

#: The key of config.json recording the quantization, and its ``quant_method`` value.
CONFIG_KEY = "quantization_config"
QUANT_METHOD = "skmoe"
#: Bumped when the stored layout changes; a folder of another version is refused.
FORMAT_VERSION = 1
#: The name of the partial folder ``skmoe quantize`` writes inside an existing output folder.
_INSIDE = ".skmoe-quantize"

_SCHEMES = {
    "int4": "weight-only, asymmetric per group of input channels: w = (q - 8) * scale + zero, "
            "q in 0..15 nibble-packed (low nibble = even column), bf16 scale and zero; "
            "activations bf16 at run time; scale and zero per 'rounding' (rtn: the group's "
            "min/max; mse: least-squared-error grid search)",
    "int8": "symmetric per output channel: w = q * scale, fp32 scale; activations int8 per row "
            "at run time",
}


class QuantizeRequestError(ValueError):
    """What ``quantize_folder`` was asked cannot be done (a float dtype, an output folder in use,
    a folder already quantized, a dense model): the caller's mistake, not a bug."""


class QuantizedFolderError(CheckpointError):
    """A pre-quantized folder cannot run with these settings (a conflicting ``dtype``, a GPU, a
    CPU whose int8 kernel cannot take its 8-bit weights)."""


# --------------------------------------------------------------------------------------------
# Reading a folder's quantization record


def quantization_of(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``quantization_config`` of a local pre-quantized folder (validated), else None (a hub
    id, a float checkpoint, or a path that is not a folder)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        return None
    if is_partial(path):  # quantize_folder's folder in the making: never a model
        raise CheckpointError(f"{path} is the unfinished output of a `skmoe quantize` run "
                              "(killed, or still writing); quantize the float model again")
    raw = read_json(path / "config.json")
    q = raw.get(CONFIG_KEY) if isinstance(raw, dict) else None
    if q is None:
        return None
    where = path / "config.json"
    if not isinstance(q, dict) or q.get("quant_method") != QUANT_METHOD:
        method = q.get("quant_method") if isinstance(q, dict) else q
        raise CheckpointError(f"{where}: {CONFIG_KEY} with quant_method {method!r} is not one "
                              f"skmoe reads (only {QUANT_METHOD!r}, written by `skmoe quantize`)")
    if q.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: quantized folder format version "
                              f"{q.get('format_version')!r}; this skmoe reads version "
                              f"{FORMAT_VERSION}: quantize the float model again")
    mode, gs, bits = q.get("precision"), q.get("group_size"), q.get("bits")
    if mode not in QUANTIZED:
        raise CheckpointError(f"{where}: {CONFIG_KEY}.precision must be one of {QUANTIZED}, "
                              f"got {mode!r}")
    if mode == "int4" and (bits != 4 or gs not in (32, 64, 128, 256)):
        raise CheckpointError(f"{where}: int4 needs bits 4 and a group size of 32, 64, 128 or "
                              f"256, got bits {bits!r}, group_size {gs!r}")
    if mode == "int4" and q.get("rounding", "rtn") not in INT4_ROUNDINGS:
        raise CheckpointError(f"{where}: int4 rounding must be one of {INT4_ROUNDINGS}, got "
                              f"{q.get('rounding')!r}")
    if mode == "int8" and bits not in (7, 8):
        raise CheckpointError(f"{where}: int8 weights have 7 or 8 bits, got {bits!r}")
    return q


def folder_label(q: dict[str, Any]) -> str:
    """The precision label (cache namespace part) of a folder's quantization."""
    return precision_label(q["precision"], group_size=q.get("group_size"), bits=q.get("bits"),
                           rounding=_rounding(q))


def _rounding(q: dict[str, Any]) -> str | None:
    """How an int4 folder's scales were chosen: its recorded ``rounding``; ``"rtn"`` for folders
    written before the key existed (same layout, min/max scales); None for int8."""
    return q.get("rounding", "rtn") if q["precision"] == "int4" else None


def check_requested(q: dict[str, Any], precision: str | None, where: str) -> None:
    """Refuse a ``dtype``/``precision`` that conflicts with a quantized folder's own.

    ``None`` and ``"auto"`` follow the folder; its own mode (``"int4"``) is accepted too.
    """
    if precision in (None, "auto"):
        return
    mode = resolve_precision(precision, "cpu")
    if mode != q["precision"]:
        raise QuantizedFolderError(
            f"{where} holds {q['precision']} weights quantized by `skmoe quantize` "
            f"({folder_label(q)}); dtype={precision!r} conflicts with them: pass dtype=None "
            f"(or 'auto', or {q['precision']!r}; on the command line: leave out --dtype) to use "
            f"them, or load the original float model for {mode}")


def namespace_precision(model: str | os.PathLike[str], precision: str | None,
                        device: str | torch.device) -> str:
    """The precision part of the cache namespace for these settings, without loading anything:
    a pre-quantized folder's own label (a conflicting ``precision`` is refused), else the
    mode's (:func:`~skmoe.engine.precision.precision_label`; int4 at the default group size)."""
    q = quantization_of(model)
    if q is not None:
        check_requested(q, precision, str(model))
        return folder_label(q)
    return precision_label(resolve_precision(precision, device))


# --------------------------------------------------------------------------------------------
# Writing


def _side_files(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer and sentence-transformers side files (what the hub download allows,
    less the weights and config.json, which are written anew)."""
    copied = []
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src).as_posix()
        if not f.is_file() or rel == "config.json" or rel.endswith(".safetensors") or \
                rel == "model.safetensors.index.json" or rel.startswith("."):
            continue
        if not any(Path(rel).match(p) for p in HUB_ALLOW_PATTERNS):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst / rel)
        copied.append(rel)
    return copied


def quantize_folder(
    model: str | os.PathLike[str], output: str | os.PathLike[str], dtype: str = "int4", *,
    group_size: int = INT4_GROUP_SIZE, revision: str | None = None,
    local_files_only: bool = False, rounding: str = INT4_ROUNDING,
) -> Path:
    """Write the pre-quantized folder of a float MoE checkpoint.

    Parameters
    ----------
    model : str or path
        The float model (folder or hub id), as :func:`~skmoe.encoder.load_encoder` takes it.
    output : path
        The folder to write; it must not exist or be empty. A new one is written as
        ``OUTPUT.<host>.<pid>.<random>.partial`` beside it and renamed when complete, so a killed
        run leaves no folder at ``output``; an existing empty one (a mounted volume, a link) is
        written inside it, in such a folder whose files move up when complete, config.json last.
        The next run removes a killed run's leftover.
    dtype : {"int4", "int8"}
        The mode (see :mod:`skmoe.engine.precision`).
    group_size : int, default=32
        int4 only: input channels sharing one scale and offset (32, 64, 128 or 256).
    rounding : {"mse", "rtn"}, default="mse"
        int4 only: how each group's scale and offset are chosen (see
        :func:`~skmoe.engine.int4.quantize_int4`); recorded in the folder's config.
    revision, local_files_only
        As in :func:`~skmoe.encoder.load_encoder`.

    Returns
    -------
    Path
        ``output``. ``load_encoder(output)`` and ``MoEEmbeddingTransformer(model=output)`` then
        load it directly.
    """
    mode = resolve_precision(dtype, "cpu")
    if mode not in QUANTIZED:
        raise QuantizeRequestError(f"skmoe quantize writes int4 or int8 folders, got dtype={dtype!r}")
    if mode == "int4":
        check_int4_rounding(rounding, QuantizeRequestError)
    out = Path(output).expanduser()
    inside = out.is_dir()  # an existing (empty) folder is written inside, below
    if inside:  # a killed run's leftover in it does not count as content
        remove_orphans(out.resolve() / _INSIDE)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QuantizeRequestError(f"--output {out} exists and is not an empty folder; choose a new one")
    room = out.resolve() if inside else out.parent
    while not room.exists() and room != room.parent:  # made below, where it can be
        room = room.parent
    if not os.access(room, os.W_OK | os.X_OK):  # before any work, not after quantizing
        raise QuantizeRequestError(f"--output {out}: {room} is not writable; choose a folder "
                                   "you can write in")
    if quantization_of(model) is not None:
        raise QuantizeRequestError(f"{model} is already quantized; quantize the float model instead")
    encoder = load_float_encoder(model, revision=revision, device="cpu", dtype="float32",
                                 local_files_only=local_files_only)
    backbone = encoder.backbone
    if not isinstance(backbone, NomicMoEModel):
        raise QuantizeRequestError(f"{model}: skmoe quantize writes folders of the MoE model "
                         "(nomic_bert) only; quantize dense models at load with dtype='int4'/'int8'")
    bits = 4 if mode == "int4" else int8_weight_bits()
    units = quantized_units(backbone, mode)
    tensors: dict[str, torch.Tensor] = {}
    for unit in units:
        try:
            portable = portable_tensors(unit, mode, group_size, bits, rounding)
        except Int4ShapeError as exc:  # e.g. --group-size 128 on a 64-wide model
            raise QuantizeRequestError(f"{exc}: choose a --group-size that divides it") from None
        for key, value in portable.items():
            tensors[f"{unit.name}.{key}"] = value.contiguous()
        release_file_pages([*unit.module.parameters(), *unit.module.buffers()])
    for key, value in backbone.state_dict().items():
        if not owned_by(key, units):
            tensors[key] = value.detach().float().contiguous()
    from safetensors.torch import save_file

    raw = dict(encoder.raw_config)
    raw[CONFIG_KEY] = {
        "quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION,
        "skmoe_version": __version__, "precision": mode, "bits": bits,
        "group_size": group_size if mode == "int4" else None,
        "rounding": rounding if mode == "int4" else None, "scheme": _SCHEMES[mode],
        "embedding": "int8 rows, symmetric, fp32 scale per row" if mode == "int4" else "float32",
        "float32": "routers, LayerNorms, biases, token-type row",
        "modules": [[u.name, u.kind] for u in units],
        "source": {"model": str(model), "revision": encoder.source.revision,
                   "fingerprint": encoder.source.fingerprint},
    }
    # this run's own folder: beside a new `out`, renamed to it when complete; inside an existing
    # (empty) one, whose parent may be read-only (a mounted volume) or which may be a link
    if not inside:
        out.parent.mkdir(parents=True, exist_ok=True)
    part = make_partial(out.resolve() / _INSIDE if inside else out, folder=True)
    try:
        try:
            save_file(tensors, str(part / "model.safetensors"), metadata={"format": "pt"})
        except Exception as exc:  # SafetensorError, not an OSError: "... (os error 28)"
            code = re.search(r"\(os error (\d+)\)", str(exc))
            if code is None:
                raise
            raise OSError(int(code[1]), f"cannot write {out / 'model.safetensors'}: "
                                        f"{os.strerror(int(code[1]))}") from exc
        _side_files(Path(encoder.source.path), part)
        (part / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        apply_umask(part)  # safetensors writes 0600 and mkdtemp 0700: follow the umask
        if not inside:
            os.replace(part, out)
        else:  # config.json last: until it is there the folder is no model
            for f in sorted(part.iterdir(), key=lambda f: f.name == "config.json"):
                os.replace(f, part.parent / f.name)
            part.rmdir()
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------------
# Reading


def _rows_file(header: dict[str, tuple[str, tuple[int, ...], Path]], name: str) -> FileRows | None:
    """The word-embedding rows of ``name``, read from its file (see :class:`FileRows`); None
    where ``os.pread`` does not exist (the rows are then read from the mapping)."""
    if not hasattr(os, "pread"):
        return None
    _, shape, file = header[name]
    with open(file, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        start = json.loads(fh.read(n))[name]["data_offsets"][0]  # checked by read_headers
    return FileRows(file, 8 + n + start, (shape[0], shape[1]))


def _load_backbone(folder: Path, raw: dict[str, Any], q: dict[str, Any],
                   files: list[Path]) -> NomicMoEModel:
    """The quantized MoE backbone of ``folder``: checked against the header, then filled."""
    if not is_nomic_moe_config(raw):
        raise CheckpointError(f"{folder / 'config.json'}: a quantized folder of a model that is "
                              "not nomic_bert; skmoe quantize writes MoE folders only")
    mode, gs = q["precision"], q.get("group_size") or INT4_GROUP_SIZE
    with torch.device("meta"):
        backbone = NomicMoEModel(NomicMoEConfig.from_dict(raw))
    units = quantized_units(backbone, mode)
    recorded = [tuple(m) for m in q.get("modules", []) if isinstance(m, list)]
    planned = [(u.name, u.kind) for u in units]
    if recorded != planned:
        diff = next((f"{a} vs {b}" for a, b in zip(recorded, planned, strict=False) if a != b),
                    f"{len(recorded)} vs {len(planned)} modules")
        raise CheckpointError(f"{folder / 'config.json'}: the recorded quantized modules differ "
                              f"from what this skmoe quantizes for the config ({diff}); quantize "
                              "the float model again")
    expected: dict[str, torch.Tensor] = {}
    exact: set[str] = set()
    bits = q["bits"]
    with torch.device("meta"):
        for unit in units:
            for key, value in portable_tensors(unit, mode, gs, bits).items():
                expected[f"{unit.name}.{key}"] = value
                exact.add(f"{unit.name}.{key}")
    rest = {k: v for k, v in backbone.state_dict().items() if not owned_by(k, units)}
    expected.update(rest)
    header = read_headers(files)
    compare_with_header(expected, header, folder, exact=exact)  # before any read
    tensors = read_safetensors(files)  # floats checked finite; the integer codes are not read
    backbone.load_state_dict({k: tensors.pop(k).float() for k in rest}, strict=False, assign=True)
    for unit in units:
        prefix = unit.name + "."
        own = {k[len(prefix):]: tensors.pop(k) for k in list(tensors) if k.startswith(prefix)}
        rows = _rows_file(header, unit.name + ".qweight") if unit.kind == "embedding" else None
        new = module_from_portable(unit, mode, gs, own, rows)
        install_unit(backbone, unit, new)
        if unit.kind != "embedding":  # the int8 table is used as stored; the rest was repacked
            release_file_pages(own.values())
        del own, new
        trim_heap()  # the unpacked codes' pages (see trim_heap)
    left = [n for n, t in [*backbone.named_parameters(), *backbone.named_buffers()] if t.is_meta]
    if left:  # a bug, not a damaged folder: every tensor was checked above
        raise CheckpointError(f"{folder}: tensor(s) not filled while loading: {left[:5]}")
    return backbone


def _load_quantized(folder: Path, q: dict[str, Any], *, name: str, revision: str,
                    device: torch.device, tokenizer: str | os.PathLike[str] | None) -> SentenceEncoder:
    mode = q["precision"]
    if device.type != "cpu":
        raise QuantizedFolderError(f"{folder} holds {mode} weights, a CPU mode (its kernels are CPU ones); "
                         f"on {device.type} load the float model with bfloat16 or float16")
    if mode == "int8" and q["bits"] > int8_weight_bits():
        raise QuantizedFolderError(f"{folder} holds 8-bit int8 weights, but this CPU's int8 kernel sums "
                         "them exactly only for 7-bit weights (no VNNI): run `skmoe quantize "
                         "--dtype int8` on this machine")
    raw = read_json(folder / "config.json")
    files = safetensors_files(folder)
    install_fork_guard()
    backbone = _load_backbone(folder, raw, q, files).eval()
    tok = load_model_tokenizer(folder, tokenizer, embedding_rows(backbone))
    prompts, default_prompt = load_prompts(folder, True)
    source = ModelSource(name=name, path=str(folder), revision=revision,
                         fingerprint=weights_fingerprint(folder, files))
    encoder = SentenceEncoder(
        backbone, source=source, tokenizer=tok, prompts=prompts,
        default_prompt_name=default_prompt, pooling=load_pooling(folder),
        max_length=load_max_length(folder, tok), config=raw)
    encoder.precision = mode
    encoder.precision_detail = folder_label(q)  # see precision_label
    return encoder.eval().requires_grad_(False)


def _dtype_name(dtype: str | torch.dtype | None) -> str | None:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return dtype


def load_encoder(
    model: str | os.PathLike[str], *, revision: str | None = None,
    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
    local_files_only: bool = False, tokenizer: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SentenceEncoder:
    """Load a sentence encoder: a float checkpoint in any precision mode, or a pre-quantized
    folder (``skmoe quantize``) as it is.

    Parameters are those of :func:`skmoe.encoder.load_encoder`, except ``dtype``: a mode's name
    (``"bfloat16"``, ``"int8"``, ``"int4"``...) loads a float checkpoint in float32 and converts
    it (:func:`~skmoe.engine.precision.apply_precision`), exactly as the estimator does; a
    ``torch.dtype`` casts every weight. For a quantized
    folder ``dtype=None``/``"auto"`` (or its own mode) loads its weights; any other is refused.
    """
    folder, resolved = resolve_model_path(model, revision, local_files_only, cache_dir)
    q = quantization_of(folder)
    if q is not None:
        check_requested(q, _dtype_name(dtype), str(model))
        return _load_quantized(folder, q, name=str(model), revision=resolved,
                               device=resolve_device(device), tokenizer=tokenizer)
    mode = None
    if isinstance(dtype, str) and dtype.lower() != "auto":
        try:
            mode = resolve_precision(dtype, "cpu")
        except ValueError:
            raise ValueError(f"dtype must be one of {', '.join(ALL_PRECISIONS)} (or fp32, bf16, "
                             f"fp16) or 'auto', got {dtype!r}") from None
    load: Callable[..., SentenceEncoder] = load_float_encoder
    kwargs = dict(revision=revision, device=device, local_files_only=local_files_only,
                  tokenizer=tokenizer, cache_dir=cache_dir)
    if mode is not None:  # a named mode: the estimator's road (float32, then the mode's
        # conversion), so routers stay float32 in bf16 too and the encoder records its mode
        return apply_precision(load(model, dtype="float32", **kwargs), mode)
    return load(model, dtype=dtype, **kwargs)
