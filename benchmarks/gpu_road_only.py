"""The road rows of gpu_bench.py alone (a short device call): ``python benchmarks/gpu_road_only.py``
(``--dry`` anything as first argument: tiny config on the CPU)."""
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, "benchmarks")
from bench_common import PROMPT, build_random_checkpoint
from gpu_bench import TINY_CONFIG, Clock, sample_by_language
from gpu_road import road_lines

dry = len(sys.argv) > 1
corpus = json.loads(Path("benchmarks/gpu_inputs/corpus.json").read_text())
config = TINY_CONFIG if dry else json.loads(Path("benchmarks/gpu_inputs/config.json").read_text())
device = "cpu" if dry else "cuda"
texts, _ = sample_by_language(corpus, 512 if dry else 65536)
folder = build_random_checkpoint(config, Path(tempfile.mkdtemp()) / "moe")
t = time.perf_counter()
lines = road_lines(config, folder, Path("benchmarks/gpu_inputs/tokenizer"), device, texts, PROMPT, Clock(device), 1 if dry else 3)
print("\n".join(lines), f"\n({time.perf_counter() - t:.0f} s)")
