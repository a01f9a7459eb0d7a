"""The `imagic` command as a user runs it: a tiny model folder, an edit, and every bad input.

The happy paths run the installed console script in a subprocess; the bad inputs call
`imagic.cli.main` in-process (same code, no interpreter start-up per case) and check the exit
code, the message (field, value, fix), that no traceback is printed and that nothing is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from imagic.cli import main
from imagic.images import read_png_provenance
from tests.conftest import draw_scene

FAST = ["--steps-a", "3", "--steps-b", "3", "--steps-c", "3"]


def _imagic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "imagic", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_readme_flow_tiny_model_then_edit(tmp_path: Path) -> None:
    made = _imagic("tiny-model", "--out", "tiny-sd", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "tiny-sd" / "model_index.json").is_file()
    draw_scene().save(tmp_path / "in.png")

    edit = _imagic(
        "edit", "--image", "in.png", "--text", "a red circle", "--model", "tiny-sd",
        "--eta", "0", "0.7", "1.1", "--seeds", "4", "9", "--out", "result", *FAST,
        cwd=tmp_path,
    )  # fmt: skip
    assert edit.returncode == 0, edit.stderr
    assert "Traceback" not in edit.stderr
    assert "optimize: file://" in edit.stdout and "generate: file://" in edit.stdout
    assert "MLflow run " in edit.stdout
    for stage in ("optimize", "finetune", "generate"):
        assert stage in edit.stderr  # one progress bar per stage
    out = tmp_path / "result"
    manifest = json.loads((out / "manifest.json").read_text())

    pairs = [(item["seed"], item["eta"]) for item in manifest["images"]]
    assert pairs == [(s, e) for s in (4, 9) for e in (0.0, 0.7, 1.1)]
    for item in manifest["images"]:
        image = Image.open(out / item["file"])
        assert image.size == (64, 64)
        provenance = read_png_provenance(out / item["file"])
        assert float(provenance["eta"]) == item["eta"]
        assert int(provenance["seed"]) == item["seed"]
        assert provenance["text"] == "a red circle"
    listed = set(manifest["files"])
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json"}
    assert {"grid.png", "input.png", "embeddings.safetensors"} <= listed
    assert manifest["spec"]["generate"]["etas"] == [0.0, 0.7, 1.1]
    assert manifest["model"]["resolution"] == [64, 64]
    assert len(manifest["stages"]["optimize"]["losses"]) == 3
    grid = Image.open(out / "grid.png")
    assert grid.width > 3 * 64 and grid.height > 2 * 64  # 3 etas across, 2 seeds down, labels

    again = _imagic(
        "edit", "--image", "in.png", "--text", "a red circle", "--model", "tiny-sd",
        "--out", "result", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 2
    assert "--overwrite" in again.stderr
    assert json.loads((out / "manifest.json").read_text()) == manifest  # untouched


@pytest.mark.slow
def test_lora_edit_on_a_v_prediction_model(tmp_path: Path, tiny_vpred_model_dir: Path) -> None:
    draw_scene().save(tmp_path / "in.png")
    code = main(
        ["edit", "--image", str(tmp_path / "in.png"), "--text", "a red circle",
         "--model", str(tiny_vpred_model_dir), "--lora", "--eta", "0.7", "--seeds", "0",
         "--out", str(tmp_path / "out"), *FAST]
    )  # fmt: skip
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["prediction_type"] == "v_prediction"
    assert manifest["spec"]["finetune"]["learning_rate"] == 1e-4
    assert manifest["finetuned"]["kind"] == "lora"
    weights = Path(urlparse(manifest["finetuned"]["uri"]).path)  # in the (file://) store
    assert (weights / "adapter_model.safetensors").is_file()


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imagic", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip().startswith("imagic 0.")


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture
def edit_args(tmp_path: Path, tiny_model_dir: Path, input_image: Path):
    """Build `imagic edit` argv with valid defaults that one case then breaks."""

    def build(**overrides: str | list[str] | None) -> list[str]:
        values: dict[str, str | list[str] | None] = {
            "--image": str(input_image),
            "--text": "a red circle",
            "--model": str(tiny_model_dir),
            "--out": str(tmp_path / "out"),
        }
        values.update(overrides)
        argv = ["edit", *FAST]
        for flag, value in values.items():
            if value is None:
                continue
            argv += [flag, *value] if isinstance(value, list) else [flag, value]
        return argv

    return build


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Run, expect exit code 2, no traceback, the expected fragments and no output folder."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in: {err}"
    out = Path(argv[argv.index("--out") + 1])
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return err


def _image_file(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _truncated(tmp_path: Path, fmt: str) -> str:
    path = tmp_path / f"cut.{fmt.lower()}"
    draw_scene((256, 256)).save(path, fmt)
    return _image_file(tmp_path, path.name, path.read_bytes()[: path.stat().st_size // 2])


def test_missing_image(edit_args, capsys, tmp_path: Path) -> None:
    _fails(edit_args(**{"--image": str(tmp_path / "nope.png")}), capsys, "nope.png", "image")


def test_image_is_a_directory(edit_args, capsys, tmp_path: Path) -> None:
    _fails(edit_args(**{"--image": str(tmp_path)}), capsys, str(tmp_path), "director")


def test_empty_image_file(edit_args, capsys, tmp_path: Path) -> None:
    empty = _image_file(tmp_path, "empty.png", b"")
    _fails(edit_args(**{"--image": empty}), capsys, "empty.png", "0 bytes")


def test_not_an_image(edit_args, capsys, tmp_path: Path) -> None:
    text = _image_file(tmp_path, "notes.png", b"just some text, not pixels\n" * 4)
    _fails(edit_args(**{"--image": text}), capsys, "notes.png", "PNG, JPEG")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(edit_args, capsys, tmp_path: Path, fmt: str) -> None:
    _fails(edit_args(**{"--image": _truncated(tmp_path, fmt)}), capsys, "cut.", "truncated")


def test_image_too_small(edit_args, capsys, tmp_path: Path) -> None:
    draw_scene((63, 200)).save(tmp_path / "small.png")
    _fails(edit_args(**{"--image": str(tmp_path / "small.png")}), capsys, "small.png", "63")


def test_decompression_bomb_limit(edit_args, capsys) -> None:
    err = _fails(edit_args(**{"--max-megapixels": "0.001"}), capsys, "--max-megapixels")
    assert "0.001" in err


def test_animated_gif_uses_the_first_frame_with_a_warning(
    edit_args, capsys, tmp_path: Path
) -> None:
    frames = [Image.new("RGB", (80, 80), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    argv = edit_args(**{"--image": str(tmp_path / "anim.gif"), "--seeds": ["0"], "--eta": ["1"]})
    with pytest.warns(UserWarning, match="3 frames: using frame 0"):
        assert main(argv) == 0


@pytest.mark.parametrize("text", ["", "   \t "])
def test_empty_text(edit_args, capsys, text: str) -> None:
    _fails(edit_args(**{"--text": text}), capsys, "text (--text)", "empty")


def test_text_too_long(edit_args, capsys) -> None:
    _fails(edit_args(**{"--text": "a red circle " * 10}), capsys, "text", "limit of 77", "Shorten")


@pytest.mark.parametrize(
    ("flag", "value", "fragments"),
    [
        ("--eta", ["-0.1"], ["--eta", "-0.1", "[0, 1.5]"]),
        ("--eta", ["1.6"], ["--eta", "1.6", "[0, 1.5]"]),
        ("--eta", ["0.5", "0.5"], ["--eta", "not repeat"]),
        ("--seeds", ["-1"], ["--seeds", "-1"]),
        ("--seeds", ["2", "2"], ["--seeds", "not repeat"]),
        ("--steps-a", "0", ["--steps-a", "= 0", "greater than 0"]),
        ("--steps-b", "-5", ["--steps-b", "-5", "greater than 0"]),
        ("--steps-c", "0", ["--steps-c", "greater than 0"]),
        ("--lr-a", "0", ["--lr-a", "greater than 0"]),
        ("--lr-b", "-0.00001", ["--lr-b", "-1e-05", "greater than 0"]),
        ("--guidance", "-1", ["--guidance", "-1", "greater than or equal to 0"]),
        ("--guidance-rescale", "1.5", ["--guidance-rescale", "1.5", "less than or equal to 1"]),
        ("--lr-a", "inf", ["--lr-a", "inf", "finite number"]),  # > 0, yet NaN a step later
        ("--guidance", "nan", ["--guidance", "nan", "finite number"]),
        ("--eta", ["nan"], ["--eta", "nan", "finite number"]),
        ("--precision", "fp8", ["--precision", "'fp8'", "'bf16'"]),
        ("--device", "tpu", ["--device", "'tpu'", "cuda:N"]),
        ("--fit", "stretch", ["--fit", "'stretch'", "'crop' or 'pad'"]),
        ("--scheduler", "magic", ["--scheduler", "'magic'", "'ddim'"]),
    ],
)
def test_bad_params(edit_args, capsys, flag: str, value, fragments: list[str]) -> None:
    _fails(edit_args(**{flag: value}), capsys, *fragments)


def test_several_bad_params_are_reported_together(edit_args, capsys) -> None:
    argv = edit_args(**{"--eta": ["2"], "--steps-a": "0", "--guidance": "-3"})
    err = _fails(argv, capsys, "3 problem(s)", "--eta", "--steps-a", "--guidance")
    assert err.count("\n  ") == 3


def test_no_eta_values(edit_args) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse: "expected at least one argument"
        main(edit_args(**{"--eta": []}))
    assert exit_info.value.code == 2


def test_cuda_where_there_is_none(edit_args, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    _fails(edit_args(**{"--device": "cuda"}), capsys, "'cuda'", "no CUDA GPU", "--device cpu")


def test_half_precision_on_cpu(edit_args, capsys) -> None:
    _fails(edit_args(**{"--device": "cpu", "--precision": "fp16"}), capsys, "'fp16'", "fp32")


def test_model_folder_missing(edit_args, capsys, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-model")
    _fails(edit_args(**{"--model": missing}), capsys, missing, "imagic tiny-model")


def test_model_folder_not_a_pipeline(edit_args, capsys, tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    _fails(edit_args(**{"--model": str(tmp_path / "stuff")}), capsys, "model_index.json")


def test_empty_model(edit_args, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGIC_MODEL", raising=False)
    _fails(edit_args(**{"--model": ""}), capsys, "--model", "imagic:toy")


def test_hub_id_while_offline(edit_args, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _fails(edit_args(**{"--model": "nobody/no-such-model"}), capsys, "nobody/no-such-model")
    assert "--model" in err and "local" in err


def test_out_is_an_existing_non_empty_folder(edit_args, capsys, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    assert main(edit_args(**{"--out": str(out)})) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier results"


def test_overwrite_replaces_only_after_success(edit_args, capsys, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    bad = [*edit_args(**{"--out": str(out), "--text": "a red circle " * 10}), "--overwrite"]
    assert main(bad) == 2
    assert (out / "keep.txt").read_text() == "earlier results"  # failure touched nothing
    good = [*edit_args(**{"--out": str(out), "--seeds": ["0"], "--eta": ["1"]}), "--overwrite"]
    assert main(good) == 0
    assert not (out / "keep.txt").exists()
    assert (out / "manifest.json").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_out_not_writable(edit_args, capsys, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _fails(edit_args(**{"--out": str(locked / "out")}), capsys, "permission denied")


def test_out_not_writable_as_root_too(edit_args, capsys, monkeypatch, tmp_path: Path) -> None:
    """Root ignores permission bits, so simulate the check's answer for a read-only mount."""
    monkeypatch.setattr("imagic.outputs.os.access", lambda path, mode: False)
    _fails(edit_args(), capsys, "cannot write into", "permission denied")


def test_tiny_model_refuses_a_non_empty_out(tmp_path: Path, capsys) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["tiny-model", "--out", str(tmp_path / "busy")]) == 2
    assert "--overwrite" in capsys.readouterr().err


# --- store and tracking flags -------------------------------------------------------------------


def test_store_and_tracking_flags(edit_args, capsys, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store, db = tmp_path / "my-store", tmp_path / "runs.db"
    argv = edit_args(**{"--store": str(store), "--tracking-uri": f"sqlite:///{db}"})
    assert main([*argv, "--experiment", "cli", "--seeds", "0", "--eta", "1"]) == 0
    out = capsys.readouterr().out
    for stage in ("optimize", "finetune", "generate"):
        assert f"{stage}: {store.as_uri()}/{stage}/" in out
        assert len(list((store / stage).iterdir())) == 1
    run_id = out.split("MLflow run ")[1].split()[0]
    client = MlflowClient(f"sqlite:///{db}")
    parent = client.get_run(run_id)
    assert parent.data.params["text"] == "a red circle"
    assert client.get_experiment(parent.info.experiment_id).name == "cli"


def test_no_tracking_touches_no_mlflow(edit_args, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    argv = edit_args(**{"--seeds": ["0"], "--eta": ["1"]})
    assert main([*argv, "--no-tracking"]) == 0
    assert "MLflow run" not in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_tracking_required_but_unreachable(edit_args, capsys) -> None:
    from tests.integration.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    argv = [*edit_args(**{"--tracking-uri": dead}), "--tracking-required"]
    _fails(argv, capsys, dead)


def test_store_that_cannot_be_used(edit_args, capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _fails(edit_args(**{"--store": str(blocker / "store")}), capsys, "store", "--store")
    _fails(edit_args(**{"--store": "ftp://host/x"}), capsys, "'ftp'", "s3://")
