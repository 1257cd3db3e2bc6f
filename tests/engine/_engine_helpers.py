"""Helpers shared by the engine tests (a unique module name: test folders share sys.path)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np


def sib200_texts(sib200_dir: Path, per_language: int, split: str = "test") -> list[str]:
    """``per_language`` sentences from each of the 32 languages, languages interleaved."""
    by_lang = []
    for folder in sorted(p for p in sib200_dir.iterdir() if p.is_dir()):
        with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        by_lang.append([r["text"] for r in rows[:per_language]])
    return [t for group in zip(*by_lang, strict=True) for t in group]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
