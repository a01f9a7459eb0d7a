"""`imagic toy train` as a user types it: a tiny run, and every bad input refused with exit 2.

Bad inputs call `imagic.cli.main` in-process and check the exit code, that the message names
the flag and the value, that no traceback is printed and that nothing was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import imagic.toyworld.folder
from imagic.cli import main
from imagic.toyworld.checksums import verify_checksums
from imagic.toyworld.config import ToyTrainParams


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    code = main(["toy", "train", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in: {err}"
    return err


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--vae-steps", "0", "vae_steps"),
        ("--unet-steps", "-5", "unet_steps"),
        ("--batch-size", "0", "batch_size"),
        ("--decoder-batch-size", "-2", "decoder_batch_size"),
        ("--checkpoint-every", "-1", "checkpoint_every"),
        ("--grid-size", "0", "grid_size"),
    ],
)
def test_non_positive_counts_are_refused(
    flag: str, value: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _refused(
        ["--out", str(out), flag, value], capsys, f"{field} ({flag}) = {value}", "greater than 0"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "field", "rule"),
    [
        ("--decoder-steps", "-1", "decoder_steps", "greater than or equal to 0"),  # 0: no phase c
        ("--decoder-lr", "0", "decoder_learning_rate", "greater than 0"),
        ("--decoder-lr", "inf", "decoder_learning_rate", "finite number"),  # > 0, trains to NaN
        ("--decoder-area-balance", "-0.5", "decoder_area_balance", "greater than or equal to 0"),
        ("--decoder-area-balance", "2", "decoder_area_balance", "less than or equal to 1"),
        ("--decoder-area-balance", "nan", "decoder_area_balance", "finite number"),
        ("--unet-object-weight", "0.5", "unet_object_weight", "greater than or equal to 1"),
        ("--unet-object-weight", "inf", "unet_object_weight", "finite number"),
        ("--unet-area-balance", "-0.5", "unet_area_balance", "greater than or equal to 0"),
        ("--unet-area-balance", "1.5", "unet_area_balance", "less than or equal to 1"),
        ("--vae-crop-size", "0", "vae_crop_size", "greater than 0"),
        ("--data-workers", "-1", "data_workers", "greater than or equal to 0"),
        ("--vae-crop-size", "30", "vae_crop_size", "a multiple of 4 up to 64 (64: whole scenes)"),
        ("--vae-crop-size", "128", "vae_crop_size", "at most the image size 64"),
    ],
)
def test_bad_vae_training_settings_are_refused(
    flag: str, value: str, field: str, rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _refused(["--out", str(out), flag, value], capsys, f"{field} ({flag}) = {value}", rule)
    assert not out.exists()


def test_an_unknown_precision_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _refused(
        ["--out", str(out), "--precision", "fp64"], capsys,
        "precision (--precision) = 'fp64'", "Input should be 'auto', 'fp32', 'fp16' or 'bf16'",
    )  # fmt: skip
    assert not out.exists()


def test_a_folder_started_with_another_decoder_lr_resumes_with_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder started under an earlier default: the refusal names the flag that resumes it.

    The second call also changes --batch-size, so it stops at the recipe check (no training)
    and shows that --decoder-lr was taken: only batch_size is reported as changed.
    """
    out = tmp_path / "run"
    out.mkdir()
    started = ToyTrainParams(out=str(out), decoder_learning_rate=1.234e-3)
    config = json.dumps(started.model_dump(mode="json"))
    (out / "train_config.json").write_text(config)
    _refused(["--out", str(out)], capsys, "decoder_learning_rate (--decoder-lr) = ", "0.001234")
    err = _refused(["--out", str(out), "--decoder-lr", "0.001234", "--batch-size", "4"], capsys)
    assert "batch_size (--batch-size) = 4" in err
    assert "decoder_learning_rate" not in err
    assert (out / "train_config.json").read_text() == config


def test_a_folder_from_before_the_area_balance_resumes_with_balance_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Releases before `decoder_area_balance` wrote no such field and trained with 0.

    As above, the second call also changes --batch-size, so it stops at the recipe check.
    """
    out = tmp_path / "run"
    out.mkdir()
    started = ToyTrainParams(out=str(out)).model_dump(mode="json")
    # Nor the phase b weights, which came later still: missing, they mean a plain mean (1, 0).
    for field in ("decoder_area_balance", "unet_object_weight", "unet_area_balance"):
        del started[field]
    config = json.dumps(started)
    (out / "train_config.json").write_text(config)
    err = _refused(
        ["--out", str(out)], capsys, "decoder_area_balance (--decoder-area-balance) = 1.0"
    )
    assert "unet_object_weight (--unet-object-weight) = 3.0" in err  # today's defaults
    old_recipe = ["--decoder-area-balance", "0", "--unet-object-weight", "1", "--unet-area-balance"]
    err = _refused(["--out", str(out), *old_recipe, "0", "--batch-size", "4"], capsys)
    assert "batch_size (--batch-size) = 4" in err
    assert "decoder_area_balance" not in err and "unet_" not in err
    err = _refused(["--out", str(out), *old_recipe, "1"], capsys)
    assert "unet_area_balance (--unet-area-balance) = 1.0" in err
    assert (out / "train_config.json").read_text() == config


def test_a_folder_from_before_the_decoder_batch_size_resumes_with_its_batch_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Releases before `decoder_batch_size` trained phase c at `batch_size` and wrote no field:
    such a folder resumes with that batch passed as --decoder-batch-size, and the default
    (16) or any other is a change of recipe. Each call also changes --seed, so none gets past
    the recipe check."""
    out = tmp_path / "run"
    out.mkdir()
    started = ToyTrainParams(out=str(out), batch_size=8).model_dump(mode="json")
    del started["decoder_batch_size"]
    config = json.dumps(started)
    (out / "train_config.json").write_text(config)
    argv = ["--out", str(out), "--batch-size", "8", "--seed", "1"]
    err = _refused([*argv, "--decoder-batch-size", "8"], capsys)
    assert "seed (--seed) = 1" in err
    assert "decoder_batch_size" not in err
    _refused(
        argv, capsys,
        "decoder_batch_size (--decoder-batch-size) = 16, but the folder was started with 8",
    )  # fmt: skip
    assert (out / "train_config.json").read_text() == config


def test_a_start_from_that_is_not_a_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, missing = tmp_path / "run", tmp_path / "no-such.pt"
    _refused(
        ["--out", str(out), "--start-from", str(missing)], capsys,
        f"start_from (--start-from) = '{missing}' is not a file", "checkpoints/*.pt",
    )  # fmt: skip
    assert not out.exists()


def test_every_bad_flag_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--out", str(tmp_path / "run"), "--batch-size", "0", "--device", "gpu"]
    _refused(argv, capsys, "2 problem(s)", "batch_size (--batch-size) = 0", "device (--device)")


def test_a_non_empty_folder_that_is_not_a_training_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"keep me")
    _refused(["--out", str(out)], capsys, str(out), "not a toy training folder")
    assert [path.name for path in out.iterdir()] == ["cat.jpg"]


def test_an_out_under_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    _refused(["--out", str(blocker / "run")], capsys, str(blocker), "is a file")


def test_an_unwritable_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated, so it also holds when the tests run as root (which ignores permissions)."""
    monkeypatch.setattr(imagic.toyworld.folder.os, "access", lambda *args, **kwargs: False)
    out = tmp_path / "run"
    _refused(["--out", str(out)], capsys, "permission denied", "--out")
    assert not out.exists()


@pytest.mark.slow
def test_a_one_step_run_writes_a_loadable_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["toy", "train", "--out", str(out), "--vae-steps", "1", "--unet-steps", "1"]
    argv += ["--decoder-steps", "2", "--decoder-batch-size", "3"]
    fast = ["--grid-size", "2", "--sample-steps", "2", "--device", "cpu"]
    code = main([*argv, "--batch-size", "2", *fast])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote the toy model to" in captured.out
    assert "toy vae" in captured.err and "toy unet" in captured.err  # progress bars
    verify_checksums(out / "model")
    config = json.loads((out / "train_config.json").read_text())
    assert (config["batch_size"], config["decoder_batch_size"]) == (2, 3)
    assert (out / "grid.png").is_file()
    again = main([*argv, "--batch-size", "4"])  # another recipe: refused, folder kept
    assert again == 2
    assert "batch_size (--batch-size) = 4" in capsys.readouterr().err
