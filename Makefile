# The whole set-up on a fresh machine is one of two commands:
#   make run    install into .venv, then serve the tiny model with the demo (offline)
#   make test   install into .venv, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast run bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[serve,rl,demo,dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest

# Everything but the slow, vllm and browser tests (CI runs them all).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not vllm and not browser"

# The gateway on the shipped tiny model at http://127.0.0.1:8000/v1 with the online RL loop
# beside it, learning from graded interactions and feedback (Ctrl-C stops both).
run: install
	$(BIN)/openvlthinker up --run-dir runs/up

bench: install
	$(BIN)/python bench/advantages.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
