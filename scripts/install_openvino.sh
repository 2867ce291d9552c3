#!/usr/bin/env bash
# Install OpenVINO GenAI (the default CPU engine) into an existing virtual environment,
# without disturbing its torch build.
#
#   scripts/install_openvino.sh [VENV_PYTHON]      (default: .venv/bin/python)
#
# Idempotent: does nothing when openvino-genai $OV_GENAI_VERSION already imports there.
# - installs openvino-genai (which brings openvino and openvino-tokenizers, nothing else)
#   under a constraints file pinning the environment's torch, transformers and numpy, so pip
#   can never swap in another torch (PyPI's default torch for Linux is a multi-GB CUDA build);
# - no optimum-intel and no nncf: slinfer converts and quantizes models itself
#   (services/worker/engine/ov_graph.py, ov_weights.py);
# - checks that the pipeline imports and that torch is still the pinned CPU build.
set -euo pipefail

OV_GENAI_VERSION=2026.4.1.0
TORCH_VERSION=2.13.0
PY=${1:-.venv/bin/python}

if [[ ! -x "$PY" ]]; then
  echo "install_openvino: $PY is not an executable Python (pass the venv's bin/python)" >&2
  exit 2
fi

if "$PY" - "$OV_GENAI_VERSION" <<'PYEOF' 2>/dev/null
import sys
import openvino_genai
sys.exit(0 if openvino_genai.__version__.startswith(sys.argv[1]) else 1)
PYEOF
then
  echo "install_openvino: openvino-genai $OV_GENAI_VERSION already importable in $PY; nothing to do"
  exit 0
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PY" - "$TORCH_VERSION" > "$constraints" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = {"torch": sys.argv[1]}
for name in ("transformers", "numpy", "tokenizers"):
    try:
        pins[name] = version(name)
    except PackageNotFoundError:
        pass
for name, v in pins.items():
    print(f"{name}=={v}")
PYEOF
echo "install_openvino: openvino-genai==$OV_GENAI_VERSION with constraints: $(tr '\n' ' ' < "$constraints")"
"$PY" -m pip install -q -c "$constraints" "openvino-genai==$OV_GENAI_VERSION"

"$PY" - "$TORCH_VERSION" <<'PYEOF'
import sys
import torch
import openvino, openvino_genai
assert torch.__version__.startswith(sys.argv[1]) and "+cpu" in torch.__version__, torch.__version__
print(f"install_openvino: ok: openvino {openvino.get_version()}, "
      f"openvino-genai {openvino_genai.__version__}, torch {torch.__version__}")
PYEOF
