"""The `batch-edit` deployment on a real Prefect server and worker, over a manifest in S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient

from tests.integration.conftest import PrefectStack
from tests.integration.prefect_runs import artifacts_of, child_runs, trigger, wait_final

pytestmark = pytest.mark.slow

BUCKET = "imagic-prefect"
SMALL = "optimize.steps,finetune.steps,generate.num_inference_steps,generate.etas,generate.seeds"


def upload(stack: PrefectStack, key: str, data: bytes) -> str:
    stack.s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def read_json(stack: PrefectStack, key: str) -> dict:
    return json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_batch_runs_the_good_rows_reports_the_bad_one_and_a_rerun_skips_finished_edits(
    prefect_client: SyncPrefectClient,
    prefect_api: PrefectStack,
    input_uri: str,
    tiny_model_dir: Path,
):
    folder = "batches/" + input_uri.rsplit("/", 2)[-2]
    image_name = input_uri.rsplit("/", 1)[-1]
    upload(prefect_api, f"{folder}/{image_name}", prefect_api.s3.client().get_object(
        Bucket=BUCKET, Key=input_uri.removeprefix(f"s3://{BUCKET}/"))["Body"].read())  # fmt: skip
    manifest = (
        f"image,text,model,{SMALL}\n"
        f"{image_name},a red circle on the left,,3,3,2,0.5,0\n"  # relative to the manifest
        f"{input_uri},a blue square,,3,3,2,0.5 0.8,0\n"
        f"{input_uri},a red star,/no/such/model,3,3,2,0.5,0\n"  # valid, fails in stage A
        "missing.png,a green star,,3,3,2,0.5,0\n"  # invalid: reported before any work
    )
    manifest_uri = upload(prefect_api, f"{folder}/edits.csv", manifest.encode())
    parameters = {"manifest_uri": manifest_uri, "model": str(tiny_model_dir)}

    run = trigger(prefect_client, "imagic-batch-edit/batch-edit", parameters)
    run = wait_final(prefect_client, run.id)
    assert run.state.is_failed()  # rows failed: the run says so...
    assert "2 of 4 edits failed or were invalid" in run.state.message

    # ...and the others finished
    summary = read_json(prefect_api, f"{folder}/edits.csv.summary.json")
    statuses = [(row["row"], row["status"]) for row in summary["rows"]]
    assert statuses == [(1, "done"), (2, "done"), (3, "failed"), (4, "invalid")]
    assert "/no/such/model" in summary["rows"][2]["error"]
    assert "missing.png" in summary["rows"][3]["error"]
    assert "does not exist" in summary["rows"][3]["error"]
    assert all(row["grid_uri"].startswith(prefect_api.store) for row in summary["rows"][:2])
    edits = child_runs(prefect_client, run.id)
    assert [edit.state.is_completed() for edit in edits].count(True) == 2
    table = json.loads(artifacts_of(prefect_client, run.id)["table"].data)
    assert [row["status"] for row in table] == ["done", "done", "failed", "invalid"]
    limit = prefect_client.read_global_concurrency_limit_by_name("tag:gpu")
    assert limit.limit >= 1  # GPU stages are bounded by a Prefect concurrency limit

    rerun = trigger(prefect_client, "imagic-batch-edit/batch-edit", parameters)
    rerun = wait_final(prefect_client, rerun.id)
    summary = read_json(prefect_api, f"{folder}/edits.csv.summary.json")
    statuses = [row["status"] for row in summary["rows"]]
    assert statuses == ["skipped", "skipped", "failed", "invalid"]
    assert len(child_runs(prefect_client, rerun.id)) == 1  # only the failed edit ran again


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("absent.csv", None, "cannot read the manifest"),
        ("empty.csv", b"", "the manifest is empty"),
        ("notes.txt", b"just some words\n", "neither JSON nor CSV"),
        ("bad.json", b"[{", "not valid JSON"),
        ("columns.csv", b"image,text,colour\na.png,x,red\n", "unknown column(s) colour"),
    ],
)
def test_bad_manifests_fail_the_batch_with_a_clear_message(
    prefect_api: PrefectStack,
    aws_env,
    tiny_model_dir: Path,
    tmp_path: Path,
    name: str,
    content: bytes | None,
    expected: str,
):
    from flows.batch import batch_edit
    from flows.manifest import ManifestError

    key = f"batches/bad/{tmp_path.name}/{name}"
    uri = f"s3://{BUCKET}/{key}" if content is None else upload(prefect_api, key, content)
    with pytest.raises(ManifestError) as info:
        batch_edit(manifest_uri=uri, model=str(tiny_model_dir))
    assert expected in str(info.value)
    assert uri in str(info.value) or "row 1" in str(info.value)
    summary_key = f"{key}.summary.json"
    listed = prefect_api.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=summary_key)
    assert listed.get("KeyCount", 0) == 0  # nothing was run, nothing written
