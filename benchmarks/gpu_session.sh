#!/usr/bin/env bash
# Everything a session lent a GPU runs, in one device call (under 10 minutes):
#   1. tests/test_device_paths.py on CUDA (what users run: transform with a cache, long texts,
#      LearnedPooling, routing statistics, PairFeatures, `skmoe embed`, and the torchao modes
#      through the estimator when a torchao wheel is carried), at most 2 minutes;
#   2. benchmarks/gpu_bench.py (speed, MFU, profile, torchao modes, the road, torch.compile).
# Before the call, on this machine (.assets is git-ignored; the tests and the bench's road rows
# both take the XLM-R tokenizer from it):
#   mkdir -p .assets
#   cp -r $SKMOE_TEST_ASSETS/xlmr-tokenizer $SKMOE_TEST_ASSETS/.xlmr-tokenizer.built .assets/
#   (optional, for the torchao rows: a torchao wheel in .whl/, see the device README; torchao
#   0.17.0 ran with the device's torch 2.11 on 2026-12-04)
# Device call: command `bash benchmarks/gpu_session.sh`, carry [".assets", ".whl"],
#   timeout_s 590.
# Outputs land in $OUT: device_paths.txt, gpu_log.txt, gpu_results.md/.json, gpu_partial.json.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/skmoe-gpu-out}"
mkdir -p "$OUT"
if ls .whl/torchao-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,driver_version --format=csv || echo "no nvidia-smi"; } 2>&1 | tee "$OUT/device_paths.txt"
SKMOE_TEST_ASSETS="$PWD/.assets" timeout 120 python3 -m pytest -q -p no:cacheprovider \
    tests/test_device_paths.py 2>&1 | tee -a "$OUT/device_paths.txt"
python3 benchmarks/gpu_bench.py --inputs benchmarks/gpu_inputs --out "$OUT" --budget-s 330 \
    --tokenizer-dir .assets/xlmr-tokenizer --no-append "$@" 2>&1 | tee "$OUT/gpu_log.txt"
