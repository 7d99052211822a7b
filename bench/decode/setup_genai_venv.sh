#!/usr/bin/env bash
# Build the separate virtual environment that holds onnxruntime-genai and its model builder.
#
# Why a separate venv: onnxruntime-genai depends on plain `onnxruntime`, which must never sit
# beside the project's `onnxruntime-gpu` in .venv; its builder also needs transformers >= 5
# (the project pins 4.57.6) plus onnx_ir and onnxscript.
#
# Usage: bash bench/decode/setup_genai_venv.sh [VENV_DIR]   (default: .venv-genai in the repo root)
# torch stays pinned (torch==2.13.0, CPU wheel): an unpinned torch pulls gigabytes of CUDA wheels.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_DIR="${1:-${GLIMP_GENAI_VENV:-$REPO_ROOT/.venv-genai}}"
PYTHON="${GLIMP_GENAI_PYTHON:-python3.11}"
GENAI_VERSION="${GLIMP_GENAI_VERSION:-0.18.0}"

"$PYTHON" -m venv "$VENV_DIR"
PIP="$VENV_DIR/bin/python -m pip"
$PIP install -q --upgrade pip
# CPU-only torch first, from PyTorch's CPU index when reachable (else a local wheel / find-links).
$PIP install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
  || $PIP install -q "torch==2.13.0"
$PIP install -q "onnxruntime-genai==$GENAI_VERSION" "transformers>=5" onnx onnx_ir onnxscript \
  numpy safetensors
"$VENV_DIR/bin/python" -c "import onnxruntime_genai as og, onnxruntime as ort, transformers, torch; \
print('onnxruntime-genai', og.__version__, 'onnxruntime', ort.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__)"
