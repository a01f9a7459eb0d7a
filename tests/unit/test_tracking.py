"""MLflow tracking without a server: a local sqlite backend is a real MLflow store."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from imagic import tracking
from imagic.errors import TrackingError
from imagic.tracking import (
    ARTIFACT_UPLOAD_TIMEOUT_S,
    HTTP_DEFAULTS,
    MAX_PARAM_VALUE_LENGTH,
    TRUNCATION_MARKER,
    NullTracker,
    Tracker,
    TrackingOptions,
    flatten_params,
    open_tracker,
    scrub,
    standard_tags,
)
from tests.integration.servers import free_port


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No tracking URI from the environment; MLflow's HTTP settings restored afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database for the module: creating MLflow's tables takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tracker(sqlite_uri: str) -> Tracker:
    return open_tracker(TrackingOptions(tracking_uri=sqlite_uri, experiment="unit"))


# --- flatten_params -----------------------------------------------------------------------


def test_flatten_params_dotted_keys_and_json_lists():
    flat = flatten_params(
        {
            "text": "a red circle",
            "generate": {"etas": [0.6, 0.7, 0.8], "seeds": [0, 1], "scheduler": "ddim"},
            "finetune": {"lora": True, "learning_rate": 2e-6, "extra": None, "nested": {"a": 1}},
            "empty": {},
        }
    )
    assert flat == {
        "text": "a red circle",
        "generate.etas": "[0.6, 0.7, 0.8]",
        "generate.seeds": "[0, 1]",
        "generate.scheduler": "ddim",
        "finetune.lora": "True",
        "finetune.learning_rate": "2e-06",
        "finetune.extra": "None",
        "finetune.nested.a": "1",
        "empty": "{}",
    }


def test_flatten_params_prefix_and_truncation():
    flat = flatten_params({"prompt": "x" * 7000, "short": "y"}, prefix="edit")
    assert set(flat) == {"edit.prompt", "edit.short"}
    assert len(flat["edit.prompt"]) == MAX_PARAM_VALUE_LENGTH
    assert flat["edit.prompt"].endswith(TRUNCATION_MARKER)
    assert flat["edit.short"] == "y"
    exact = flatten_params({"v": "z" * MAX_PARAM_VALUE_LENGTH})
    assert exact["v"] == "z" * MAX_PARAM_VALUE_LENGTH  # at the limit: untouched


# --- scrub --------------------------------------------------------------------------------


def test_scrub_strips_credentials_from_uris():
    clean = scrub(
        {
            "tracking": "https://alice:s3cr%2Ft@mlflow.example.com:5000/",
            "db": "postgresql://mlflow:pa@ss@db.internal:5432/mlflow",
            "store": "s3://AKIAXXX:wJalrXUtn@bucket/prefix",
            "repo": "https://ghp_abcdef123@github.com/org/repo.git",
            "in_list": json.dumps(["http://u:p@h1/x", "s3://bucket/y"]),
        }
    )
    assert clean == {
        "tracking": "https://mlflow.example.com:5000/",
        "db": "postgresql://db.internal:5432/mlflow",
        "store": "s3://bucket/prefix",
        "repo": "https://github.com/org/repo.git",
        "in_list": json.dumps(["http://h1/x", "s3://bucket/y"]),
    }
    assert not any(word in str(clean) for word in ("alice", "s3cr", "pa@ss", "wJalr", "ghp_"))


def test_scrub_redacts_presigned_and_token_query_values():
    url = (
        "https://bucket.s3.amazonaws.com/weights.safetensors?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1&X-Amz-Date=20240101T000000Z"
        "&X-Amz-Expires=3600&X-Amz-Security-Token=FwoGZXIvYXdz&X-Amz-Signature=deadbeef"
    )
    clean = scrub({"url": url, "hook": "https://hooks.example.com/x?token=abc123&channel=ml"})
    assert "AKIAEXAMPLE" not in clean["url"]
    assert "deadbeef" not in clean["url"] and "FwoGZXIvYXdz" not in clean["url"]
    assert "X-Amz-Signature=***" in clean["url"] and "X-Amz-Credential=***" in clean["url"]
    assert "X-Amz-Expires=3600" in clean["url"]  # harmless query parameters stay
    assert clean["hook"] == "https://hooks.example.com/x?token=***&channel=ml"


def test_scrub_redacts_secret_looking_keys_any_case():
    secret = {
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "db.Password": "hunter2",
        "passwd": "x",
        "hf_token": "hf_abc",
        "MLFLOW_TRACKING_TOKEN": "t",
        "credentials_file": "/home/me/.aws/credentials",
        "aws.access_key_id": "AKIA",
        "apiKey": "k",
        "Authorization": "Bearer abc",
    }
    assert scrub(secret) == dict.fromkeys(secret, "***")
    # an unset secret still shows that it is unset
    assert scrub({"password": "None", "token": ""}) == {"password": "None", "token": ""}


def test_scrub_leaves_ordinary_values_alone():
    values = {
        "store": "s3://imagic-data/edits/key",
        "model": "runwayml/stable-diffusion-v1-5",
        "text": "A photo of a bird spreading wings, eta=0.7 & guidance 7.5",
        "email": "contact: team@example.com",
        "folder": "/data/imagic?raw",
        "tracking.tracking_uri": "http://mlflow.internal:5000",
    }
    assert scrub(values) == values


# --- standard tags ------------------------------------------------------------------------


def test_standard_tags(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IMAGIC_GIT_COMMIT", "abc123")
    monkeypatch.setenv("IMAGIC_CONTAINER_IMAGE", "ghcr.io/org/imagic:1.0")
    tags = standard_tags()
    assert tags["imagic.git_commit"] == "abc123"
    assert tags["imagic.container_image"] == "ghcr.io/org/imagic:1.0"
    for name in ("imagic", "torch", "diffusers", "transformers", "peft", "mlflow", "python"):
        assert tags[f"imagic.version.{name}"], name
    monkeypatch.delenv("IMAGIC_GIT_COMMIT")
    monkeypatch.delenv("IMAGIC_CONTAINER_IMAGE")
    tags = standard_tags()
    assert tags["imagic.git_commit"]  # a commit of this checkout, or "unknown": never fails
    assert "imagic.container_image" not in tags


# --- trackers -----------------------------------------------------------------------------


def test_disabled_is_a_null_tracker_that_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # MLflow's default store would be ./mlflow.db
    db = tmp_path / "mlflow.db"
    tracker = open_tracker(TrackingOptions(enabled=False, tracking_uri=f"sqlite:///{db}"))
    assert isinstance(tracker, NullTracker) and not tracker.enabled
    parent = tracker.start_edit(name="edit", params={"a": 1}, tags={"b": "c"})
    assert parent is None
    artifact = tmp_path / "file.txt"
    artifact.write_text("x")
    with tracker.stage_run("optimize", parent_run_id=parent, params={}, tags={}) as run:
        run.log_metric_series("loss", [1.0, 2.0])
        run.log_metrics({"final_loss": 1.0})
        run.log_artifact(artifact)
        run.set_tags({"x": "y"})
    tracker.end_run(parent)
    assert run.run_id is None and tracker.run_url(run.run_id) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_parent_and_stage_runs_read_back(tracker: Tracker, sqlite_uri: str, tmp_path: Path):
    assert tracker.enabled and tracker.tracking_uri == sqlite_uri
    params = flatten_params(
        {
            "text": "a red circle",
            "generate": {"etas": [0.6, 0.7, 0.8]},
            "store": "s3://user:pw@bucket/prefix",
            "hf_token": "hf_secret",
        }
    )
    parent = tracker.start_edit(name="edit", params=params, tags={"imagic.request": "r1"})
    assert parent is not None
    losses = [1.0 / (step + 1) for step in range(1500)]
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    with tracker.stage_run(
        "optimize",
        parent_run_id=parent,
        params={"optimize.steps": 1500, "upstream": "https://a:b@host/x?X-Amz-Signature=s1g"},
        tags={"imagic.key": "k1", "api_key": "abc"},
    ) as run:
        run.log_metric_series("loss", losses)
        run.log_metrics({"final_loss": losses[-1], "seconds": 2.5})
        run.set_tags({"imagic.weights": "s3://admin:pw@bucket/w", "imagic.note": "ok"})
        run.log_artifact(artifact, "notes")
    tracker.end_run(parent)

    client = MlflowClient(sqlite_uri)
    edit = client.get_run(parent)
    assert edit.info.status == "FINISHED" and edit.info.run_name == "edit"
    assert edit.data.params == {
        "text": "a red circle",
        "generate.etas": "[0.6, 0.7, 0.8]",
        "store": "s3://bucket/prefix",
        "hf_token": "***",
    }
    assert edit.data.tags["imagic.request"] == "r1"
    assert "mlflow.parentRunId" not in edit.data.tags
    assert edit.data.tags["imagic.version.mlflow"]

    stage = client.get_run(run.run_id)
    assert stage.info.status == "FINISHED" and stage.info.run_name == "optimize"
    assert stage.info.experiment_id == tracker.experiment_id
    tags = stage.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert tags["imagic.stage"] == "optimize" and tags["imagic.key"] == "k1"
    assert tags["api_key"] == "***"
    assert tags["imagic.weights"] == "s3://bucket/w" and tags["imagic.note"] == "ok"
    assert "imagic.git_commit" in tags
    assert stage.data.params == {
        "optimize.steps": "1500",
        "upstream": "https://host/x?X-Amz-Signature=***",
    }
    history = client.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 1501))
    assert [m.value for m in history] == pytest.approx(losses)
    assert stage.data.metrics == {"loss": losses[-1], "final_loss": losses[-1], "seconds": 2.5}
    listed = client.list_artifacts(run.run_id, "notes")
    assert [a.path for a in listed] == ["notes/notes.txt"]
    assert tracker.run_url(run.run_id) is None  # not an http(s) server


def test_stage_run_failed_when_block_raises(tracker: Tracker, sqlite_uri: str):
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracker.stage_run("finetune", parent_run_id=None, params={}, tags={}) as run,
    ):
        run.log_metrics({"partial": 1.0})
        raise RuntimeError("boom")
    stage = MlflowClient(sqlite_uri).get_run(run.run_id)
    assert stage.info.status == "FAILED"
    assert "mlflow.parentRunId" not in stage.data.tags  # top level: no parent given
    assert tracker.enabled  # the block's error is not a tracking failure

    parent = tracker.start_edit(name="edit", params={}, tags={})
    tracker.end_run(parent, failed=True)
    assert MlflowClient(sqlite_uri).get_run(parent).info.status == "FAILED"


def test_many_params_are_batched(tracker: Tracker, sqlite_uri: str):
    params = {f"p{i:03d}": i for i in range(250)}  # MLflow takes 100 params per batch
    tags = {f"t{i:03d}": str(i) for i in range(150)}
    parent = tracker.start_edit(name="edit", params=params, tags=tags)
    tracker.end_run(parent)
    run = MlflowClient(sqlite_uri).get_run(parent)
    assert run.data.params == {key: str(value) for key, value in params.items()}
    assert all(run.data.tags[key] == value for key, value in tags.items())


def test_missing_artifact_is_a_bug_not_a_tracking_failure(tracker: Tracker, tmp_path: Path):
    with (
        tracker.stage_run("generate", parent_run_id=None, params={}, tags={}) as run,
        pytest.raises(FileNotFoundError),
    ):
        run.log_artifact(tmp_path / "missing.png")
    assert tracker.enabled


def test_failure_mid_run_warns_once_then_no_op(sqlite_uri: str):
    tracker = open_tracker(TrackingOptions(tracking_uri=sqlite_uri, experiment="unit"))
    parent = tracker.start_edit(name="edit", params={}, tags={})

    def gone(*args, **kwargs):
        raise ConnectionError("connection refused")

    tracker._client.log_batch = gone  # the server went away
    with (
        pytest.warns(UserWarning, match="continues untracked") as caught,
        tracker.stage_run("optimize", parent_run_id=parent, params={"a": 1}, tags={}) as run,
    ):
        run.log_metric_series("loss", [1.0, 2.0])
        run.log_metrics({"x": 1.0})
        run.set_tags({"y": "z"})
    assert len(caught) == 1 and sqlite_uri in str(caught[0].message)
    assert not tracker.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.end_run(parent)  # no-op, no second warning


def test_failure_mid_run_when_required_raises(sqlite_uri: str):
    options = TrackingOptions(tracking_uri=sqlite_uri, experiment="unit", required=True)
    tracker = open_tracker(options)

    def gone(*args, **kwargs):
        raise ConnectionError("connection refused")

    with tracker.stage_run("optimize", parent_run_id=None, params={}, tags={}) as run:
        tracker._client.log_batch = gone
        with pytest.raises(TrackingError, match="connection refused") as error:
            run.log_metrics({"x": 1.0})
    assert sqlite_uri in str(error.value)


def test_unreachable_server_warns_and_runs_untracked(tmp_path: Path):
    uri = f"http://user:secret@127.0.0.1:{free_port()}"
    with pytest.warns(UserWarning, match="continues untracked") as caught:
        tracker = open_tracker(TrackingOptions(tracking_uri=uri))
    message = str(caught[0].message)
    assert "127.0.0.1" in message and "secret" not in message
    assert "tracking.required" in message and "tracking.enabled" in message
    assert isinstance(tracker, NullTracker) and not tracker.enabled
    with tracker.stage_run("optimize", parent_run_id=None, params={}, tags={}) as run:
        run.log_metrics({"x": 1.0})
    assert run.run_id is None
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"  # bounded for later calls


def test_unreachable_server_required_raises_naming_uri():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as error:
        open_tracker(TrackingOptions(tracking_uri=uri, required=True))
    message = str(error.value)
    assert uri in message and "tracking.required = false" in message


def test_http_retry_defaults_and_longer_upload_timeout(monkeypatch: pytest.MonkeyPatch):
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    tracking._bound_http_retries()
    assert {name: os.environ[name] for name in HTTP_DEFAULTS} == HTTP_DEFAULTS
    with tracking._long_upload_timeout(), tracking._long_upload_timeout():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(ARTIFACT_UPLOAD_TIMEOUT_S)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "45")  # the user's own choice wins
    tracking._bound_http_retries()
    with tracking._long_upload_timeout():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "45"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "45"


def test_tracking_uri_from_environment(monkeypatch: pytest.MonkeyPatch, sqlite_uri: str):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    tracker = open_tracker(TrackingOptions(experiment="unit"))
    assert tracker.enabled and tracker.tracking_uri == sqlite_uri


def test_run_url():
    tracker = Tracker(None, tracking_uri="https://u:p@mlflow.example.com/", experiment_id="7")
    assert tracker.run_url("abc") == "https://mlflow.example.com/#/experiments/7/runs/abc"
    assert tracker.run_url(None) is None
    local = Tracker(None, tracking_uri="sqlite:///mlflow.db", experiment_id="7")
    assert local.run_url("abc") is None
    assert NullTracker("http://127.0.0.1:5000").run_url("abc") is None


def test_options_are_strict():
    with pytest.raises(ValueError):
        TrackingOptions(experimnt="x")
    with pytest.raises(ValueError):
        TrackingOptions(log_weights="upload")
    assert TrackingOptions(tracking_uri="  ").tracking_uri is None
