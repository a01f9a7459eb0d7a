"""Unit tests for imagic.outputs: pre-flight checks and the all-or-nothing output folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import imagic.outputs
from imagic.errors import ImagicError, OutputDirError
from imagic.outputs import check_output_dir, staged_output_dir

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Boom(RuntimeError):
    pass


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def old_result(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "grid.png").write_text("old grid")
    (folder / "old-only.txt").write_text("old")
    return folder


# --- check_output_dir -------------------------------------------------------------------------


def test_new_path_is_ok_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = check_output_dir("results/edit-1")
    assert result == tmp_path / "results" / "edit-1"
    assert result.is_absolute()
    assert not result.exists()  # checking creates nothing


def test_empty_existing_folder_is_ok(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert check_output_dir(tmp_path / "out") == tmp_path / "out"


def test_non_empty_folder_is_refused_without_overwrite(tmp_path: Path) -> None:
    target = old_result(tmp_path / "out")
    with pytest.raises(OutputDirError) as excinfo:
        check_output_dir(target)
    message = str(excinfo.value)
    assert str(target) in message
    assert "not empty" in message
    assert "--overwrite" in message


def test_non_empty_folder_is_ok_with_overwrite(tmp_path: Path) -> None:
    target = old_result(tmp_path / "out")
    assert check_output_dir(target, overwrite=True) == target
    assert listing(target) == ["grid.png", "old-only.txt"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_file_is_refused(tmp_path: Path, overwrite: bool) -> None:
    target = tmp_path / "result.png"
    target.write_text("not a folder")
    with pytest.raises(OutputDirError) as excinfo:
        check_output_dir(target, overwrite=overwrite)
    message = str(excinfo.value)
    assert str(target) in message
    assert "is a file" in message
    assert "--out" in message


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root ignores folder permissions")
def test_unwritable_parent_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputDirError) as excinfo:
            check_output_dir(locked / "new" / "out")
    finally:
        locked.chmod(0o700)
    message = str(excinfo.value)
    assert f"cannot write into '{locked}'" in message
    assert "permission denied" in message


def test_unwritable_parent_is_refused_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Works as root too: the permission check itself is what is simulated."""
    checked: list[tuple[str, int]] = []

    def no_write_access(path: os.PathLike[str] | str, mode: int, **kwargs: object) -> bool:
        checked.append((os.fspath(path), mode))
        return False

    monkeypatch.setattr(imagic.outputs.os, "access", no_write_access)
    target = tmp_path / "deeper" / "out"
    with pytest.raises(OutputDirError) as excinfo:
        check_output_dir(target)
    message = str(excinfo.value)
    assert str(target) in message
    assert f"cannot write into '{tmp_path}'" in message  # nearest existing parent
    assert "choose a folder you can write to" in message
    assert checked == [(str(tmp_path), os.W_OK | os.X_OK)]


@pytest.mark.parametrize("mode", [0o644, 0o755], ids=["mode644", "mode755"])
def test_output_under_a_file_is_refused(tmp_path: Path, mode: int) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    blocker.chmod(mode)
    with pytest.raises(OutputDirError) as excinfo:
        check_output_dir(blocker / "sub" / "out")
    message = str(excinfo.value)
    assert str(blocker) in message
    assert re.search(r"is a file|not a folder", message), message
    with pytest.raises(OutputDirError), staged_output_dir(blocker / "sub" / "out"):
        pass


def test_output_errors_are_imagic_errors() -> None:
    assert issubclass(OutputDirError, ImagicError)


# --- staged_output_dir ------------------------------------------------------------------------


def test_success_commits_the_contents(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with staged_output_dir(target) as staging:
        assert staging.parent == tmp_path
        assert staging != target
        assert not target.exists()  # nothing under the target name while writing
        (staging / "grid.png").write_text("grid")
        (staging / "images").mkdir()
        (staging / "images" / "a.png").write_text("a")
    assert (target / "grid.png").read_text() == "grid"
    assert (target / "images" / "a.png").read_text() == "a"
    assert not staging.exists()
    assert listing(tmp_path) == ["out"]  # no staging folder left beside it


def test_success_into_an_existing_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with staged_output_dir(target) as staging:
        (staging / "grid.png").write_text("grid")
    assert listing(target) == ["grid.png"]
    assert listing(tmp_path) == ["out"]


def test_failure_leaves_no_target_and_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(Boom), staged_output_dir(target) as staging:
        (staging / "half.png").write_text("half")
        raise Boom("crash mid-edit")
    assert not target.exists()
    assert not staging.exists()
    assert listing(tmp_path) == []


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), staged_output_dir(target) as staging:
        (staging / "half.png").write_text("half")
        raise KeyboardInterrupt
    assert listing(tmp_path) == []


def test_refuses_non_empty_target_before_the_block_runs(tmp_path: Path) -> None:
    target = old_result(tmp_path / "out")
    ran = False
    with pytest.raises(OutputDirError, match="--overwrite"), staged_output_dir(target):
        ran = True
    assert not ran
    assert listing(target) == ["grid.png", "old-only.txt"]
    assert listing(tmp_path) == ["out"]


def test_overwrite_keeps_old_contents_when_the_block_fails(tmp_path: Path) -> None:
    target = old_result(tmp_path / "out")
    with pytest.raises(Boom), staged_output_dir(target, overwrite=True) as staging:
        (staging / "grid.png").write_text("new grid")
        raise Boom
    assert listing(target) == ["grid.png", "old-only.txt"]
    assert (target / "grid.png").read_text() == "old grid"
    assert listing(tmp_path) == ["out"]


def test_overwrite_replaces_old_contents_after_success(tmp_path: Path) -> None:
    target = old_result(tmp_path / "out")
    with staged_output_dir(target, overwrite=True) as staging:
        (staging / "grid.png").write_text("new grid")
        assert (target / "grid.png").read_text() == "old grid"  # untouched until the end
    assert listing(target) == ["grid.png"]  # old-only.txt is gone: replaced, not merged
    assert (target / "grid.png").read_text() == "new grid"
    assert listing(tmp_path) == ["out"]  # no staging or retired folder left behind


def test_nested_target_parent_is_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with staged_output_dir(target) as staging:
        (staging / "manifest.json").write_text("{}")
    assert (target / "manifest.json").read_text() == "{}"
    assert listing(target.parent) == ["out"]
