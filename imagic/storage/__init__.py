"""Artifact stores (`file://`, `s3://`) and the stage commit protocol (manifest last)."""

from imagic.storage.base import ArtifactStore
from imagic.storage.keys import content_key, join_key, validate_key
from imagic.storage.stage_record import (
    MANIFEST_NAME,
    commit_stage,
    fetch_file,
    fetch_files,
    file_sha256,
    files_under,
    read_manifest,
)
from imagic.storage.uri import default_store_uri, open_store, read_uri_bytes, write_uri_bytes

__all__ = [
    "MANIFEST_NAME",
    "ArtifactStore",
    "commit_stage",
    "content_key",
    "default_store_uri",
    "fetch_file",
    "fetch_files",
    "file_sha256",
    "files_under",
    "join_key",
    "open_store",
    "read_manifest",
    "read_uri_bytes",
    "validate_key",
    "write_uri_bytes",
]
