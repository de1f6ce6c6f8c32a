#!/bin/bash
# Every GPU figure of benchmarks/RESULTS.md in one run (about 4 minutes on one H100), for a session that has a GPU
# for a few minutes: the CUDA paste test, speed side by side, time by stage, scaling, and the default weights
# evaluated on the GPU. Each step has its own time limit, so that one stall does not cost the others.
#     bash benchmarks/run_gpu.sh            (from the repository root; LIVECell mini in ../shared/data)
set -u
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "run_gpu.sh: no CUDA device here (torch.cuda.is_available() is False); the CPU figures have their own commands"
    exit 1
fi
data=../shared/data/livecell-mini/val
run() { echo "=== $*"; timeout 300 "$@" || echo "=== failed or timed out: $*"; }
run python3 -m pytest -q -p no:cacheprovider tests/test_paste.py
run python3 benchmarks/bench_speed.py --device cuda --repeats 5
run python3 benchmarks/bench_inference_stages.py --device cuda --repeats 5
run python3 benchmarks/bench_scaling.py --device cuda
run python3 -m napari_cellboxify.cli evaluate --data "$data/annotations.json" --images "$data/images" \
    --out "${TMPDIR:-/tmp}/cellboxify_eval_cuda" --device cuda
