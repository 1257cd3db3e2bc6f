"""A model's fingerprint: a digest of everything in its folder that changes a vector.

Three parts, so that an error can say what changed:

- **weights**: the sha256 of every byte of every safetensors file (header and all tensor data);
- **tokenizer**: the sha256 of each tokenizer file present (``tokenizer.json``,
  ``sentencepiece.bpe.model``, ``vocab.txt``...);
- **config**: the sha256 of ``config.json`` *as parsed* (canonical JSON), so re-indenting or
  re-ordering its keys changes nothing, together with the parsed sentence-transformers side
  configs that fix pooling, prompts and the token limit.

Hashing 2 GB of weights takes seconds, so each file's digest is memoised by its resolved path,
size, ``mtime_ns``, inode and ``ctime_ns``: in the process, and across processes in a small JSON file,
``$SKMOE_FINGERPRINT_MEMO`` (default ``$XDG_CACHE_HOME/skmoe/file-digests.json``, with
``~/.cache`` for ``XDG_CACHE_HOME``). Rewriting a file in place changes its ``ctime_ns``, which
no tool can set back (``touch -r``, ``cp -p`` and ``rsync -t`` restore the ``mtime_ns``: a
rewrite keeping size, inode and mtime served the old model's cached vectors), so a stale digest
is never reused; a warm run reads no weights at all. Set
``SKMOE_FINGERPRINT_MEMO=off`` to keep the memo in the process only. A memo file that cannot be
read or written is ignored (the digest is then computed again).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from .._stack import external_stacklevel
from .checkpoint import read_json
from .st_modules import module_files

#: Files that define how a text becomes token ids (whichever of them a model ships).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt",
)
_READ_SIZE = 8 << 20
_MEMO_LIMIT = 4096  # entries kept in the on-disk memo (most recent)
#: Parsed side configs that change how vectors are made (pooling, prompts, token limit).
SIDE_CONFIGS = ("config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                "modules.json", "1_Pooling/config.json")
_LOCK = threading.Lock()
_MEMO: dict[tuple, str] = {}  # (path, size, mtime_ns, inode, ctime_ns) -> sha256 hex, this process
_DISK: dict[str, list] | None = None  # the on-disk memo as read once by this process
_WARNED_UNWRITABLE = False


class MemoUnavailableWarning(UserWarning):
    """The on-disk digest memo cannot be written: each new process hashes the weights again."""


@dataclass(frozen=True)
class ModelFingerprint:
    """Digests of a model folder's weights, tokenizer files and parsed config."""

    weights: str
    tokenizer: str
    config: str

    def __str__(self) -> str:
        return f"{self.weights[:16]}-{self.tokenizer[:8]}-{self.config[:8]}"

    @classmethod
    def parse(cls, text: str) -> ModelFingerprint | None:
        """The parts of ``str(fingerprint)`` (None for another format, e.g. skmoe's older one)."""
        parts = text.split("-") if isinstance(text, str) else []
        if len(parts) != 3 or [len(p) for p in parts] != [16, 8, 8]:
            return None
        return cls(*parts)


def changed_parts(old: str, new: str) -> list[str]:
    """Which of weights / tokenizer / config differ between two fingerprint strings."""
    a, b = ModelFingerprint.parse(old), ModelFingerprint.parse(new)
    if a is None or b is None:
        return ["weights"] if old != new else []
    return [name for name in ("weights", "tokenizer", "config")
            if getattr(a, name) != getattr(b, name)]


def model_fingerprint(folder: Path, files: list[Path]) -> ModelFingerprint:
    """The fingerprint of the model in ``folder`` whose weights are ``files`` (safetensors)."""
    folder = Path(folder)
    module_weights, module_configs = module_files(folder)  # sentence-transformers Dense etc.
    weights = hashlib.sha256()
    for f in sorted(files, key=lambda p: Path(p).name):
        weights.update(f"{Path(f).name}\0{file_sha256(Path(f))}\n".encode())
    for name in module_weights:
        weights.update(f"{name}\0{file_sha256(folder / name)}\n".encode())
    tokenizer = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            tokenizer.update(f"{name}\0{file_sha256(path)}\n".encode())
    config = hashlib.sha256()
    for name in dict.fromkeys((*SIDE_CONFIGS, *module_configs)):
        path = folder / name
        if path.is_file():
            parsed = read_json(path, kind=object)  # errors name the file
            canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            config.update(f"{name}\0{canonical}\n".encode("ascii"))
    return ModelFingerprint(weights.hexdigest(), tokenizer.hexdigest(), config.hexdigest())


def legacy_fingerprint(folder: Path, files: list[Path]) -> str:
    """skmoe's first fingerprint (config bytes + 64 samples of the weights), kept only so that
    estimators fitted and pickled with it can be recognised as fitted on the same files."""
    h = hashlib.sha256()
    cfg = Path(folder) / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in files:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            h.update(fh.read(header_len))
            for i in range(64):
                fh.seek((size * i) // 64)
                h.update(fh.read(65536))
        h.update(str(size).encode())
    return h.hexdigest()[:16]


# -- per-file digests, memoised ------------------------------------------------------------------
def _stat_key(path: Path) -> tuple[str, int, int, int, int]:
    real = os.path.realpath(path)  # hub snapshots link to blobs: memoise the blob
    st = os.stat(real)
    return real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _hash_file(path: str) -> str:
    """sha256 of a file's bytes (the only place a fingerprint reads file contents)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_SIZE):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of ``path``, read only when its (path, size, mtime_ns, inode, ctime_ns) is new."""
    key = _stat_key(path)
    with _LOCK:
        found = _MEMO.get(key)
        if found is None:
            entry = _disk_memo().get(key[0])
            if entry is not None and tuple(entry[:-1]) == key[1:]:
                found = _MEMO[key] = entry[-1]
    if found is not None:
        return found
    digest = _hash_file(key[0])
    with _LOCK:
        _MEMO[key] = digest
        _remember_on_disk(key, digest)
    return digest


def memo_path() -> Path | None:
    """The on-disk memo file (None when ``SKMOE_FINGERPRINT_MEMO=off``)."""
    env = os.environ.get("SKMOE_FINGERPRINT_MEMO")
    if env is not None and env.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "skmoe" / "file-digests.json"


def _read_file(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("version") == 1 else {}


def _write_file(path: Path, data: dict) -> None:
    """Replace the memo file atomically (best effort: a failure leaves the memo in memory)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".file-digests.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({**data, "version": 1}, fh)
        os.replace(tmp, path)
    except OSError as exc:
        _warn_unwritable(path, exc)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _warn_unwritable(path: Path, exc: OSError) -> None:
    """Say once per process that the memo cannot be kept (a read-only HOME, a service user):
    without it a fully cached run still hashes and loads the weights in every new process."""
    global _WARNED_UNWRITABLE
    if _WARNED_UNWRITABLE:
        return
    _WARNED_UNWRITABLE = True
    warnings.warn(
        f"skmoe cannot write its file-digest memo {path} ({exc.strerror or exc}): every new "
        "process will hash the weights again and load the model even when the embedding cache "
        "holds every text. Set SKMOE_FINGERPRINT_MEMO to a writable file (or to 'off' to keep "
        "the memo in the process and silence this).", MemoUnavailableWarning,
        stacklevel=external_stacklevel())


def _read_memo(path: Path) -> dict[str, list]:
    files = _read_file(path).get("files", {})
    if not isinstance(files, dict):
        return {}
    # [size, mtime_ns, inode, ctime_ns, digest]; older 4-item entries are hashed again once
    return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 5}


def _disk_memo() -> dict[str, list]:
    global _DISK
    if _DISK is None:
        path = memo_path()
        _DISK = _read_memo(path) if path is not None else {}
    return _DISK


def _remember_on_disk(key: tuple[str, int, int, int, int], digest: str) -> None:
    """Merge one digest into the memo file (atomic replace; best effort)."""
    path = memo_path()
    if path is None:
        return
    data = _read_file(path)  # another process may have added some meanwhile
    entries = _read_memo(path)
    entries[key[0]] = [*key[1:], digest]
    data["files"] = dict(list(entries.items())[-_MEMO_LIMIT:])
    _disk_memo().update(data["files"])
    _write_file(path, data)


# -- what a loaded model told us, by fingerprint ----------------------------------------------
_CARDS: dict[str, dict] = {}


def remember_card(fingerprint: str, card: dict) -> None:
    """Keep facts read off a loaded model (width, token limit, pooling, prompt table) under its
    fingerprint, so later processes know them without loading the weights (best effort)."""
    card = json.loads(json.dumps(card))  # JSON-able, and a copy
    with _LOCK:
        if _CARDS.get(fingerprint) == card:
            return
        _CARDS[fingerprint] = card
        path = memo_path()
        if path is None:
            return
        data = _read_file(path)
        cards = data.get("cards", {})
        if cards.get(fingerprint) == card:  # kept already (the file may be read-only: fine)
            return
        cards[fingerprint] = card
        data["cards"] = dict(list(cards.items())[-256:])
        _write_file(path, data)


def known_card(fingerprint: str) -> dict | None:
    """The facts :func:`remember_card` kept for ``fingerprint`` (None when unknown)."""
    with _LOCK:
        card = _CARDS.get(fingerprint)
        if card is None:
            path = memo_path()
            found = _read_file(path).get("cards", {}).get(fingerprint) if path else None
            if isinstance(found, dict):
                card = _CARDS[fingerprint] = found
        return None if card is None else dict(card)


def forget_memo() -> None:
    """Drop this process's memo (as if it were a new process); the file stays."""
    global _DISK, _WARNED_UNWRITABLE
    with _LOCK:
        _MEMO.clear()
        _CARDS.clear()
        _DISK = None
        _WARNED_UNWRITABLE = False
