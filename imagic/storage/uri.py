"""Open an artifact store from a URI: `file:///abs/dir`, a plain path, or `s3://bucket/prefix`."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from imagic.errors import StorageError
from imagic.storage.base import ArtifactStore
from imagic.storage.local import FileStore

DEFAULT_STORE = "./imagic-data"
STORE_ENV = "IMAGIC_STORE"


def default_store_uri() -> str:
    """`IMAGIC_STORE`, else `./imagic-data`: an edit works with no configuration at all."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def open_store(uri: str | None = None) -> ArtifactStore:
    """The backend for `uri` (default: `default_store_uri()`)."""
    uri = uri or default_store_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from imagic.storage.s3 import S3Store  # boto3 only where S3 is used

        return S3Store.from_uri(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(
                f"store = {uri!r}: file URIs must be absolute, like file:///data/imagic "
                "(three slashes); or pass a plain folder path."
            )
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # 'C:' on Windows is a drive, not a scheme
        raise StorageError(
            f"store = {uri!r}: unsupported scheme {parsed.scheme!r}; use a folder path, "
            "file:///abs/path or s3://bucket/prefix."
        )
    return FileStore(Path(uri))


def write_uri_bytes(uri: str, data: bytes) -> None:
    """Store `data` at a local path, `file://` URI or `s3://bucket/key` URI, atomically."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from imagic.storage.s3 import S3Store

        store, key = S3Store.from_object_uri(uri)
        store.write_bytes(key, data)
        return
    path = _local_path(uri)
    FileStore(path.parent).write_bytes(path.name, data)


def read_uri_bytes(uri: str) -> bytes:
    """Bytes of an input given as a local path, `file://` URI or `s3://bucket/key` URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from imagic.storage.s3 import S3Store

        store, key = S3Store.from_object_uri(uri)
        return store.read_bytes(key)
    path = _local_path(uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"{uri!r}: cannot read it ({exc.strerror}); check the path.") from exc


def _local_path(uri: str) -> Path:
    """The local file a path or `file://` URI names (anything else is refused)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise StorageError(f"{uri!r}: file URIs must be absolute, like file:///data/in.png.")
    if parsed.scheme not in ("", "file") and len(parsed.scheme) > 1:
        raise StorageError(
            f"{uri!r}: unsupported scheme {parsed.scheme!r}; use a path, file:// or s3://."
        )
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
    return path.expanduser()
