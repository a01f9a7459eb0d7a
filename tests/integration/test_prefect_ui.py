"""The Prefect UI in headless Chromium: the imagic-edit run form and a finished run's artifacts.

A real `prefect server start` (with prefect.yaml deployed and process workers) serves its UI;
scripts/prefect_ui_screenshots.py dumps the DOM of the deployment's custom-run form and saves
screenshots of it and of the Artifacts tab of an edit run triggered from the deployment. The
checks read the rendered DOM (field labels, artifact keys) and the PNGs' headers and sizes, never
pixels. `IMAGIC_UI_SCREENSHOTS=<folder>` keeps a copy of the captures (the ones in docs/).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient

from scripts.prefect_ui_screenshots import ChromiumError, capture, find_chromium, labels, page_text
from tests.integration.conftest import PrefectStack
from tests.integration.prefect_runs import small_spec, trigger, wait_final


def has_chromium() -> bool:
    try:
        find_chromium()
    except ChromiumError:
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not has_chromium(),
        reason="needs Chromium: `chromium` on PATH (Debian: apt-get install chromium) or $CHROMIUM",
    ),
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def field_name(label: str) -> str:
    """A form label as a field name: `OptimizeParams (Optional)` -> `optimizeparams`."""
    return label.removesuffix("(Optional)").strip().lower()


def test_run_form_shows_the_edit_spec_fields_and_the_run_shows_its_artifacts(
    prefect_client: SyncPrefectClient,
    prefect_api: PrefectStack,
    input_uri: str,
    tiny_model_dir: Path,
    tmp_path: Path,
):
    run = trigger(
        prefect_client, "imagic-edit/imagic-edit", {"spec": small_spec(input_uri, tiny_model_dir)}
    )
    run = wait_final(prefect_client, run.id)
    assert run.state.is_completed(), run.state.message

    shots = capture(prefect_api.server.url, run.deployment_id, run.id, tmp_path / "ui")

    fields = [field_name(label) for label in labels(shots.form_dom)]
    assert {"spec", "image", "text", "model"} <= set(fields), fields
    for section in ("stage a: optimize", "stage b: fine-tune", "stage c: generate"):
        assert any(field.startswith(section) for field in fields), (section, fields)
    assert {"steps", "etas", "seeds", "num inference steps"} <= set(fields), fields
    text = " ".join(page_text(shots.form_dom)).lower()
    assert "target text, e.g." in text  # the EditSpec field descriptions are shown
    assert "imagic-edit" in text and "submit" in text
    assert "can't connect" not in text and "cannot connect" not in text

    artifacts = page_text(shots.artifacts_dom)
    assert {"imagic-edit-summary", "imagic-edit-outputs", "imagic-edit-grid"} <= set(artifacts)

    for png, minimum in ((shots.form_png, (1000, 1000)), (shots.artifacts_png, (1000, 600))):
        width, height = png_size(png)
        assert width >= minimum[0] and height >= minimum[1], (png, width, height)
        assert png.stat().st_size > 30_000, f"{png} is suspiciously small (blank page?)"

    if keep := os.environ.get("IMAGIC_UI_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        for path in shots.paths:
            shutil.copy(path, Path(keep) / path.name)
