"""The file:// backend, opening stores from URIs, and the stage commit protocol on a FileStore."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from imagic.errors import ChecksumMismatchError, InvalidKeyError, StorageError
from imagic.storage import local
from imagic.storage.local import FileStore
from imagic.storage.stage_record import (
    MANIFEST_NAME,
    commit_stage,
    fetch_file,
    fetch_files,
    read_manifest,
)
from imagic.storage.uri import DEFAULT_STORE, STORE_ENV, open_store, read_uri_bytes


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- FileStore -------------------------------------------------------------------------------


def test_round_trips(store: FileStore, tmp_path: Path):
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(3000))
    assert not store.exists("run/weights.bin")

    store.upload_file(source, "run/weights.bin")
    store.write_bytes("run/notes.txt", b"hello")

    assert store.exists("run/weights.bin") and store.exists("run/notes.txt")
    assert store.read_bytes("run/weights.bin") == source.read_bytes()
    assert store.read_bytes("run/notes.txt") == b"hello"
    dest = tmp_path / "out" / "deep" / "copy.bin"
    store.download_file("run/weights.bin", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert _files_under(store.root) == ["run/notes.txt", "run/weights.bin"]


def test_overwrite_and_nested_keys(store: FileStore):
    store.write_bytes("a/b/c/d/e.json", b"1")
    store.write_bytes("a/b/c/d/e.json", b"2")
    assert store.read_bytes("a/b/c/d/e.json") == b"2"
    assert (store.root / "a" / "b" / "c" / "d" / "e.json").read_bytes() == b"2"
    assert not store.exists("a/b/c/d")  # a folder is not an object
    assert not store.exists("a/b/c/d/e")


def test_uri_and_uri_for(tmp_path: Path):
    store = FileStore(tmp_path / "store")
    assert store.uri == (tmp_path / "store").as_uri()
    assert store.uri.startswith("file:///")
    assert store.uri_for("stage/abc/manifest.json") == f"{store.uri}/stage/abc/manifest.json"
    with pytest.raises(InvalidKeyError):
        store.uri_for("../x")


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    store = FileStore("rel/store")
    assert store.root == tmp_path / "rel" / "store"
    assert store.uri == (tmp_path / "rel" / "store").as_uri()


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/passwd", "a\\b", "a\nb"])
def test_unsafe_keys_are_refused_before_touching_the_disk(
    store: FileStore, tmp_path: Path, key: str
):
    source = tmp_path / "src.txt"
    source.write_bytes(b"x")
    before = _files_under(tmp_path)
    for attempt in (
        lambda: store.write_bytes(key, b"x"),
        lambda: store.upload_file(source, key),
        lambda: store.read_bytes(key),
        lambda: store.exists(key),
        lambda: store.download_file(key, tmp_path / "dl" / "x"),
    ):
        with pytest.raises(InvalidKeyError, match=r"Use a relative path"):
            attempt()
    assert _files_under(tmp_path) == before
    assert not store.root.exists()
    assert not (tmp_path / "dl").exists()


def test_missing_object_is_a_storage_error(store: FileStore, tmp_path: Path):
    uri = store.uri_for("nope/missing.bin")
    with pytest.raises(StorageError, match=f"^{re.escape(repr(uri))} does not exist in the store"):
        store.read_bytes("nope/missing.bin")
    with pytest.raises(StorageError, match="does not exist in the store"):
        store.download_file("nope/missing.bin", tmp_path / "dl" / "missing.bin")
    assert not (tmp_path / "dl" / "missing.bin").exists()


def _failing_copy(src, dst, *args, **kwargs):
    Path(dst).write_bytes(b"partial")  # a copy that dies halfway
    raise OSError(28, "No space left on device")


def test_failed_upload_leaves_no_object_and_no_temp_file(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    source = tmp_path / "big.bin"
    source.write_bytes(b"complete content")
    monkeypatch.setattr(shutil, "copyfile", _failing_copy)
    with pytest.raises(OSError, match="No space left"):
        store.upload_file(source, "run/big.bin")
    assert not store.exists("run/big.bin")
    assert _files_under(store.root) == []


def test_failed_overwrite_keeps_the_old_content(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    source = tmp_path / "new.bin"
    source.write_bytes(b"new content")
    store.write_bytes("run/model.bin", b"old content")

    monkeypatch.setattr(shutil, "copyfile", _failing_copy)
    with pytest.raises(OSError):
        store.upload_file(source, "run/model.bin")
    assert store.read_bytes("run/model.bin") == b"old content"
    assert _files_under(store.root) == ["run/model.bin"]


def test_failed_rename_keeps_the_old_content(store: FileStore, monkeypatch: pytest.MonkeyPatch):
    store.write_bytes("run/manifest.json", b"old")

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local.os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        store.write_bytes("run/manifest.json", b"new")
    monkeypatch.undo()
    assert store.read_bytes("run/manifest.json") == b"old"
    assert _files_under(store.root) == ["run/manifest.json"]


def test_check_creates_the_folder(store: FileStore):
    assert not store.root.exists()
    store.check()
    assert store.root.is_dir()


def test_check_on_an_unwritable_folder(store: FileStore, monkeypatch: pytest.MonkeyPatch):
    store.root.mkdir(parents=True)
    real_access = os.access
    # Tests may run as root, who can write anywhere: simulate the permission check failing.
    monkeypatch.setattr(
        local.os,
        "access",
        lambda path, mode, **kw: False if Path(path) == store.root else real_access(path, mode),
    )
    with pytest.raises(StorageError, match="not writable") as info:
        store.check()
    assert store.uri in str(info.value)
    assert "--store" in str(info.value)


def test_check_when_the_folder_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = FileStore(blocker / "store")
    with pytest.raises(StorageError, match="cannot create the store folder") as info:
        store.check()
    assert store.uri in str(info.value)
    assert "IMAGIC_STORE" in str(info.value)


# -- open_store / read_uri_bytes -------------------------------------------------------------


def test_open_store_plain_path(tmp_path: Path):
    store = open_store(str(tmp_path / "data"))
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "data"


def test_open_store_file_uri(tmp_path: Path):
    store = open_store((tmp_path / "data").as_uri())
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "data"
    assert open_store(f"file://localhost{tmp_path / 'data'}").root == tmp_path / "data"


def test_open_store_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    assert open_store().root == tmp_path / DEFAULT_STORE.removeprefix("./")
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "from-env"))
    assert open_store().root == tmp_path / "from-env"


def test_open_store_refuses_a_file_uri_with_a_host():
    with pytest.raises(StorageError, match="three slashes") as info:
        open_store("file://relative-host/data")
    assert "'file://relative-host/data'" in str(info.value)


@pytest.mark.parametrize("uri", ["ftp://host/data", "gs://bucket/prefix", "http://x/y"])
def test_open_store_refuses_unknown_schemes(uri: str):
    with pytest.raises(StorageError, match="unsupported scheme") as info:
        open_store(uri)
    assert repr(uri) in str(info.value)
    assert "s3://bucket/prefix" in str(info.value)


def test_read_uri_bytes_for_a_path_and_a_file_uri(tmp_path: Path):
    path = tmp_path / "in put.png"
    path.write_bytes(b"\x89PNG...")
    assert read_uri_bytes(str(path)) == b"\x89PNG..."
    assert read_uri_bytes(path.as_uri()) == b"\x89PNG..."  # percent-encoded space


# -- stage_record on a FileStore -------------------------------------------------------------


def _stage_files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "outputs"
    (folder / "unet").mkdir(parents=True)
    files = {
        "embeddings.safetensors": folder / "embeddings.safetensors",
        "unet/diffusion_pytorch_model.safetensors": folder / "unet" / "weights.safetensors",
        "unet/config.json": folder / "unet" / "config.json",
    }
    files["embeddings.safetensors"].write_bytes(os.urandom(2048))
    files["unet/diffusion_pytorch_model.safetensors"].write_bytes(os.urandom(5000))
    files["unet/config.json"].write_text('{"sample_size": 8}')
    return files


def test_commit_stage_writes_files_first_and_the_manifest_last(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    files = _stage_files(tmp_path)
    calls: list[tuple[str, str]] = []
    upload, write = store.upload_file, store.write_bytes

    def recording_upload(local_path, key):
        calls.append(("upload_file", key))
        upload(local_path, key)

    def recording_write(key, data):
        calls.append(("write_bytes", key))
        assert all(store.exists(f"finetune/abc/{name}") for name in files)  # files are there
        write(key, data)

    monkeypatch.setattr(store, "upload_file", recording_upload)
    monkeypatch.setattr(store, "write_bytes", recording_write)

    manifest = commit_stage(store, "finetune/abc", files, {"stage": "finetune", "steps": 3})

    assert calls[-1] == ("write_bytes", f"finetune/abc/{MANIFEST_NAME}")
    assert sorted(calls[:-1]) == sorted(("upload_file", f"finetune/abc/{n}") for n in files)
    assert len(calls) == len(files) + 1
    assert manifest["stage"] == "finetune" and manifest["steps"] == 3
    assert manifest["key"] == "finetune/abc"
    assert manifest["store"] == store.uri
    for name, path in files.items():
        entry = manifest["files"][name]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["size"] == path.stat().st_size
    assert read_manifest(store, "finetune/abc") == manifest


def test_read_manifest_is_none_for_an_uncommitted_key(store: FileStore, tmp_path: Path):
    assert read_manifest(store, "optimize/abc") is None
    for name, path in _stage_files(tmp_path).items():  # a crashed run: files, no manifest
        store.upload_file(path, f"optimize/abc/{name}")
    assert store.exists("optimize/abc/embeddings.safetensors")
    assert read_manifest(store, "optimize/abc") is None


def test_fetch_file_verifies_the_checksum(store: FileStore, tmp_path: Path):
    files = _stage_files(tmp_path)
    manifest = commit_stage(store, "finetune/abc", files, {})

    dest = tmp_path / "fetched" / "config.json"
    assert fetch_file(store, "finetune/abc", manifest, "unet/config.json", dest) == dest
    assert dest.read_bytes() == files["unet/config.json"].read_bytes()

    fetch_files(store, "finetune/abc", manifest, tmp_path / "all", prefix="unet/")
    assert _files_under(tmp_path / "all") == [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]

    stored = store.root / "finetune" / "abc" / "unet" / "diffusion_pytorch_model.safetensors"
    stored.write_bytes(b"bit rot" + stored.read_bytes()[7:])  # same size, other content
    bad_dest = tmp_path / "fetched" / "weights.safetensors"
    name = "unet/diffusion_pytorch_model.safetensors"
    with pytest.raises(ChecksumMismatchError, match="is corrupted") as info:
        fetch_file(store, "finetune/abc", manifest, name, bad_dest)
    assert store.uri_for(f"finetune/abc/{name}") in str(info.value)
    assert "run the stage again" in str(info.value)
    assert not bad_dest.exists()


def test_fetch_file_of_an_unlisted_name(store: FileStore, tmp_path: Path):
    manifest = commit_stage(store, "finetune/abc", _stage_files(tmp_path), {})
    with pytest.raises(StorageError, match=r"has no file 'other\.bin' in its manifest"):
        fetch_file(store, "finetune/abc", manifest, "other.bin", tmp_path / "x")


def test_invalid_json_manifest_is_a_storage_error(store: FileStore):
    store.write_bytes(f"optimize/abc/{MANIFEST_NAME}", b'{"files": {')
    with pytest.raises(StorageError, match="is not valid JSON") as info:
        read_manifest(store, "optimize/abc")
    assert store.uri_for(f"optimize/abc/{MANIFEST_NAME}") in str(info.value)


@pytest.mark.parametrize("name", ["../evil.bin", "a/../../evil.bin", "/abs.bin", "a\\b.bin"])
def test_commit_stage_refuses_unsafe_file_names(store: FileStore, tmp_path: Path, name: str):
    source = tmp_path / "evil.bin"
    source.write_bytes(b"x")
    with pytest.raises(InvalidKeyError, match=r"^file name = "):
        commit_stage(store, "finetune/abc", {name: source}, {})
    assert read_manifest(store, "finetune/abc") is None
    assert _files_under(tmp_path) == ["evil.bin"]


def test_commit_stage_refuses_an_unsafe_key(store: FileStore, tmp_path: Path):
    with pytest.raises(InvalidKeyError):
        commit_stage(store, "../outside", _stage_files(tmp_path), {})
    assert not store.root.exists()


def test_manifest_is_json_on_disk(store: FileStore, tmp_path: Path):
    files = _stage_files(tmp_path)
    commit_stage(store, "optimize/abc", files, {"stage": "optimize"})
    on_disk = json.loads((store.root / "optimize" / "abc" / MANIFEST_NAME).read_text())
    assert on_disk["stage"] == "optimize"
    assert set(on_disk["files"]) == set(files)
