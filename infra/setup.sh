#!/usr/bin/env bash
# Prefect objects of the imagic stack, made against $PREFECT_API_URL; every step is idempotent.
# The one-shot `setup` service of infra/compose.yaml runs it from the repository (mounted
# read-only at /app) on every `docker compose up`; by hand: `bash infra/setup.sh` from a checkout
# with the project installed and the variables below set.
#
#   imagic-cpu   process pool: the edit and batch flows (the worker-cpu service)
#   imagic-gpu   docker pool: each stage in a container of the step image with one GPU; its
#                template attaches the stage containers to the stack's network and gives them
#                the store, MLflow and S3 settings (keys through Prefect Secret blocks)
#   gpu          the tag concurrency limit on the stages' `gpu` tasks: the number of GPUs
#   prefect deploy --all   the five deployments of prefect.yaml
#
# Variables: PREFECT_API_URL (required); IMAGIC_GPU_SLOTS (default 1); IMAGIC_DOCKER_NETWORK
# (default imagic-pipeline); passed to the stage containers: IMAGIC_STORE,
# IMAGIC_S3_ENDPOINT_URL, IMAGIC_S3_MAX_ATTEMPTS, AWS_DEFAULT_REGION, MLFLOW_TRACKING_URI,
# HF_HUB_OFFLINE, and as Secret blocks AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server API, e.g. http://prefect-server:4200/api}"
slots="${IMAGIC_GPU_SLOTS:-1}"
network="${IMAGIC_DOCKER_NETWORK:-imagic-pipeline}"
template="$(mktemp)"
trap 'rm -f "$template"' EXIT

run() {
  echo "+ prefect $*"
  prefect --no-prompt "$@"
}

run work-pool create imagic-cpu --type process --overwrite

python infra/prefect_setup.py docker-template --out "$template" --network "$network" \
  --env IMAGIC_STORE --env IMAGIC_S3_ENDPOINT_URL --env IMAGIC_S3_MAX_ATTEMPTS \
  --env AWS_DEFAULT_REGION --env MLFLOW_TRACKING_URI --env HF_HUB_OFFLINE \
  --secret AWS_ACCESS_KEY_ID --secret AWS_SECRET_ACCESS_KEY
run work-pool create imagic-gpu --type docker --base-job-template "$template" --overwrite
# At most one stage container per GPU, and at most one `gpu` task per GPU.
run work-pool set-concurrency-limit imagic-gpu "$slots"
run concurrency-limit create gpu "$slots"

run deploy --all
echo "setup done: pools imagic-cpu and imagic-gpu, gpu limit $slots, deployments of prefect.yaml"
