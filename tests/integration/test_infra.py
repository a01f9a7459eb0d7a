"""infra/setup.sh, the Compose stack's one-shot `setup` service, against a real Prefect server.

The server is started from infra/compose.yaml's `prefect-server` command (like every Prefect
server of these tests); the script then does what it does in the stack: pools, the docker
pool's template with the stack's network and settings (keys as Secret blocks), the `gpu`
limit, `prefect deploy --all`. What Docker itself would do with the template is not run here.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.templating import (
    apply_values,
    resolve_block_document_references,
    resolve_variables,
)

from tests.integration.servers import BIN, prefect_server

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-key-of-the-test"
STACK_ENV = {
    "IMAGIC_STORE": "s3://imagic/store",
    "IMAGIC_S3_ENDPOINT_URL": "http://minio:9000",
    "IMAGIC_S3_MAX_ATTEMPTS": "3",
    "AWS_DEFAULT_REGION": "us-east-1",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "HF_HUB_OFFLINE": "0",
    "AWS_ACCESS_KEY_ID": "imagic-test",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "IMAGIC_GPU_SLOTS": "2",
    "IMAGIC_DOCKER_NETWORK": "imagic-test-net",
}


def run_setup(server_env: dict[str, str]) -> str:
    env = {
        **os.environ, **server_env, **STACK_ENV,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip
    result = subprocess.run(
        ["bash", str(REPO / "infra" / "setup.sh")], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def rendered_stage_configuration(deployment_name: str) -> tuple[dict, dict]:
    """The imagic-gpu pool's job configuration for a stage deployment, as a worker renders it."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        pool = await client.read_work_pool(deployment.work_pool_name)
        template = pool.base_job_template
        properties = template["variables"]["properties"]
        variables = {key: p["default"] for key, p in properties.items() if "default" in p}
        variables.update(deployment.job_variables or {})
        config = apply_values(template["job_configuration"], variables)
        config = await resolve_block_document_references(config, client=client)
        config = await resolve_variables(config, client=client)
        return template, config


@pytest.mark.slow
def test_setup_script_makes_pools_limits_and_deployments(tmp_path: Path):
    home = tmp_path / "prefect"
    home.mkdir()
    with prefect_server(home) as server:
        output = run_setup(server.env)
        assert "setup done" in output
        run_setup(server.env)  # idempotent: the setup service reruns on every `up`

        with temporary_settings({PREFECT_API_URL: server.api_url}):
            with get_client(sync_client=True) as client:
                pools = {pool.name: pool for pool in client.read_work_pools()}
                assert pools["imagic-cpu"].type == "process"
                assert pools["imagic-gpu"].type == "docker"
                assert pools["imagic-gpu"].concurrency_limit == 2
                gpu_limit = client.read_global_concurrency_limit_by_name("tag:gpu")
                assert gpu_limit.limit == 2
                deployments = {
                    f"{client.read_flow(d.flow_id).name}/{d.name}": d
                    for d in client.read_deployments()
                }
            assert sorted(deployments) == [
                "imagic-batch-edit/batch-edit", "imagic-edit/imagic-edit",
                "imagic-finetune/finetune", "imagic-generate/generate",
                "imagic-optimize/optimize",
            ]  # fmt: skip
            for stage in ("optimize", "finetune", "generate"):
                assert deployments[f"imagic-{stage}/{stage}"].work_pool_name == "imagic-gpu"

            template, config = asyncio.run(rendered_stage_configuration("imagic-optimize/optimize"))

    # The key is a Secret block: not in the pool's template, only in the rendered job.
    assert SECRET not in json.dumps(template)
    assert config["env"]["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert config["env"]["AWS_ACCESS_KEY_ID"] == "imagic-test"
    for name in ("IMAGIC_STORE", "IMAGIC_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
        assert config["env"][name] == STACK_ENV[name]
    assert config["networks"] == ["imagic-test-net"]
    assert config["image"] == "imagic-pipeline/step-gpu:0.1.0"
    assert config["container_create_kwargs"]["device_requests"] == [
        {"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}
    ]
    assert config["volumes"] == ["imagic-model-cache:/home/imagic/.cache/huggingface"]
