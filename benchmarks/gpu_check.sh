#!/usr/bin/env bash
# The GPU checks in one run, on a machine with an NVIDIA GPU and harmosearch[gpu] installed:
#
#     bash benchmarks/gpu_check.sh [PYTHON]          (N=2000000 MODEL=harmo-tiny by default)
#
# 1. the GPU tests (pytest -m gpu: encoding on CUDA against the CPU, FAISS built and searched on
#    the GPU against exact search and the CPU, training steps with AMP, DDP when there are 2 GPUs);
#    their outcome is appended to benchmarks/results/gpu_check.jsonl with the card (nvidia-smi);
#    every skip is listed with its reason, and any skip but "needs more GPUs than this machine
#    has" fails the check (benchmarks/gpu_check_skips.py);
# 2. benchmarks/encode.py and benchmarks/train_step.py on the GPU, and benchmarks/large_index.py
#    with N region vectors built and searched on the GPU; each appends its record, with the card's
#    name as torch reports it, to benchmarks/results/<name>.jsonl.
# Every step runs even when one before it failed; the exit code is 1 when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
N=${N:-2000000}
MODEL=${MODEL:-harmo-tiny}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1) \
    || [ -z "$card" ]; then
    echo "gpu_check: nvidia-smi finds no NVIDIA GPU" >&2
    exit 2
fi
echo "card: $card"
"$PY" - <<'EOF' || exit 2
import sys

import torch

from harmosearch.model.device import faiss_module, gpu_count
from harmosearch.errors import ConfigError

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (a CPU build of torch?)")
try:
    faiss_module()
except ConfigError as exc:  # faiss-cpu and faiss-gpu clash, or faiss cannot be imported
    sys.exit(f"gpu_check: {exc}")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}; faiss sees {gpu_count()} GPU(s)")
EOF
faiss_gpus=$("$PY" -c 'from harmosearch.model.device import gpu_count; print(gpu_count())' 2>/dev/null || echo 0)

failed=0
log=$(mktemp)
# One process (-n 0): the GPU tests share the card, and the two-GPU test starts its own processes.
"$PY" -m pytest -m gpu tests/test_gpu.py -q -rs -n 0 -p no:cacheprovider 2>&1 | tee "$log"
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" -eq 0 ] || failed=1
"$PY" - "$card" "$tests_rc" "$log" "$faiss_gpus" <<'EOF' || failed=1
import json
import sys
import time
from pathlib import Path

card, rc, log = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]).read_text().splitlines()
record = {
    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    "command": "bash benchmarks/gpu_check.sh",
    "card": card,
    "faiss_gpus": int(sys.argv[4]),
    "pytest_exit_code": rc,
    "summary": log[-1] if log else "",
    "skipped": [line for line in log if line.startswith("SKIPPED")],
}
with open("benchmarks/results/gpu_check.jsonl", "a") as f:
    f.write(json.dumps(record) + "\n")
print(f"appended to benchmarks/results/gpu_check.jsonl: {record['summary']}")
EOF
"$PY" benchmarks/gpu_check_skips.py "$log" || failed=1  # a skipped GPU test is a check not run
rm -f "$log"

workdir=$(mktemp -d)
steps=("benchmarks/encode.py --device cuda --model $MODEL --n 512 --batch 128 --rounds 3"
       "benchmarks/train_step.py --device cuda --batch 64 --steps 6")
if [ "$faiss_gpus" -gt 0 ]; then
    steps+=("benchmarks/large_index.py --n $N --threads $(nproc) --faiss-gpu --workdir $workdir")
else  # a search on the CPU would say nothing about the GPU: the check is incomplete
    echo "gpu_check: incomplete: faiss sees no GPU (faiss-cpu installed?), so the FAISS GPU benchmark is not run" >&2
    failed=1
fi
for step in "${steps[@]}"; do
    echo "== python $step"
    # shellcheck disable=SC2086  # each step is a command line to split
    "$PY" $step || { echo "gpu_check: failed: python $step" >&2; failed=1; }
done
rm -rf "$workdir"
exit "$failed"
