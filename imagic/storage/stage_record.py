"""The commit protocol of a stage's outputs in a store: files first, `manifest.json` last.

A stage's outputs live under its content-addressed key. The manifest lists every file with its
sha256 and size and is written only after all files are stored, so it is the commit marker:
a key without a manifest is not done, whatever files it holds (a crashed run), and is simply
recomputed. Files are verified against the manifest when read, so a corrupted artifact is an
error, never silently used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imagic.errors import ChecksumMismatchError, StorageError
from imagic.storage.base import ArtifactStore
from imagic.storage.keys import join_key, validate_key

MANIFEST_NAME = "manifest.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file below `folder`, named by its '/'-separated relative path (after `prefix`)."""
    return {
        f"{prefix}{path.relative_to(folder).as_posix()}": path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_manifest(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    """The committed manifest under `key`, or None when the stage is not (completely) done."""
    manifest_key = join_key(key, MANIFEST_NAME)
    if not store.exists(manifest_key):
        return None
    damaged = (
        f"'{store.uri_for(manifest_key)}' is damaged (it is not valid JSON, or not a manifest "
        "with a 'files' table). Delete that key's folder and run the stage again."
    )
    try:
        manifest = json.loads(store.read_bytes(manifest_key))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(damaged) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise StorageError(damaged)
    return manifest


def commit_stage(
    store: ArtifactStore,
    key: str,
    files: Mapping[str, Path],
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """Upload `files` (name -> local path) under `key`, then the manifest; return the manifest.

    Names may contain '/' (sub-folders) and are validated like keys.
    """
    validate_key(key)
    entries = {}
    for name, path in sorted(files.items()):
        validate_key(name, field="file name")
        entries[name] = {"sha256": file_sha256(path), "size": Path(path).stat().st_size}
        store.upload_file(Path(path), join_key(key, name))
    manifest = {**record, "key": key, "store": store.uri, "files": entries}
    store.write_bytes(join_key(key, MANIFEST_NAME), json.dumps(manifest, indent=2).encode())
    return manifest


def fetch_file(
    store: ArtifactStore, key: str, manifest: Mapping[str, Any], name: str, dest: Path
) -> Path:
    """Download one committed file to `dest` and verify it against the manifest's sha256."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise StorageError(f"'{store.uri_for(key)}' has no file {name!r} in its manifest.")
    store.download_file(join_key(key, name), dest)
    actual = file_sha256(dest)
    if actual != entry["sha256"]:
        dest.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"'{store.uri_for(join_key(key, name))}' is corrupted: sha256 {actual[:12]}... "
            f"but its manifest recorded {entry['sha256'][:12]}.... It was not used. Delete "
            f"the key '{key}' from the store and run the stage again."
        )
    return dest


def fetch_files(
    store: ArtifactStore, key: str, manifest: Mapping[str, Any], dest_dir: Path, prefix: str = ""
) -> Path:
    """Download (and verify) every file of a committed stage whose name starts with `prefix`."""
    for name in manifest["files"]:
        if name.startswith(prefix):
            fetch_file(store, key, manifest, name, dest_dir.joinpath(*name.split("/")))
    return dest_dir
