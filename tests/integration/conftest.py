"""Session-wide real servers: moto S3, MLflow on top of it, and a Prefect server with workers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client

from tests.conftest import draw_scene
from tests.integration.servers import (
    FAKE_AWS,
    MlflowServer,
    PrefectServer,
    PrefectWorker,
    S3Server,
    mlflow_server,
    moto_server,
    prefect_server,
)

REPO = Path(__file__).resolve().parents[2]
PREFECT_POOLS = ("imagic-cpu", "imagic-gpu")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_tracking(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), s3_server) as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> S3Server:
    """Point boto3 (the standard AWS way) and imagic at the moto server, with fake credentials."""
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IMAGIC_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@dataclass
class PrefectStack:
    """A Prefect server with prefect.yaml deployed, a process worker per pool, S3 and MLflow."""

    server: PrefectServer
    workers: dict[str, PrefectWorker]
    store: str
    mlflow: MlflowServer
    s3: S3Server


@pytest.fixture(scope="session")
def prefect_stack(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, mlflow_tracking: MlflowServer
) -> Iterator[PrefectStack]:
    """`prefect deploy --all` from the repository root, then workers standing in for the pools.

    The workers (and the flow runs they start) get the same environment a container would: S3
    credentials and endpoint, the default store, and the MLflow server.
    """
    home = tmp_path_factory.mktemp("prefect")
    bucket = s3_server.create_bucket("imagic-prefect")
    with prefect_server(home) as server:
        for pool in PREFECT_POOLS:
            server.cli("work-pool", "create", pool, "--type", "process")
        server.cli("deploy", "--all", cwd=REPO)
        env = {
            **server.env,
            **FAKE_AWS,
            "IMAGIC_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "IMAGIC_STORE": f"s3://{bucket}/store",
            "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
            "HF_HUB_OFFLINE": "1",
        }
        workers = {
            pool: PrefectWorker(pool, env, home / f"worker-{pool}.log") for pool in PREFECT_POOLS
        }
        try:
            for worker in workers.values():
                worker.start()
            yield PrefectStack(server, workers, env["IMAGIC_STORE"], mlflow_tracking, s3_server)
        finally:
            for worker in workers.values():
                worker.stop()


@pytest.fixture
def prefect_api(prefect_stack: PrefectStack) -> Iterator[PrefectStack]:
    """Point this test process's Prefect client (and flows run in it) at the stack's server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = Path(prefect_stack.server.env["PREFECT_HOME"])
    with temporary_settings({PREFECT_API_URL: prefect_stack.server.api_url, PREFECT_HOME: home}):
        yield prefect_stack


@pytest.fixture
def prefect_client(prefect_api: PrefectStack) -> SyncPrefectClient:
    with get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def input_uri(prefect_api: PrefectStack, tmp_path: Path) -> str:
    """The scene image in the stack's bucket in the stack's bucket, as a user would upload it."""
    path = tmp_path / "scene.png"
    draw_scene().save(path)
    key = f"inputs/{tmp_path.name}/scene.png"
    prefect_api.s3.client().upload_file(str(path), "imagic-prefect", key)
    return f"s3://imagic-prefect/{key}"
