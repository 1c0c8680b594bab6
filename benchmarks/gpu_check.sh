#!/usr/bin/env bash
# GPU check (one NVIDIA GPU, no network, < 5 minutes): masked DDP training on CUDA through Ray Train
# (NCCL, 1 worker, bf16 autocast) with frozen entries verified, the Serve VQA app on the GPU
# answering one request, and step time / tokens/s / achieved TFLOP/s. Details: benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                      # from the repo root (or in the GPU image: /app)
#   bash benchmarks/gpu_check.sh --json /tmp/gpu.json --steps 50
#
# Needs PyTorch (CUDA build), transformers, Ray and the repo; not vLLM. Exit 0: passed (or no GPU:
# "no CUDA device: skipping"); 1: a check failed; 124: ran past the hard limit.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python; fi
fi

# Nothing may reach a network: model hubs off, Ray's usage report off.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export TOKENIZERS_PARALLELISM=false

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "no CUDA device: skipping (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing))"
  exit 0
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# The budget is 5 minutes; the hard limit leaves room to report a slow machine instead of hanging.
exec timeout --signal=INT --kill-after=30 600 "$PY" benchmarks/gpu_check.py "$@"
