"""Tracking against a real `mlflow server` whose artifacts are proxied into a moto S3 bucket."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import save_file

from imagic.errors import TrackingError
from imagic.tracking import NullTracker, TrackingOptions, open_tracker
from tests.integration.servers import MlflowServer, S3Server, mlflow_server


@pytest.fixture(autouse=True)
def _client_without_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The client has no AWS credentials or endpoint: artifacts must go through the server."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "MLFLOW_S3_ENDPOINT_URL",
        "MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    yield


def _bucket_keys(s3_server: S3Server, bucket: str) -> list[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listed.get("Contents", [])]


@pytest.mark.slow
def test_runs_metrics_and_artifacts_through_the_server(
    mlflow_tracking: MlflowServer, s3_server: S3Server, tmp_path: Path
):
    tracker = open_tracker(
        TrackingOptions(tracking_uri=mlflow_tracking.tracking_uri, required=True)
    )
    assert tracker.enabled
    parent = tracker.start_edit(
        name="edit",
        params={"text": "a red circle", "store": "s3://key:secret@bucket/x"},
        tags={"imagic.request": "integration"},
    )

    weights = tmp_path / "unet_lora.safetensors"
    save_file({"lora_A": torch.randn(4, 8), "lora_B": torch.zeros(8, 4)}, weights)
    folder = tmp_path / "samples"
    (folder / "eta_0.7").mkdir(parents=True)
    (folder / "grid.png").write_bytes(b"\x89PNG not really")
    (folder / "eta_0.7" / "seed_0.png").write_bytes(b"seed 0")
    losses = [float(i) for i in range(1200)]

    with tracker.stage_run(
        "finetune", parent_run_id=parent, params={"finetune.steps": 1200}, tags={}
    ) as run:
        run.log_metric_series("loss", losses)
        run.log_artifact(weights, "weights")
        run.log_artifact(folder, "samples")
    tracker.end_run(parent)

    client = MlflowClient(mlflow_tracking.tracking_uri)
    stage = client.get_run(run.run_id)
    assert stage.info.status == "FINISHED"
    assert stage.data.tags["mlflow.parentRunId"] == parent
    assert stage.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    assert client.get_run(parent).data.params["store"] == "s3://bucket/x"
    history = client.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 1201))
    assert [m.value for m in history] == losses

    downloaded = client.download_artifacts(run.run_id, "weights/unet_lora.safetensors", tmp_path)
    assert Path(downloaded).read_bytes() == weights.read_bytes()
    samples = Path(client.download_artifacts(run.run_id, "samples", tmp_path / "dl"))
    assert (samples / "grid.png").read_bytes() == b"\x89PNG not really"
    assert (samples / "eta_0.7" / "seed_0.png").read_bytes() == b"seed 0"

    keys = _bucket_keys(s3_server, mlflow_tracking.artifact_bucket)
    for name in ("weights/unet_lora.safetensors", "samples/grid.png", "samples/eta_0.7/seed_0.png"):
        assert any(key.endswith(f"{run.run_id}/artifacts/{name}") for key in keys), name

    url = tracker.run_url(run.run_id)
    assert url == (
        f"{mlflow_tracking.tracking_uri}/#/experiments/{tracker.experiment_id}/runs/{run.run_id}"
    )


@pytest.mark.slow
def test_server_going_away_mid_run(s3_server: S3Server, tmp_path: Path):
    """Not required: one warning, then no-ops, and the edit goes on. Required: TrackingError."""
    artifact = tmp_path / "e_opt.safetensors"
    save_file({"e_opt": torch.zeros(1, 4)}, artifact)
    with contextlib.ExitStack() as server_lifetime:
        server = server_lifetime.enter_context(mlflow_server(tmp_path, s3_server))
        uri = server.tracking_uri
        tracker = open_tracker(TrackingOptions(tracking_uri=uri, experiment="flaky"))
        strict = open_tracker(TrackingOptions(tracking_uri=uri, experiment="flaky", required=True))
        parent = tracker.start_edit(name="edit", params={}, tags={})
        strict_parent = strict.start_edit(name="edit", params={}, tags={})
        assert parent and strict_parent
        with tracker.stage_run("optimize", parent_run_id=parent, params={}, tags={}) as run:
            run.log_metrics({"before": 1.0})
            server_lifetime.close()  # the server goes away

            with pytest.warns(UserWarning, match="continues untracked") as caught:
                run.log_metric_series("loss", [1.0, 2.0, 3.0])
            assert uri in str(caught[0].message)
            assert not tracker.enabled
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no second warning, no exception
                run.log_metrics({"after": 1.0})
                run.set_tags({"x": "y"})
                run.log_artifact(artifact, "embeddings")
        tracker.end_run(parent)
        assert run.run_id is not None  # the run was created before the server left

        with pytest.raises(TrackingError, match=uri):
            strict.start_edit(name="edit", params={}, tags={})
        with (
            pytest.raises(TrackingError, match=uri),
            strict.stage_run("optimize", parent_run_id=strict_parent, params={}, tags={}),
        ):
            pass

    # a tracker opened now sees the dead server at once
    with pytest.warns(UserWarning, match="continues untracked"):
        assert isinstance(open_tracker(TrackingOptions(tracking_uri=uri)), NullTracker)
