#!/usr/bin/env bash
# GPU check of the vLLM engine: two VllmEngine(device="cuda") instances of different models in
# one process on one NVIDIA GPU, stepped in turn; sleep/wake; kvcached resize when available.
#
#   bench/gpu_check.sh                  # from the repository root, on the GPU machine
#
# Needs: one NVIDIA GPU with its driver, Python 3.11, PyPI through pip (nothing else is
# downloaded: the models are random-weight ones built locally by slinfer.models).
# Environment knobs:
#   VENV=.venv-gpu           where to create the environment (reused when it exists)
#   VLLM_VERSION=0.32.0      the vLLM whose internals vllm_engine.py was written against
#   WITH_KVCACHED=1          try to install kvcached (a failure is reported, not fatal)
#   GPU_CHECK_ARGS="..."     extra arguments for bench/gpu_check.py (see --help)
# Written for an H200-class GPU; it has not yet run on a GPU (docs/VLLM.md).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
WITH_KVCACHED=${WITH_KVCACHED:-1}
PY="$VENV/bin/python"

log() { printf '[gpu_check %(%H:%M:%S)T] %s\n' -1 "$*"; }

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA GPU here" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv

if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
"$PY" -m pip install --upgrade --quiet pip

start=$SECONDS
log "installing vllm==$VLLM_VERSION (brings its CUDA torch)"
"$PY" -m pip install --quiet "vllm==$VLLM_VERSION" psutil
# The project pins the CPU torch build; on the GPU machine vLLM's CUDA torch (and the
# transformers it chose) must stay: install the project's other dependencies, then the project
# itself without dependencies.
mapfile -t deps < <("$PY" - <<'EOF'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    if re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0].lower() not in ("torch", "transformers"):
        print(dep)
EOF
)
"$PY" -m pip install --quiet "${deps[@]}" "vllm==$VLLM_VERSION"
"$PY" -m pip install --quiet --no-deps -e .
log "install took $((SECONDS - start)) s"

if [[ "$WITH_KVCACHED" == 1 ]]; then
  if "$PY" -m pip install --quiet kvcached --no-build-isolation; then
    log "kvcached installed: elastic KV enabled for this run"
  else
    log "kvcached did not install: continuing with fixed KV pools"
  fi
fi

if "$PY" -c "import kvcached" 2>/dev/null; then
  # kvcached patches vLLM at import time; its limit is per process (KVCACHED_IPC_NAME).
  export ENABLE_KVCACHED=true KVCACHED_AUTOPATCH=1
  export KVCACHED_IPC_NAME="slinfer_gpu_check_$$"
fi

"$PY" - <<'EOF'
import torch, vllm
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0)}")
EOF

log "running bench/gpu_check.py ${GPU_CHECK_ARGS:-}"
# shellcheck disable=SC2086
"$PY" -m bench.gpu_check ${GPU_CHECK_ARGS:-}
