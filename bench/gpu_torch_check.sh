#!/usr/bin/env bash
# GPU check of the PyTorch engine (device=cuda): the live sharing test with two models on one
# NVIDIA GPU, no vLLM; reports per-iteration times and the arbiter's overhead.
#
#   bench/gpu_torch_check.sh              # from the repository root, on the GPU machine
#   DRY_RUN=1 bench/gpu_torch_check.sh    # the same check on this machine's CPU (tests do)
#
# Needs: one NVIDIA GPU with its driver, Python 3.11, PyPI through pip (PyPI's torch wheel for
# Linux x86_64 is the CUDA build; the models are random-weight ones built locally).
# Environment knobs:
#   VENV=.venv-gpu-torch     where to create the environment (reused when it exists)
#   TORCH_VERSION=2.13.0     the torch release the project pins (CUDA build from PyPI)
#   CHECK_ARGS="..."         extra arguments for bench/gpu_torch_check.py (see --help)
# Written for an H200-class GPU; it has not yet run on a GPU (docs/ENGINE.md, "CUDA").
set -euo pipefail

cd "$(dirname "$0")/.."
log() { printf '[gpu_torch_check %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  PY=${PY:-.venv/bin/python}
  log "dry run on the CPU with $PY"
  exec "$PY" -m bench.gpu_torch_check --dry-run ${CHECK_ARGS:-}
fi

VENV=${VENV:-.venv-gpu-torch}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PY="$VENV/bin/python"
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA GPU here" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv

if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
"$PY" -m pip install --upgrade --quiet pip
start=$SECONDS
log "installing torch==$TORCH_VERSION (CUDA build) and the project"
"$PY" -m pip install --quiet "torch==$TORCH_VERSION"
"$PY" -m pip install --quiet -e '.[dev]'
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PYEOF
log "install took $((SECONDS - start)) s"

out=${OUT:-.}/gpu_torch_check.json
"$PY" -m bench.gpu_torch_check --json "$out" ${CHECK_ARGS:-}
log "report written to $out"
