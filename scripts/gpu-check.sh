#!/usr/bin/env bash
# GPU check: serve MODEL with vLLM through the gateway, run one bf16 LoRA round beside it on the
# same CUDA device, print engine throughput (1 and 16 clients), step time and peak memory of both.
#
#   MODEL=/models/Qwen3-VL-2B-Instruct scripts/gpu-check.sh
#   MODEL=/models/Qwen3-VL-2B-Instruct WHEELS=/mnt/wheels scripts/gpu-check.sh   # offline machine
#
# Environment:
#   MODEL        local model folder (required; nothing is downloaded from a model hub)
#   WHEELS       folder of wheels for an offline machine: both environments install from it alone
#   VENV         the project's environment (default .venv-gpu; made with the CUDA torch if missing)
#   VLLM_VENV    the CUDA vLLM environment (default .venv-gpu-vllm; made if missing)
#   VLLM_PYTHON  an existing python with CUDA vLLM instead of VLLM_VENV
#   GPU_UTIL     vLLM's share of the device, the rest is the trainer's (default 0.45)
#   TORCH, VLLM  requirements to install (defaults torch==2.13.0, vllm: the GPU builds)
#   OUT          keep the logs and metrics here (default: a temporary folder)
# Further arguments go to bench/gpu_check.py (e.g. --clients 1,16 --requests 64 --rl-arg=--lr=1e-5).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu-check: $*" >&2; exit 2; }

[[ -n "${MODEL:-}" ]] || die "set MODEL to a local model folder, e.g. MODEL=/models/Qwen3-VL-2B-Instruct $0"
[[ -f "$MODEL/config.json" ]] || die "MODEL=$MODEL is not a local model folder (no config.json there)"
if [[ -n "${WHEELS:-}" ]]; then
    [[ -d "$WHEELS" ]] || die "WHEELS=$WHEELS is not a folder of wheels"
fi
GPU_UTIL="${GPU_UTIL:-0.45}"
awk -v u="$GPU_UTIL" 'BEGIN { exit !(u > 0 && u < 1) }' || die "GPU_UTIL=$GPU_UTIL must be between 0 and 1"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this check needs a CUDA machine with the NVIDIA driver"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi lists no GPU: this check needs a CUDA device"

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-gpu}"
VLLM_VENV="${VLLM_VENV:-.venv-gpu-vllm}"
TORCH="${TORCH:-torch==2.13.0}"
VLLM="${VLLM:-vllm}"
PIP_SOURCE=()
[[ -n "${WHEELS:-}" ]] && PIP_SOURCE=(--no-index --find-links "$WHEELS")

# shellcheck disable=SC2086  # TORCH and VLLM are lists of requirements
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check "${PIP_SOURCE[@]}" $TORCH
    "$VENV/bin/pip" install --disable-pip-version-check "${PIP_SOURCE[@]}" -e ".[serve,rl]"
fi
if [[ -z "${VLLM_PYTHON:-}" ]]; then
    if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VLLM_VENV"
        "$VLLM_VENV/bin/pip" install --disable-pip-version-check "${PIP_SOURCE[@]}" $VLLM
    fi
    VLLM_PYTHON="$VLLM_VENV/bin/python"
fi
"$VLLM_PYTHON" -c "import vllm" 2>/dev/null || die "$VLLM_PYTHON cannot import vllm"

args=(--model "$MODEL" --vllm-python "$VLLM_PYTHON" --gpu-memory-utilization "$GPU_UTIL")
[[ -n "${OUT:-}" ]] && args+=(--out "$OUT")
exec "$VENV/bin/python" bench/gpu_check.py "${args[@]}" "$@"
