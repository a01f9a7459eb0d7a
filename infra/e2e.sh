#!/usr/bin/env bash
# End to end on the Compose stack: build the images, bring the stack up, let the setup service
# deploy, run one Imagic edit as a Prefect deployment (the three stages on the GPU pool, in
# step containers) and wait for it, then take the stack down.
#
#   bash infra/e2e.sh            # from anywhere; KEEP_STACK=1 leaves the stack running
#
# Needs: Docker Engine with Compose v2.20+, the NVIDIA Container Toolkit and one NVIDIA GPU.
# The model is the tiny random-weight one (`imagic tiny-model`), so the edit takes a minute
# and its pictures are noise: this checks the plumbing, not the method. Without infra/.env a
# throw-away one with random secrets is written to a temporary folder.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

step_image="imagic-pipeline/step-gpu:0.1.0"
flows_image="imagic-pipeline/flows-cpu:0.1.0"
model_dir="/home/imagic/.cache/huggingface/imagic-e2e-tiny-sd"
input_key="inputs/e2e/red-square.png"

workdir="$(mktemp -d)"
env_file="infra/.env"
if [[ ! -f "$env_file" ]]; then
  env_file="$workdir/e2e.env"
  {
    echo "POSTGRES_PASSWORD=$(openssl rand -hex 24)"
    echo "MINIO_ROOT_PASSWORD=$(openssl rand -hex 24)"
    echo "AWS_ACCESS_KEY_ID=imagic-e2e"
    echo "AWS_SECRET_ACCESS_KEY=$(openssl rand -hex 24)"
  } >"$env_file"
fi
# The docker worker joins the group that owns the Docker socket.
export DOCKER_GID="${DOCKER_GID:-$(stat -c %g /var/run/docker.sock)}"

compose=(docker compose -f infra/compose.yaml --env-file "$env_file")

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    "${compose[@]}" ps -a || true
    "${compose[@]}" logs --no-color --tail 200 || true
  fi
  if [[ "${KEEP_STACK:-0}" != 1 ]]; then
    "${compose[@]}" down --remove-orphans || true
  fi
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT

echo "== images"
docker build -f docker/step-gpu.Dockerfile -t "$step_image" \
  --build-arg GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)" .
docker build -f docker/flows-cpu.Dockerfile -t "$flows_image" .

echo "== stack (setup creates the pools and the gpu limit and runs prefect deploy --all)"
"${compose[@]}" config --quiet
"${compose[@]}" up -d --wait --wait-timeout 600
"${compose[@]}" logs --no-color setup

echo "== a tiny model in the model-cache volume the stage containers mount"
docker run --rm --entrypoint imagic \
  -v imagic-model-cache:/home/imagic/.cache/huggingface \
  "$step_image" tiny-model --out "$model_dir" --overwrite

echo "== the input image in the store's bucket"
"${compose[@]}" exec -T worker-cpu python -c '
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["IMAGIC_S3_ENDPOINT_URL"])
s3.put_object(Bucket="imagic", Key=sys.argv[1], Body=sys.stdin.buffer.read())
' "$input_key" <examples/red-square.png

echo "== one edit, each stage a run of its deployment on the GPU pool"
params="$(
  cat <<JSON
{"spec": {"image": "s3://imagic/$input_key", "text": "a red circle on the left",
          "model": "$model_dir", "generate": {"etas": [0.7], "seeds": [0], "num_inference_steps": 5},
          "optimize": {"steps": 20}, "finetune": {"steps": 20}},
 "placement": "deployments"}
JSON
)"
# --watch exits non-zero unless the run ends Completed.
"${compose[@]}" exec -T worker-cpu prefect --no-prompt deployment run imagic-edit/imagic-edit \
  --params "$params" --watch --watch-timeout 1800

echo "== the grid is in the store"
"${compose[@]}" exec -T worker-cpu python -c '
import os
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["IMAGIC_S3_ENDPOINT_URL"])
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="imagic", Prefix="store/generate/").get("Contents", [])]
grids = [k for k in keys if k.endswith("/grid.png")]
assert grids, f"no grid.png under s3://imagic/store/generate/: {keys}"
print("grid:", grids[-1])
'
echo "e2e passed"
