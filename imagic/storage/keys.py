"""Keys inside an artifact store: validated, and content-addressed for stage outputs.

Keys are '/'-separated relative paths. Anything that could escape the store's root or confuse
a filesystem or S3 (`..`, absolute paths, backslashes, control characters, empty segments) is
refused, because parts of keys (file names, user-chosen prefixes) can come from user input.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from imagic.errors import InvalidKeyError

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._=+@,-]+$")
KEY_DIGEST_CHARS = 32


def validate_key(key: str, *, field: str = "key") -> str:
    """Return `key` unchanged if it is a safe relative key, else raise InvalidKeyError."""
    problem = _key_problem(key)
    if problem:
        raise InvalidKeyError(
            f"{field} = {key!r}: {problem}. Use a relative path of letters, digits and "
            "'._-=+@,' separated by '/', without '..'."
        )
    return key


def _key_problem(key: str) -> str | None:
    if not isinstance(key, str) or not key:
        return "is empty"
    if any(ord(char) < 32 or ord(char) == 127 for char in key):
        return "contains control characters"
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        return "is an absolute path"
    if "\\" in key:
        return "contains a backslash"
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return "contains an empty, '.' or '..' segment"
        if not _SAFE_SEGMENT.match(segment):
            return f"segment {segment!r} has characters outside the safe set"
    return None


def join_key(*parts: str) -> str:
    """Join validated parts with '/'."""
    key = "/".join(part.strip("/") for part in parts if part)
    return validate_key(key)


def content_key(stage: str, inputs: dict[str, Any]) -> str:
    """`<stage>/<digest>`: the same inputs always map to the same key, different ones never do.

    The digest is sha256 over canonical JSON (sorted keys, no whitespace), truncated to 128
    bits, which is far beyond any collision risk for this use.
    """
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:KEY_DIGEST_CHARS]
    return join_key(stage, digest)
