#!/usr/bin/env bash
# Build llama-cpp-python (the engine ollama users run) from PyPI into its own venv, and unpack its
# sdist beside it for llama.cpp's convert_hf_to_gguf.py and gguf-py (the converter is not in the wheel).
#
# Usage: bash bench/realsize/setup_llamacpp.sh [VENV_DIR]   (default: .venv-llamacpp in the repo root)
# Prints the build's wall time; on 2 cores it builds from source in about 15 minutes (AVX2/AVX-512).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_DIR="${1:-${GLIMP_LLAMACPP_VENV:-$REPO_ROOT/.venv-llamacpp}}"
PYTHON="${GLIMP_LLAMACPP_PYTHON:-python3.11}"
VERSION="${GLIMP_LLAMACPP_VERSION:-0.3.36}"

started=$(date +%s)
"$PYTHON" -m venv "$VENV_DIR"
PIP="$VENV_DIR/bin/python -m pip"
$PIP install -q --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" $PIP install -q "llama-cpp-python==$VERSION"
built=$(date +%s)
# The sdist carries vendor/llama.cpp/convert_hf_to_gguf.py and vendor/llama.cpp/gguf-py.
$PIP download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$VENV_DIR/sdist"
tar -xzf "$VENV_DIR"/sdist/llama_cpp_python-"$VERSION".tar.gz -C "$VENV_DIR/sdist"
"$VENV_DIR/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
echo "build_s $((built - started))"
