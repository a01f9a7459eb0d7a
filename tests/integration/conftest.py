"""Session-wide real servers: one moto S3 server and one MLflow server on top of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.servers import (
    FAKE_AWS,
    MlflowServer,
    S3Server,
    mlflow_server,
    moto_server,
)


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
