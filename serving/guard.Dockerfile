# TaigiMed guard: the InferenceService transformer (guardrails, review queue, feedback, metrics).
# It needs no torch, so the image stays small.
# Build from the repository root:  docker build -f serving/guard.Dockerfile -t taigimed-guard .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY serving/requirements-guard.txt ./
RUN pip install -r requirements-guard.txt

COPY pyproject.toml README.md ./
COPY src ./src
COPY configs ./configs
RUN pip install --no-deps . \
    && useradd --uid 10001 --create-home taigimed \
    && mkdir -p /var/lib/taigimed && chown taigimed /var/lib/taigimed
USER 10001
# The SQLite review store lives here; mount a PVC (or pass a PostgreSQL review.store_url).
VOLUME /var/lib/taigimed

# KServe passes --predictor_host (and --model_name, --http_port) to transformer containers;
# the guard accepts those names. Tokens come from TAIGIMED_API_TOKENS / TAIGIMED_REVIEWER_TOKENS.
EXPOSE 8080
ENTRYPOINT ["python", "-m", "taigimed.serve.guard", "--host", "0.0.0.0", \
            "--config", "configs/gpu-8b/serve.yaml"]
