"""Shared fixtures: tiny random SD pipelines (epsilon and v-prediction) and input images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from imagic.tiny_model import save_tiny_pipeline


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests are skipped where PyTorch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local MLflow database for the session (creating one takes seconds), never ./mlflow.db."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(autouse=True)
def _restore_mlflow_http_settings() -> Iterator[None]:
    """`open_tracker` sets process-wide MLflow HTTP retry defaults; no test may leak them."""
    from imagic.tracking import HTTP_DEFAULTS

    saved = {name: os.environ.get(name) for name in HTTP_DEFAULTS}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own default artifact store, never ./imagic-data in the checkout."""
    store = tmp_path / "imagic-data"
    monkeypatch.setenv("IMAGIC_STORE", str(store))
    return store


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny epsilon-prediction SD pipeline folder (SD 1.x-like)."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-eps", "epsilon")


@pytest.fixture(scope="session")
def tiny_vpred_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny v-prediction SD pipeline folder (SD 2.x-like)."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-v", "v_prediction")


def draw_scene(size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A simple non-square scene: a red square on a blue background."""
    image = Image.new("RGB", size, (40, 80, 200))
    ImageDraw.Draw(image).rectangle([10, 20, 40, 50], fill=(220, 30, 30))
    return image


@pytest.fixture
def input_image(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    draw_scene().save(path)
    return path
