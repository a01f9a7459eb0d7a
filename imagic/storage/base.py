"""The one small interface every artifact store backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from imagic.storage.keys import validate_key


class ArtifactStore(ABC):
    """A flat namespace of keys holding files, rooted at `uri` (file://... or s3://...).

    Backends only move bytes; the commit protocol (files first, manifest last, checksums) is
    `imagic.storage.stage_record`'s job, so it is written once for every backend.
    """

    uri: str

    def uri_for(self, key: str) -> str:
        """The full URI of `key`, for logs, manifests and MLflow tags."""
        return f"{self.uri.rstrip('/')}/{validate_key(key)}"

    @abstractmethod
    def check(self) -> None:
        """Fail fast, with a clear StorageError, if the store cannot be used at all."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    @abstractmethod
    def upload_file(self, local_path: Path, key: str) -> None:
        """Store a local file under `key`; readers never see a partial object."""

    @abstractmethod
    def download_file(self, key: str, local_path: Path) -> None:
        """Copy the object under `key` to `local_path`; StorageError if it does not exist."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's content; StorageError if it does not exist."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`; readers never see a partial object."""
