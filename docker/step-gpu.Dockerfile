# syntax=docker/dockerfile:1
#
# GPU step image: one image for every stage, the stage chosen by argument.
#   docker build -f docker/step-gpu.Dockerfile -t imagic-pipeline/step-gpu:0.1.0 \
#       --build-arg GIT_COMMIT="$(git rev-parse HEAD)" .
#   docker run --rm --gpus 1 -e IMAGIC_STORE=s3://imagic/store -e MLFLOW_TRACKING_URI=http://mlflow:5000 \
#       -v imagic-model-cache:/home/imagic/.cache/huggingface -i imagic-pipeline/step-gpu:0.1.0 \
#       optimize --request - < optimize.json
# A Prefect docker worker runs the stage flows of prefect.yaml in it as
# `python -m steps prefect flow-run execute`. See README "Containerized steps".
#
# Base: the official PyTorch runtime image, pinned by tag. 2.9.1-cuda12.8-cudnn9-runtime is
# torch 2.9.1 built for CUDA 12.8 with cuDNN 9, on Ubuntu 24.04 with conda's Python 3.11 in
# /opt/conda. The runtime flavour has no compilers or CUDA toolkit (the CUDA libraries come with
# torch's wheels): smaller, and nothing here compiles kernels. torch must be >= 2.6 because the
# pinned transformers 5.x disables PyTorch below that; CUDA 12.8 covers Volta to Blackwell
# GPUs (the host needs an NVIDIA driver for CUDA 12.x). To move torch, change BASE_IMAGE, and
# TORCH_VERSION in flows-cpu.Dockerfile with it, so both images run the same torch.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

# ---- builder: the project wheel and a venv of its pinned dependencies ----------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# The venv sees the base's site-packages, so pip finds torch (and its CUDA wheels) installed
# and satisfies `torch>=2.4` with it: torch is never downloaded again (constraints.txt has no
# torch, nvidia-* or triton pins). Only this venv is copied into the final stage.
RUN python -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from the pinned list alone: this layer is rebuilt only when
# constraints.txt changes, not on every code change.
COPY docker/constraints.txt /tmp/constraints.txt
RUN python -m pip install --no-cache-dir -r /tmp/constraints.txt -c /tmp/constraints.txt

WORKDIR /src
COPY pyproject.toml README.md ./
COPY imagic ./imagic
COPY steps ./steps
COPY flows ./flows
# Build a wheel (a regular install, not an editable one), then install it under the same
# constraints: anything the project needs beyond the pinned list fails the build here.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
    && python -m pip install --no-cache-dir -c /tmp/constraints.txt /tmp/dist/*.whl \
    && python -c "import torch, imagic, steps, flows; print('torch', torch.__version__, 'imagic', imagic.__version__)"

# ---- final: the base image, the venv, a non-root user -------------------------------------
FROM ${BASE_IMAGE}

# GIT_COMMIT and IMAGE_REF become MLflow tags of every run (imagic.git_commit,
# imagic.container_image): .git is not in the build context, so the commit comes as an argument.
ARG GIT_COMMIT=""
ARG IMAGE_REF="imagic-pipeline/step-gpu:0.1.0"

LABEL org.opencontainers.image.title="imagic-pipeline step (GPU)" \
      org.opencontainers.image.description="Imagic stages as containers: python -m steps <optimize|finetune|generate|prefect>" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_COMMIT}"

# A fixed uid/gid (10001), so that volumes and pod securityContexts can grant it access.
# The cache folder is created (and owned) before VOLUME: a new named volume is initialised
# from it, so it starts out writable by this user.
RUN groupadd --gid 10001 imagic \
    && useradd --no-log-init --uid 10001 --gid 10001 --create-home --home-dir /home/imagic \
       --shell /usr/sbin/nologin imagic \
    && mkdir -p /home/imagic/.cache/huggingface \
    && chown -R 10001:10001 /home/imagic

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/imagic \
    HF_HOME=/home/imagic/.cache/huggingface \
    IMAGIC_CONTAINER=1 \
    IMAGIC_GIT_COMMIT=${GIT_COMMIT} \
    IMAGIC_CONTAINER_IMAGE=${IMAGE_REF} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_PYTHON_REFRESH=quiet

# Model downloads (diffusers/transformers hub cache): keep them across runs. prefect.yaml
# mounts the named volume imagic-model-cache here.
VOLUME ["/home/imagic/.cache/huggingface"]

USER 10001:10001
WORKDIR /home/imagic

# No health check: a step runs to completion and exits (0 success, 2 user error, 1 failure);
# the worker or Kubernetes watches the exit code, and there is no server to probe.
HEALTHCHECK NONE

ENTRYPOINT ["python", "-m", "steps"]
CMD ["--help"]
