"""The three steps over real object storage and a real MLflow server, as production runs them.

Servers (moto S3, `mlflow server` with its artifacts in that S3) are started by fixtures in
conftest.py. Nothing here is mocked; the only patches count model loads (to prove cache hits
load nothing) or inject a crash between a stage's files and its manifest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

import imagic.stages.finetune
import imagic.stages.generate
import imagic.stages.optimize
from imagic.config import FinetuneParams, GenerateParams, OptimizeParams
from imagic.errors import ChecksumMismatchError, StageNotFoundError, TrackingError
from imagic.storage import open_store, read_manifest
from imagic.storage.local import FileStore
from imagic.tracking import TrackingOptions, open_tracker
from steps import finetune as finetune_step
from steps import generate as generate_step
from steps import optimize as optimize_step

pytestmark = pytest.mark.slow
NO_TRACKING = TrackingOptions(enabled=False)


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every model load by any stage: a cache hit must not load a model."""
    loads: list[str] = []
    for module in (imagic.stages.optimize, imagic.stages.finetune, imagic.stages.generate):
        original = module.load_pipeline

        def counting(*args, _original=original, _module=module.__name__, **kwargs):
            loads.append(_module.rsplit(".", 1)[-1])
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "load_pipeline", counting)
    return loads


def _requests(image: str, model: Path, store: str, tracking: TrackingOptions, parent=None):
    common = {"store": store, "tracking": tracking, "parent_run_id": parent}
    optimize = optimize_step.Request(
        image=image, text="a red circle", model=str(model),
        params=OptimizeParams(steps=4), **common,
    )  # fmt: skip
    return optimize, common


def _run_all(image: str, model: Path, store: str, tracking: TrackingOptions, parent=None):
    optimize, common = _requests(image, model, store, tracking, parent)
    a = optimize_step.run(optimize)
    b = finetune_step.run(
        finetune_step.Request(optimize_key=a.key, params=FinetuneParams(steps=4), **common)
    )
    c = generate_step.run(
        generate_step.Request(
            finetune_key=b.key,
            params=GenerateParams(etas=[0.0, 1.0], seeds=[1], num_inference_steps=2),
            **common,
        )
    )
    return a, b, c


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_three_steps_over_s3_with_mlflow(
    aws_env, mlflow_tracking, tiny_model_dir: Path, input_image: Path, model_loads, tmp_path
) -> None:
    s3 = aws_env.client()
    bucket = aws_env.create_bucket(f"edits-{uuid.uuid4().hex[:8]}")
    s3.upload_file(str(input_image), bucket, "inputs/scene.png")
    store_uri = f"s3://{bucket}/imagic"
    tracking = TrackingOptions(tracking_uri=mlflow_tracking.tracking_uri, experiment="steps")
    tracker = open_tracker(tracking)
    parent = tracker.start_edit(name="edit", params={"text": "a red circle"}, tags={})

    image_uri = f"s3://{bucket}/inputs/scene.png"
    a, b, c = _run_all(image_uri, tiny_model_dir, store_uri, tracking, parent)
    tracker.end_run(parent)
    assert model_loads == ["optimize", "finetune", "generate"]
    assert not (a.cached or b.cached or c.cached)

    # Every artifact is in the bucket and matches its manifest's checksum.
    store = open_store(store_uri)
    for result in (a, b, c):
        manifest = read_manifest(store, result.key)
        assert manifest is not None and manifest["mlflow_run_id"] == result.mlflow_run_id
        for name, entry in manifest["files"].items():
            body = s3.get_object(Bucket=bucket, Key=f"imagic/{result.key}/{name}")["Body"].read()
            assert _sha256(body) == entry["sha256"], name
    c_manifest = read_manifest(store, c.key)
    assert [(i["seed"], i["eta"]) for i in c_manifest["images"]] == [(1, 0.0), (1, 1.0)]

    # MLflow: the parent and three nested runs, with params, loss curves and artifacts.
    client = MlflowClient(mlflow_tracking.tracking_uri)
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
    )
    assert sorted(run.info.run_name for run in children) == ["finetune", "generate", "optimize"]
    runs = {run.info.run_name: run for run in children}
    assert runs["optimize"].data.params["params.steps"] == "4"
    assert runs["optimize"].data.tags["imagic.key"] == a.key
    assert len(client.get_metric_history(a.mlflow_run_id, "loss")) == 4
    assert len(client.get_metric_history(b.mlflow_run_id, "loss")) == 4
    assert "seconds" in runs["generate"].data.metrics
    assert {f.path for f in client.list_artifacts(c.mlflow_run_id)} >= {"grid.png", "images"}
    assert {f.path for f in client.list_artifacts(b.mlflow_run_id)} >= {"finetuned"}
    from_mlflow = client.download_artifacts(
        a.mlflow_run_id, "embeddings.safetensors", str(tmp_path)
    )
    stored = tmp_path / "stored.safetensors"
    store.download_file(f"{a.key}/embeddings.safetensors", stored)
    assert torch.equal(load_file(from_mlflow)["e_opt"], load_file(stored)["e_opt"])

    # A rerun is all cache hits: no model is loaded, and each cached run links its producer.
    again = _run_all(image_uri, tiny_model_dir, store_uri, tracking)
    assert model_loads == ["optimize", "finetune", "generate"]
    assert all(result.cached for result in again)
    cached_run = client.get_run(again[1].mlflow_run_id)
    assert cached_run.data.tags["imagic.cached"] == "true"
    assert cached_run.data.tags["imagic.produced_by_run"] == b.mlflow_run_id

    # New etas re-run only stage C, on the same fine-tuned state.
    resweep = generate_step.run(
        generate_step.Request(
            finetune_key=b.key, store=store_uri, tracking=tracking,
            params=GenerateParams(etas=[0.5], seeds=[1, 2], num_inference_steps=2),
        )
    )  # fmt: skip
    assert not resweep.cached and resweep.key != c.key
    assert model_loads == ["optimize", "finetune", "generate", "generate"]


def test_crash_before_the_manifest_leaves_nothing_done_and_the_rerun_commits(
    tiny_model_dir: Path, input_image: Path, tmp_path: Path, monkeypatch, model_loads
) -> None:
    store_uri = str(tmp_path / "store")
    optimize, common = _requests(str(input_image), tiny_model_dir, store_uri, NO_TRACKING)
    a = optimize_step.run(optimize)
    request = finetune_step.Request(optimize_key=a.key, params=FinetuneParams(steps=3), **common)

    original = FileStore.write_bytes

    def crash_on_manifest(self, key, data):
        if key.startswith("finetune/") and key.endswith("manifest.json"):
            raise RuntimeError("injected crash between the files and the manifest")
        return original(self, key, data)

    monkeypatch.setattr(FileStore, "write_bytes", crash_on_manifest)
    with pytest.raises(RuntimeError, match="injected crash"):
        finetune_step.run(request)
    key_dir = next((tmp_path / "store" / "finetune").iterdir())
    assert (key_dir / "finetuned" / "finetuned.json").is_file()  # some files were written
    assert not (key_dir / "manifest.json").exists()  # ... but the stage is not done
    with pytest.raises(StageNotFoundError, match="Run finetune first"):
        generate_step.run(generate_step.Request(finetune_key=f"finetune/{key_dir.name}", **common))

    monkeypatch.setattr(FileStore, "write_bytes", original)
    b = finetune_step.run(request)
    assert not b.cached and b.key == f"finetune/{key_dir.name}"
    assert model_loads == ["optimize", "finetune", "finetune"]
    assert read_manifest(open_store(store_uri), b.key) is not None
    c = generate_step.run(
        generate_step.Request(
            finetune_key=b.key,
            params=GenerateParams(etas=[1.0], seeds=[0], num_inference_steps=2),
            **common,
        )
    )
    assert not c.cached


def test_corrupted_artifact_is_an_error_never_used(
    tiny_model_dir: Path, input_image: Path, tmp_path: Path
) -> None:
    store_uri = str(tmp_path / "store")
    _, b, _ = _run_all(str(input_image), tiny_model_dir, store_uri, NO_TRACKING)
    weights = next((tmp_path / "store" / b.key / "finetuned" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ChecksumMismatchError, match=r"corrupted.*run the stage again"):
        generate_step.run(
            generate_step.Request(
                finetune_key=b.key, store=store_uri, tracking=NO_TRACKING,
                params=GenerateParams(etas=[0.3], seeds=[0], num_inference_steps=2),
            )
        )  # fmt: skip


def test_unreachable_mlflow_warns_and_the_edit_still_completes(
    tiny_model_dir: Path, input_image: Path, tmp_path: Path
) -> None:
    from tests.integration.servers import free_port

    dead = TrackingOptions(tracking_uri=f"http://127.0.0.1:{free_port()}")
    store_uri = str(tmp_path / "store")
    with pytest.warns(UserWarning, match="untracked"):
        *_, c = _run_all(str(input_image), tiny_model_dir, store_uri, dead)
    assert c.mlflow_run_id is None
    assert read_manifest(open_store(store_uri), c.key) is not None

    required = dead.model_copy(update={"required": True})
    optimize, _ = _requests(str(input_image), tiny_model_dir, str(tmp_path / "s2"), required)
    with pytest.raises(TrackingError, match=r"127\.0\.0\.1"):
        optimize_step.run(optimize)
    assert not (tmp_path / "s2" / "optimize").exists()  # failed before any work


# --- the container entrypoints, as subprocesses with request files -----------------------------


def _step(name: str, request: dict | str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    request_file = tmp_path / f"{name}-request.json"
    text = request if isinstance(request, str) else json.dumps(request)
    request_file.write_text(text)
    command = [
        sys.executable, "-m", f"steps.{name}",
        "--request", str(request_file), "--result", str(tmp_path / f"{name}-result.json"),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_container_entrypoints_chain_through_request_files(
    tiny_model_dir: Path, input_image: Path, tmp_path: Path
) -> None:
    common = {"store": f"file://{tmp_path / 'store'}", "tracking": {"enabled": False}}
    a_request = {
        "image": input_image.as_uri(), "text": "a red circle", "model": str(tiny_model_dir),
        "params": {"steps": 2}, **common,
    }  # fmt: skip
    a = _step("optimize", a_request, tmp_path)
    assert a.returncode == 0, a.stderr
    a_result = json.loads((tmp_path / "optimize-result.json").read_text())
    assert a_result["cached"] is False
    again = _step("optimize", a_request, tmp_path)  # the same request over file:// is cached
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "optimize-result.json").read_text())["cached"] is True
    assert "cache hit" in again.stderr
    b = _step(
        "finetune", {"optimize_key": a_result["key"], "params": {"steps": 2}, **common}, tmp_path
    )
    assert b.returncode == 0, b.stderr
    assert "finetune step 2/2" in b.stderr  # progress in the container log
    b_result = json.loads((tmp_path / "finetune-result.json").read_text())
    c = _step(
        "generate",
        {"finetune_key": b_result["key"], "params": {"etas": [1.0], "seeds": [0],
         "num_inference_steps": 2}, **common},
        tmp_path,
    )  # fmt: skip
    assert c.returncode == 0, c.stderr
    c_result = json.loads((tmp_path / "generate-result.json").read_text())
    assert c_result["stage"] == "generate" and c_result["cached"] is False
    assert c_result["manifest_uri"].startswith("file://")


def test_entrypoint_bad_requests_exit_2_with_every_problem_listed(tmp_path: Path) -> None:
    bad = _step(
        "optimize",
        {"image": "x.png", "text": "", "params": {"steps": "many"}, "colour": "red"},
        tmp_path,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    for fragment in ("4 problem(s)", "text", "model: missing", "params.steps", "colour: unknown"):
        assert fragment in bad.stderr, bad.stderr
    not_json = _step("optimize", "{not json", tmp_path)
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    assert not (tmp_path / "optimize-result.json").exists()

    store = f"file://{tmp_path / 'store'}"
    missing = _step(
        "finetune",
        {"optimize_key": "optimize/0123abcd", "store": store, "tracking": {"enabled": False}},
        tmp_path,
    )
    assert missing.returncode == 2
    assert "optimize/0123abcd" in missing.stderr and "Run optimize first" in missing.stderr
    escape = _step("finetune", {"optimize_key": "../etc/passwd", "store": store}, tmp_path)
    assert escape.returncode == 2 and "'..'" in escape.stderr
