"""Real servers for integration tests, started on 127.0.0.1 with free ports, stopped by PID.

No mocks: a moto S3 server (the same HTTP API as AWS S3 and MinIO) and a real `mlflow server`
with a sqlite backend whose artifacts are proxied into a bucket on that moto server. The
`mlflow server` and `prefect server start` command lines are read from infra/compose.yaml
(`stack_commands`): the tests run the servers with the flags the Compose stack runs them with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.stack_commands import service_command

BIN = Path(sys.executable).parent
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@contextmanager
def running(command: list[str], health_url: str, env: dict[str, str], log: Path) -> Iterator[None]:
    """Start `command` in its own process group; kill the whole group on exit."""
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_healthy(health_url, process)
            yield
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, **_boto_credentials())

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": FAKE_AWS["AWS_DEFAULT_REGION"],
    }


@contextmanager
def moto_server(log_dir: Path) -> Iterator[S3Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(command, f"{url}/moto-api/", {}, log_dir / "moto.log"):
        yield S3Server(url)


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str
    artifact_bucket: str


def native_mlflow_values(log_dir: Path, port: int, bucket: str) -> dict[str, str]:
    """What differs from infra/compose.yaml's `mlflow` command when it runs here."""
    return {
        "IMAGIC_MLFLOW_BACKEND_STORE_URI": f"sqlite:///{log_dir / 'mlflow.db'}",
        "IMAGIC_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/",
        "IMAGIC_MLFLOW_HOST": "127.0.0.1",
        "IMAGIC_MLFLOW_PORT": str(port),
        "IMAGIC_MLFLOW_WORKERS": "1",  # a 2-core machine
    }


@contextmanager
def mlflow_server(log_dir: Path, s3: S3Server) -> Iterator[MlflowServer]:
    """`mlflow server` as infra/compose.yaml starts it, but with a sqlite backend and its
    artifacts proxied to s3://<bucket>/ on the moto server."""
    bucket = s3.create_bucket("mlflow-artifacts")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = service_command("mlflow", native_mlflow_values(log_dir, port, bucket), bin_dir=BIN)
    env = {**FAKE_AWS, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url}
    with running(command, f"{url}/health", env, log_dir / "mlflow.log"):
        yield MlflowServer(url, bucket)


@dataclass(frozen=True)
class PrefectServer:
    """A `prefect server start` with its own PREFECT_HOME; `env` points a client or worker at it."""

    url: str
    env: dict[str, str]

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run `prefect <args>` against this server; raise with its output when it fails."""
        result = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args], env={**os.environ, **self.env},
            cwd=cwd, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result


def native_prefect_values(port: int) -> dict[str, str]:
    """What differs from infra/compose.yaml's `prefect-server` command when it runs here."""
    return {"IMAGIC_PREFECT_HOST": "127.0.0.1", "IMAGIC_PREFECT_PORT": str(port)}


@contextmanager
def prefect_server(home: Path) -> Iterator[PrefectServer]:
    """`prefect server start` as infra/compose.yaml starts it, on 127.0.0.1 with sqlite."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_UI_API_URL": f"{url}/api",  # the UI on a port other than 4200 needs it
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    }
    command = service_command("prefect-server", native_prefect_values(port), bin_dir=BIN)
    with running(command, f"{url}/api/health", env, home / "server.log"):
        yield PrefectServer(url, env)


class PrefectWorker:
    """A real `prefect worker start --type process` polling one pool; can be killed mid-run."""

    def __init__(self, pool: str, env: dict[str, str], log: Path) -> None:
        self.pool, self.env, self.log = pool, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        port = free_port()
        env = {
            **os.environ, **self.env,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        }  # fmt: skip
        command = [
            str(BIN / "prefect"), "worker", "start", "--pool", self.pool, "--type", "process",
            "--with-healthcheck",
        ]  # fmt: skip
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_healthy(f"http://127.0.0.1:{port}/health", self.process)

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (the flow runs), like a lost node."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return
        parent = psutil.Process(self.process.pid)
        for process in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
