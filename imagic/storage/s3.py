"""The `s3://` backend: a bucket on AWS S3 or any S3-compatible server (MinIO, moto, ...).

Credentials and region come the standard AWS way (environment, `~/.aws/config` and
`~/.aws/credentials`, AWS_PROFILE, instance or task role): imagic never passes them itself.
The endpoint is `IMAGIC_S3_ENDPOINT_URL`, else `AWS_ENDPOINT_URL_S3`, else AWS.

Retries are botocore's own "standard" mode (exponential backoff with jitter, on throttling,
5xx and connection errors), `IMAGIC_S3_MAX_ATTEMPTS` attempts in all, with a short connect
timeout so an unreachable endpoint fails in seconds rather than minutes.

Atomicity: an S3 PUT, and the completion of a multipart upload, makes an object visible whole
or not at all, which is the interface's "readers never see a partial object". Downloads go to a
temp file beside the destination that is renamed in, so a failed download leaves nothing there.

Every botocore failure is turned into a StorageError naming the store URI and what to do.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from imagic.errors import StorageError, StorageUnavailableError
from imagic.storage.base import ArtifactStore
from imagic.storage.keys import validate_key

ENDPOINT_ENV = "IMAGIC_S3_ENDPOINT_URL"
AWS_ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"
MAX_ATTEMPTS_ENV = "IMAGIC_S3_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_REGION = "us-east-1"  # only when nothing is configured (moto and MinIO accept any)
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60

MiB = 1024 * 1024
# Objects up to 64 MiB go up in a single PUT; larger ones (fine-tuned UNets, whole pipelines)
# as a multipart upload of 64 MiB parts. boto3's 8 MiB default would cap an object at ~78 GiB
# (S3 allows 10,000 parts) and cost 8x the requests; 64 MiB parts allow ~625 GiB and keep a
# failed part cheap to retry. Read at call time, so tests can lower them.
MULTIPART_THRESHOLD = 64 * MiB
MULTIPART_CHUNKSIZE = 64 * MiB

_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_BUCKET_RULE = (
    "3-63 characters of lowercase letters, digits, '.' and '-', starting and ending with a "
    "letter or digit, no '..', not an IP address"
)

_MISSING = ("NoSuchKey", "NoSuchBucket", "404", "NotFound")
_REJECTED_CREDENTIALS = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
)
_ACCESS_DENIED = ("AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem")
_OVERLOADED = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503")
_TRANSLATED = (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError)


def _transfer_config() -> TransferConfig:
    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE
    )


def max_attempts_from_env() -> int:
    """`IMAGIC_S3_MAX_ATTEMPTS` (total attempts per request, first one included), default 3."""
    raw = os.environ.get(MAX_ATTEMPTS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ATTEMPTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(
            f"{MAX_ATTEMPTS_ENV} = {raw!r}: must be a whole number of attempts >= 1 "
            f"(default {DEFAULT_MAX_ATTEMPTS}); fix or unset it."
        )
    return value


def endpoint_from_env() -> str | None:
    """`IMAGIC_S3_ENDPOINT_URL`, else `AWS_ENDPOINT_URL_S3`, else None (AWS itself)."""
    return os.environ.get(ENDPOINT_ENV) or os.environ.get(AWS_ENDPOINT_ENV) or None


def _validate_bucket(bucket: str, uri: str) -> str:
    if (
        not isinstance(bucket, str)
        or not 3 <= len(bucket) <= 63
        or not _BUCKET_CHARS.match(bucket)
        or ".." in bucket
        or _IP_ADDRESS.match(bucket)
    ):
        raise StorageError(
            f"store = {uri!r}: {bucket!r} is not a valid S3 bucket name ({_BUCKET_RULE}); "
            "fix the URI, like s3://my-bucket/some/prefix."
        )
    return bucket


class S3Store(ArtifactStore):
    """Objects are `prefix/key` in `bucket`; `uri` is `s3://bucket/prefix` (or `s3://bucket`).

    `client` is a boto3 S3 client, made from the environment unless one is given; it is public
    so callers can register botocore event hooks on it. `max_attempts` is the number of tries
    each request gets (for error messages).
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = _validate_bucket(bucket, f"s3://{bucket}")
        self.prefix = prefix.rstrip("/") if prefix else ""
        if self.prefix:
            validate_key(self.prefix, field=f"prefix of store 's3://{bucket}'")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._session = None
        if client is None:
            self.max_attempts = max_attempts_from_env()
            client = self._make_client()
        else:
            retries = getattr(client.meta.config, "retries", None) or {}
            self.max_attempts = retries.get("total_max_attempts") or (
                retries["max_attempts"] + 1 if "max_attempts" in retries else DEFAULT_MAX_ATTEMPTS
            )
        self.client = client

    @classmethod
    def from_uri(cls, uri: str) -> S3Store:
        """The store for `s3://bucket` or `s3://bucket/prefix`."""
        bucket, prefix = _split_s3_uri(uri)
        _validate_bucket(bucket, uri)
        if prefix:
            validate_key(prefix, field=f"prefix of store {uri!r}")
        return cls(bucket, prefix)

    @classmethod
    def from_object_uri(cls, uri: str) -> tuple[S3Store, str]:
        """`(store rooted at the bucket, key)` for an object URI `s3://bucket/some/key`."""
        bucket, key = _split_s3_uri(uri, strip_trailing=False)
        _validate_bucket(bucket, uri)
        if not key:
            raise StorageError(
                f"{uri!r} names a bucket, not an object; give s3://bucket/path/to/object."
            )
        validate_key(key, field=f"object key of {uri!r}")
        return cls(bucket), key

    # -- the interface -----------------------------------------------------------------------

    def check(self) -> None:
        with self._translated("access the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def exists(self, key: str) -> bool:
        object_key = self._object_key(key)
        with self._translated("look up", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if _status(exc) == 404:  # no such key (or bucket: `check()` tells those apart)
                    return False
                raise
        return True

    def upload_file(self, local_path: Path, key: str) -> None:
        object_key = self._object_key(key)
        with self._translated("upload", key):
            self.client.upload_file(
                str(local_path), self.bucket, object_key, Config=_transfer_config()
            )

    def download_file(self, key: str, local_path: Path) -> None:
        object_key = self._object_key(key)
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(handle)
        try:
            with self._translated("download", key):
                self.client.download_file(self.bucket, object_key, temp, Config=_transfer_config())
            os.replace(temp, dest)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def read_bytes(self, key: str) -> bytes:
        object_key = self._object_key(key)
        with self._translated("read", key):
            response = self.client.get_object(Bucket=self.bucket, Key=object_key)
            return response["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        object_key = self._object_key(key)
        with self._translated("write", key):
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return self.client.meta.endpoint_url

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _make_client(self) -> Any:
        import boto3

        endpoint = endpoint_from_env()
        options: dict[str, Any] = {
            # `total_max_attempts` counts the first try; botocore's `max_attempts` key would
            # count only the retries (N + 1 requests in all).
            "retries": {"mode": "standard", "total_max_attempts": self.max_attempts},
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
        }
        if endpoint:  # MinIO & co. are addressed as host/bucket, not bucket.host
            options["s3"] = {"addressing_style": "path"}
        try:
            self._session = boto3.session.Session()
            return self._session.client(
                "s3",
                endpoint_url=endpoint,
                region_name=self._session.region_name or DEFAULT_REGION,
                config=Config(**options),
            )
        except ProfileNotFound as exc:
            raise StorageError(
                f"store = '{self.uri}': AWS_PROFILE names a profile that is not in the AWS "
                f"config files ({exc}); unset AWS_PROFILE or add the profile (`aws configure "
                "--profile NAME`)."
            ) from exc
        except (BotoCoreError, ValueError) as exc:
            raise StorageError(
                f"store = '{self.uri}': cannot set up the S3 client ({exc}); check "
                f"{ENDPOINT_ENV} / {AWS_ENDPOINT_ENV} and the AWS configuration."
            ) from exc

    @contextmanager
    def _translated(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn botocore/boto3 failures inside the block into an actionable StorageError."""
        try:
            yield
        except _TRANSLATED as exc:
            raise self._storage_error(exc, action, key) from _root_cause(exc)

    def _storage_error(self, exc: BaseException, action: str, key: str | None) -> StorageError:
        cause = _root_cause(exc)
        target = self.uri_for(key) if key else self.uri
        where = f"store = '{self.uri}'"
        endpoint = self.endpoint_url
        if isinstance(cause, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"{where}: no usable AWS credentials were found ({cause}). Set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
                "temporary ones), or choose a profile of ~/.aws/credentials with AWS_PROFILE."
            )
        if isinstance(cause, CredentialRetrievalError):
            return StorageError(
                f"{where}: the AWS credentials could not be obtained ({cause}); fix the "
                "credential source, or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE."
            )
        if isinstance(cause, ConnectionError | HTTPClientError):
            return StorageUnavailableError(
                f"{where}: cannot reach {endpoint} after {self.max_attempts} attempts "
                f"({type(cause).__name__}) while trying to {action} '{target}'; check "
                f"{ENDPOINT_ENV} (or {AWS_ENDPOINT_ENV}) and the network, or raise "
                f"{MAX_ATTEMPTS_ENV}."
            )
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
            message = cause.response.get("Error", {}).get("Message", "")
            if code == "NoSuchBucket" or (code in _MISSING and key is None):
                return self._bucket_missing_error()
            if code in _MISSING:
                if code != "NoSuchKey" and not self._bucket_exists():
                    return self._bucket_missing_error()  # HEAD answers a bare 404 for both
                return StorageError(f"'{target}' does not exist in the store.")
            if code in _REJECTED_CREDENTIALS:
                return StorageError(
                    f"{where}: {endpoint} rejected the AWS credentials{self._source()} "
                    f"({code}: {message}). Set valid ones with AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary ones), or "
                    "choose a profile with AWS_PROFILE."
                )
            if code in _ACCESS_DENIED:
                return StorageError(
                    f"{where}: {endpoint} denied access ({code}) to {action} '{target}': the "
                    f"AWS credentials{self._source()} were rejected or lack permission "
                    f"(s3:ListBucket, s3:GetObject, s3:PutObject on bucket '{self.bucket}'). "
                    "Set valid ones with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or "
                    "AWS_PROFILE, or grant those permissions."
                )
            if code in _OVERLOADED or (_status(cause) or 0) >= 500:
                return StorageUnavailableError(
                    f"{where}: {endpoint} is unavailable ({code}: {message}) while trying to "
                    f"{action} '{target}' after {self.max_attempts} attempts; retry later, or "
                    f"raise {MAX_ATTEMPTS_ENV}."
                )
            if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed"):
                region = cause.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                region = region.get("x-amz-bucket-region", "its own region")
                return StorageError(
                    f"{where}: bucket '{self.bucket}' is in {region}, not the configured "
                    f"region ({code}); set AWS_DEFAULT_REGION to the bucket's region."
                )
            return StorageError(
                f"{where}: S3 refused to {action} '{target}' at {endpoint} ({code}: "
                f"{message}); check the bucket, its policy and the store URI."
            )
        return StorageError(
            f"{where}: could not {action} '{target}' at {endpoint} ({type(cause).__name__}: "
            f"{cause}); check {ENDPOINT_ENV} and the AWS configuration."
        )

    def _bucket_missing_error(self) -> StorageError:
        custom = endpoint_from_env() or (
            self.endpoint_url if "amazonaws.com" not in self.endpoint_url else None
        )
        flag = f" --endpoint-url {custom}" if custom else ""
        return StorageError(
            f"store = '{self.uri}': bucket '{self.bucket}' does not exist at "
            f"{self.endpoint_url}; create it (e.g. `aws s3 mb s3://{self.bucket}{flag}`) or "
            "fix the store URI."
        )

    def _bucket_exists(self) -> bool:
        """Whether the bucket answers HEAD with anything but 404 (used to explain a bare 404)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            return _status(exc) != 404
        except BotoCoreError:
            return True
        return True

    def _source(self) -> str:
        """`' (from env)'`-like hint of where boto3 found the credentials; never their values."""
        try:
            credentials = self._session.get_credentials() if self._session else None
        except BotoCoreError:
            return ""
        method = getattr(credentials, "method", None)
        return f" (found in: {method})" if method else ""


def _split_s3_uri(uri: str, *, strip_trailing: bool = True) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StorageError(f"{uri!r} is not an S3 URI; use s3://bucket or s3://bucket/prefix.")
    bucket, _, rest = uri[len("s3://") :].partition("/")
    return bucket, rest.rstrip("/") if strip_trailing else rest


def _root_cause(exc: BaseException) -> BaseException:
    """The botocore error under boto3's transfer wrappers."""
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        return exc.last_exception
    if isinstance(exc, S3UploadFailedError):  # boto3 raises it while handling the ClientError
        return exc.__cause__ or exc.__context__ or exc
    return exc


def _status(exc: BaseException | None) -> int | None:
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None
