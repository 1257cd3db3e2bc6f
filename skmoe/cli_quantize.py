"""``skmoe quantize MODEL --dtype int4|int8 --output DIR``: write a pre-quantized folder
(:func:`skmoe.engine.quantized_io.quantize_folder`), which every command and
``MoEEmbeddingTransformer(model=DIR)`` then load as it is."""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import EXIT_INPUT, CLIError, add_command, say


def add_quantize_command(sub: Any) -> None:
    """The ``quantize`` sub-parser."""
    p = add_command(sub, "quantize", cmd_quantize,
                    help="write a pre-quantized (int4/int8) folder of a model")
    p.add_argument("model", metavar="MODEL", help="hub id or folder of the float model")
    p.add_argument("--dtype", required=True, choices=("int4", "int8"), help="precision mode")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder to write (must not exist or be empty)")
    p.add_argument("--group-size", type=int, default=32, choices=(32, 64, 128, 256),
                   help="int4: input channels per scale (default 32, the most accurate)")
    p.add_argument("--revision", help="hub branch, tag or commit")
    p.add_argument("--local-files-only", action="store_true", help="never download")


def cmd_quantize(args: argparse.Namespace) -> int:
    """Quantize MODEL (hub id or folder of the float MoE model) and write DIR:
    model.safetensors with the quantized weights and scales, config.json recording the
    quantization, and the tokenizer and side files. DIR appears only when complete: it is
    written as DIR.<host>.<pid>.<random>.partial beside it and renamed (a killed run's leftover
    is removed by the next run). Pass DIR as --model (or model=DIR in Python) to load it
    directly, without the float weights."""
    from .engine.quantized_io import QuantizeRequestError, quantize_folder

    try:
        out = quantize_folder(args.model, args.output, args.dtype, group_size=args.group_size,
                              revision=args.revision, local_files_only=args.local_files_only)
    except QuantizeRequestError as exc:  # the request's mistake; anything else is the model's or a bug
        raise CLIError(str(exc), EXIT_INPUT) from None
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    say(f"wrote {args.dtype} folder {out} ({size / 1e6:.1f} MB); load it with --model {out}")
    return 0
