#!/usr/bin/env bash
# GPU check (one machine, no network, < 15 minutes on one GPU): the library's own path on CUDA:
# scoring as a Ray task, run_training on Ray Train (2 NCCL workers where 2 GPUs exist, else 1; bf16
# autocast), partial checkpoints + the final export, the export reloaded through load_model, one
# request to the Serve VQA app, one vLLM caption when vLLM is installed; step time, tokens/s and
# achieved TFLOP/s. Details: benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                          # from the repo root (or in the GPU image: /app)
#   bash benchmarks/gpu_check.sh --json /tmp/gpu.json --steps 60 --methods masked_sparse full lora
#   bash benchmarks/gpu_check.sh --device cpu --tiny      # the CPU smoke: same path, gloo, tiny model
#
# Needs PyTorch (CUDA build), transformers, Ray and the repo; vLLM optional. Exit 0: passed (or no GPU
# and no --device cpu: "no CUDA device: skipping"); 1: a check failed; 124: ran past the hard limit.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python; fi
fi

# Nothing may reach a network: model hubs off, Ray's usage report off.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

cpu=0
for a in "$@"; do [[ "$a" == "cpu" || "$a" == "--device=cpu" ]] && cpu=1; done
if [[ $cpu == 0 ]]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "no CUDA device: skipping (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing); --device cpu runs the smoke)"
    exit 0
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi

# The budget is 15 minutes; the hard limit stops a hung run just past it, with what it printed so far.
exec timeout --signal=INT --kill-after=30 930 "$PY" benchmarks/gpu_check.py "$@"
