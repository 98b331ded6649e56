# TaigiMed CPU predictor: a kserve.Model over transformers with OpenAI-compatible routes.
# On GPU nodes the predictor is vLLM instead (manifests/base/servingruntime-vllm.yaml);
# this image is for CPU clusters, dev overlays and debugging.
# Build from the repository root:  docker build -f serving/predictor.Dockerfile -t taigimed-predictor .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /app

# torch from the CPU wheel index, pinned by constraints.txt (an unpinned torch is a CUDA build).
COPY requirements.txt constraints.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt -r requirements.txt

COPY pyproject.toml README.md ./
COPY src ./src
COPY configs ./configs
RUN pip install --no-deps . && useradd --uid 10001 --create-home taigimed
USER 10001

# KServe mounts the model from storageUri at /mnt/models and routes traffic to port 8080.
EXPOSE 8080
ENTRYPOINT ["python", "-m", "taigimed.serve.predictor", "--model-dir", "/mnt/models", \
            "--host", "0.0.0.0", "--port", "8080", "--config", "configs/demo-cpu/serve.yaml"]
