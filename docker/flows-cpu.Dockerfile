# syntax=docker/dockerfile:1
#
# Slim CPU image for the orchestration side: `prefect server start`, the Prefect workers and
# `mlflow server` (the stack gives each its command), and the edit/batch flow runs of the
# imagic-cpu pool. No GPU, no CUDA: torch is the CPU build.
#   docker build -f docker/flows-cpu.Dockerfile -t imagic-pipeline/flows-cpu:0.1.0 .
#   docker run --rm -p 4200:4200 imagic-pipeline/flows-cpu:0.1.0 prefect server start --host 0.0.0.0
#   docker run --rm imagic-pipeline/flows-cpu:0.1.0 prefect worker start --pool imagic-gpu --type docker --with-healthcheck
#   docker run --rm -p 5000:5000 imagic-pipeline/flows-cpu:0.1.0 mlflow server --host 0.0.0.0 \
#       --backend-store-uri postgresql://... --artifacts-destination s3://...
#
# Base: python:3.11.14-slim-bookworm, the same Python minor (3.11) as the step image's base, on
# Debian 12, pinned to the patch release.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: a venv with CPU torch, the pinned dependencies and the project ----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch from PyTorch's CPU index (about 200 MB instead of several GB of CUDA wheels), the same
# version as the step image's base (keep the two in step). --no-deps: its dependencies come
# from PyPI at the pinned versions below, like in the step image.
ARG TORCH_VERSION=2.9.1
RUN python -m pip install --no-cache-dir --no-deps \
        --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

COPY docker/constraints.txt /tmp/constraints.txt
# The pinned dependencies, then what only this image needs: prefect-docker (the docker work
# pool's worker, which starts the step containers), psycopg2-binary (MLflow's PostgreSQL
# backend store; Prefect's PostgreSQL driver, asyncpg, is already a Prefect dependency).
RUN python -m pip install --no-cache-dir -r /tmp/constraints.txt -c /tmp/constraints.txt \
    && python -m pip install --no-cache-dir -c /tmp/constraints.txt \
        "prefect-docker==0.7.4" "python-on-whales==0.81.0" "psycopg2-binary==2.9.13"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY imagic ./imagic
COPY steps ./steps
COPY flows ./flows
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
    && python -m pip install --no-cache-dir -c /tmp/constraints.txt /tmp/dist/*.whl \
    && python -m pip check \
    && python -c "import torch, imagic, flows, prefect_docker, psycopg2; print('torch', torch.__version__)"

# ---- final: the slim base, the venv, a non-root user ---------------------------------------
FROM ${PYTHON_IMAGE}

ARG GIT_COMMIT=""
ARG IMAGE_REF="imagic-pipeline/flows-cpu:0.1.0"

LABEL org.opencontainers.image.title="imagic-pipeline flows (CPU)" \
      org.opencontainers.image.description="Prefect server/workers, MLflow server and the imagic orchestration flows" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_COMMIT}"

# Same fixed uid/gid as the step image. A docker-pool worker also needs the Docker socket
# (mount it, and add its group with `group_add`); that is the stack's choice, not the image's.
RUN groupadd --gid 10001 imagic \
    && useradd --no-log-init --uid 10001 --gid 10001 --create-home --home-dir /home/imagic \
       --shell /usr/sbin/nologin imagic

COPY --from=builder /opt/venv /opt/venv

# IMAGIC_CONTAINER is deliberately not set: this image runs servers and workers, started by
# their own commands (not `python -m steps`), and neither `prefect server` nor `mlflow server`
# needs IMAGIC_STORE or a model cache. Flow runs get IMAGIC_STORE and MLFLOW_TRACKING_URI from
# the worker's environment or the pool's job variables.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/imagic \
    IMAGIC_GIT_COMMIT=${GIT_COMMIT} \
    IMAGIC_CONTAINER_IMAGE=${IMAGE_REF} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_PYTHON_REFRESH=quiet

USER 10001:10001
WORKDIR /home/imagic

# Prefect UI/API, MLflow, a worker's --with-healthcheck endpoint.
EXPOSE 4200 5000 8080

# No image-wide health check: one image serves several commands, each with its own endpoint
# (prefect server: :4200/api/health, mlflow server: :5000/health, a worker started with
# --with-healthcheck: :8080/health). The compose file or pod spec sets one per service.
HEALTHCHECK NONE

# No fixed ENTRYPOINT for the same reason: the stack passes the whole command.
CMD ["prefect", "--help"]
