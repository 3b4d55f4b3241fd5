#!/usr/bin/env bash
# GPU check: serve MODEL with vLLM through the gateway, run one bf16 LoRA round beside it on the
# same CUDA device, print engine throughput (1 and 16 clients), step time and peak memory of both.
#
#   MODEL=/models/Qwen3-VL-2B-Instruct scripts/gpu-check.sh
#   MODEL=/models/Qwen3-VL-2B-Instruct WHEELS=/mnt/wheels scripts/gpu-check.sh   # offline machine
#
# Environment:
#   MODEL        local model folder (required; nothing is downloaded from a model hub)
#   WHEELS       folder of wheels for an offline machine: every install below takes them from it alone
#   VLLM_VENV    the CUDA vLLM environment (default .venv-vllm-gpu; made if missing)
#   VLLM_PYTHON  an existing python with CUDA vLLM instead of VLLM_VENV
#   VLLM         what VLLM_VENV installs (default vllm==0.32.0, the Docker image's)
#   GPU_UTIL     vLLM's share of the device, the rest is the trainer's (default 0.45)
#   OUT          keep the logs and metrics here (default: a temporary folder)
# The gateway and the trainer run from the project's .venv (`make install`; on a CUDA machine
# `pip install torch==2.13.0` takes the CUDA build).
# Further arguments go to bench/gpu_check.py (e.g. --clients 1,16 --requests 64 --rl-arg=--lr=1e-5).
set -euo pipefail

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
# Paths as given from here, before moving to the repository root.
MODEL="$(cd "$MODEL" && pwd)"
[[ -n "${WHEELS:-}" ]] && WHEELS="$(cd "$WHEELS" && pwd)"
[[ -n "${OUT:-}" ]] && mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
[[ -n "${VLLM_PYTHON:-}" && "$VLLM_PYTHON" == */* ]] && VLLM_PYTHON="$(cd "$(dirname "$VLLM_PYTHON")" && pwd)/$(basename "$VLLM_PYTHON")"
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VLLM_VENV="${VLLM_VENV:-.venv-vllm-gpu}"
VLLM="${VLLM:-vllm==0.32.0}"
if [[ -n "${WHEELS:-}" ]]; then
    # pip reads these in every install, make's included: nothing is fetched from an index
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS"
fi

make install PYTHON="$PYTHON"
if [[ -z "${VLLM_PYTHON:-}" ]]; then
    if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VLLM_VENV"
        # shellcheck disable=SC2086  # VLLM is a list of requirements
        "$VLLM_VENV/bin/pip" install --disable-pip-version-check $VLLM
    fi
    VLLM_PYTHON="$VLLM_VENV/bin/python"
fi
"$VLLM_PYTHON" -c "import vllm" 2>/dev/null || die "$VLLM_PYTHON cannot import vllm"

args=(--model "$MODEL" --vllm-python "$VLLM_PYTHON" --gpu-memory-utilization "$GPU_UTIL")
[[ -n "${OUT:-}" ]] && args+=(--out "$OUT")
exec .venv/bin/python bench/gpu_check.py "${args[@]}" "$@"
