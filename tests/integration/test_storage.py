"""The s3:// backend against a real moto S3 server: round trips, multipart, the stage commit
protocol, and each way it can be misconfigured (with a message naming the URI and the fix).

No mocks: wrong credentials are tested on a second moto server with IAM authentication
switched on (moto's `/moto-api/reset-auth`), an unreachable endpoint on an unused local port.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from imagic.errors import (
    ChecksumMismatchError,
    InvalidKeyError,
    StorageError,
    StorageUnavailableError,
)
from imagic.storage import s3 as s3_module
from imagic.storage.s3 import S3Store
from imagic.storage.stage_record import (
    MANIFEST_NAME,
    commit_stage,
    fetch_file,
    fetch_files,
    read_manifest,
)
from imagic.storage.uri import open_store, read_uri_bytes
from tests.integration.servers import BIN, S3Server, free_port, running


def _unique_bucket() -> str:
    return f"imagic-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(aws_env: S3Server) -> str:
    return aws_env.create_bucket(_unique_bucket())


@pytest.fixture
def store(bucket: str) -> S3Store:
    return S3Store(bucket, "runs/exp1")


def _object_keys(server: S3Server, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


# -- round trips -----------------------------------------------------------------------------


def test_round_trips(store: S3Store, aws_env: S3Server, bucket: str, tmp_path: Path):
    store.check()
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(100_000))
    assert not store.exists("stage/weights.bin")

    store.upload_file(source, "stage/weights.bin")
    store.write_bytes("stage/deep/nested/notes.txt", b"hello")

    assert store.exists("stage/weights.bin") and store.exists("stage/deep/nested/notes.txt")
    assert not store.exists("stage/deep")  # a "folder" is not an object
    assert store.read_bytes("stage/weights.bin") == source.read_bytes()
    assert store.read_bytes("stage/deep/nested/notes.txt") == b"hello"
    dest = tmp_path / "out" / "a" / "copy.bin"
    store.download_file("stage/weights.bin", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert os.listdir(dest.parent) == ["copy.bin"]  # no temp file left beside it

    store.write_bytes("stage/deep/nested/notes.txt", b"overwritten")
    assert store.read_bytes("stage/deep/nested/notes.txt") == b"overwritten"
    assert _object_keys(aws_env, bucket) == [
        "runs/exp1/stage/deep/nested/notes.txt",
        "runs/exp1/stage/weights.bin",
    ]


def test_uri_and_uri_for(bucket: str):
    store = S3Store(bucket, "runs/exp1")
    assert store.uri == f"s3://{bucket}/runs/exp1"
    assert store.uri_for("a/b.json") == f"s3://{bucket}/runs/exp1/a/b.json"
    assert S3Store(bucket, "runs/exp1/").uri == f"s3://{bucket}/runs/exp1"
    root = S3Store(bucket)
    assert root.uri == f"s3://{bucket}"
    assert root.uri_for("a/b.json") == f"s3://{bucket}/a/b.json"


def test_store_at_the_bucket_root(aws_env: S3Server, bucket: str):
    store = S3Store(bucket)
    store.write_bytes("top.txt", b"1")
    assert store.read_bytes("top.txt") == b"1"
    assert _object_keys(aws_env, bucket) == ["top.txt"]


def test_client_configuration(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/imagic-test-config")
    store = S3Store("some-bucket")
    config = store.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert config.connect_timeout == s3_module.CONNECT_TIMEOUT_S
    assert store.client.meta.region_name == "us-east-1"  # only because none is configured
    assert store.client.meta.endpoint_url == aws_env.endpoint_url

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv(s3_module.MAX_ATTEMPTS_ENV, "7")
    store = S3Store("some-bucket")
    assert store.client.meta.region_name == "eu-west-3"
    assert store.client.meta.config.retries["total_max_attempts"] == store.max_attempts == 7


def test_aws_endpoint_url_s3_is_the_fallback(
    aws_env: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(s3_module.ENDPOINT_ENV)
    monkeypatch.setenv(s3_module.AWS_ENDPOINT_ENV, aws_env.endpoint_url)
    S3Store(bucket).write_bytes("via-aws-env.txt", b"1")
    assert _object_keys(aws_env, bucket) == ["via-aws-env.txt"]

    # IMAGIC_S3_ENDPOINT_URL wins over AWS_ENDPOINT_URL_S3.
    monkeypatch.setenv(s3_module.AWS_ENDPOINT_ENV, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(s3_module.ENDPOINT_ENV, aws_env.endpoint_url)
    assert S3Store(bucket).read_bytes("via-aws-env.txt") == b"1"


def test_multipart_upload_round_trips(
    store: S3Store, aws_env: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 5 * s3_module.MiB)  # S3's minimum part
    monkeypatch.setattr(s3_module, "MULTIPART_CHUNKSIZE", 5 * s3_module.MiB)
    parts: list[int] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.UploadPart",
        lambda params, **_: parts.append(params["PartNumber"]),
    )
    source = tmp_path / "unet.safetensors"
    source.write_bytes(os.urandom(12_000_000))

    store.upload_file(source, "finetune/unet.safetensors")

    assert sorted(parts) == [1, 2, 3]
    head = aws_env.client().head_object(Bucket=bucket, Key="runs/exp1/finetune/unet.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part object
    assert head["ContentLength"] == 12_000_000
    dest = tmp_path / "back.safetensors"
    store.download_file("finetune/unet.safetensors", dest)
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == expected  # byte-exact


def test_missing_object(store: S3Store, tmp_path: Path):
    uri = store.uri_for("nope/missing.bin")
    with pytest.raises(StorageError, match=f"^{re.escape(repr(uri))} does not exist in the store"):
        store.read_bytes("nope/missing.bin")
    dest = tmp_path / "dl" / "missing.bin"
    with pytest.raises(StorageError, match=f"^{re.escape(repr(uri))} does not exist in the store"):
        store.download_file("nope/missing.bin", dest)
    assert os.listdir(dest.parent) == []  # neither the file nor a temp file

    dest.write_bytes(b"earlier content")
    with pytest.raises(StorageError, match="does not exist in the store"):
        store.download_file("nope/missing.bin", dest)
    assert dest.read_bytes() == b"earlier content"
    assert os.listdir(dest.parent) == ["missing.bin"]


# -- the stage commit protocol on S3 ---------------------------------------------------------


def test_stage_commit_read_fetch_and_corruption(
    store: S3Store, aws_env: S3Server, bucket: str, tmp_path: Path
):
    folder = tmp_path / "outputs"
    folder.mkdir()
    files = {"embeddings.safetensors": folder / "e.bin", "unet/config.json": folder / "c.json"}
    files["embeddings.safetensors"].write_bytes(os.urandom(4096))
    files["unet/config.json"].write_text('{"sample_size": 8}')

    assert read_manifest(store, "optimize/abc") is None
    store.upload_file(files["unet/config.json"], "optimize/abc/unet/config.json")
    assert read_manifest(store, "optimize/abc") is None  # files without manifest: not done

    manifest = commit_stage(store, "optimize/abc", files, {"stage": "optimize"})
    assert manifest["store"] == store.uri
    assert read_manifest(store, "optimize/abc") == manifest
    stored = json.loads(
        aws_env.client()
        .get_object(Bucket=bucket, Key=f"runs/exp1/optimize/abc/{MANIFEST_NAME}")["Body"]
        .read()
    )
    assert stored == manifest

    fetch_files(store, "optimize/abc", manifest, tmp_path / "fetched")
    for name, path in files.items():
        assert (tmp_path / "fetched" / name).read_bytes() == path.read_bytes()

    aws_env.client().put_object(  # bit rot, or someone overwrote it
        Bucket=bucket, Key="runs/exp1/optimize/abc/embeddings.safetensors", Body=b"corrupted"
    )
    dest = tmp_path / "again" / "e.bin"
    with pytest.raises(ChecksumMismatchError, match="is corrupted") as info:
        fetch_file(store, "optimize/abc", manifest, "embeddings.safetensors", dest)
    assert store.uri_for("optimize/abc/embeddings.safetensors") in str(info.value)
    assert not dest.exists()


def test_invalid_manifest_on_s3(store: S3Store):
    store.write_bytes(f"optimize/abc/{MANIFEST_NAME}", b"not json")
    with pytest.raises(StorageError, match="is not valid JSON"):
        read_manifest(store, "optimize/abc")


# -- opening from URIs -----------------------------------------------------------------------


def test_open_store_and_read_uri_bytes(aws_env: S3Server, bucket: str):
    store = open_store(f"s3://{bucket}/team/prefix/")
    assert isinstance(store, S3Store)
    assert store.uri == f"s3://{bucket}/team/prefix"
    store.write_bytes("in/image.png", b"\x89PNG")
    assert read_uri_bytes(f"s3://{bucket}/team/prefix/in/image.png") == b"\x89PNG"
    assert isinstance(open_store(f"s3://{bucket}"), S3Store)

    root, key = S3Store.from_object_uri(f"s3://{bucket}/team/prefix/in/image.png")
    assert (root.uri, key) == (f"s3://{bucket}", "team/prefix/in/image.png")

    with pytest.raises(StorageError, match="does not exist in the store"):
        read_uri_bytes(f"s3://{bucket}/team/prefix/in/other.png")


@pytest.mark.parametrize(
    "uri",
    ["s3://", "s3:///prefix", "s3://ab", "s3://My_Bucket/x", "s3://a..b", "s3://-bucket",
     "s3://bucket-", "s3://192.168.1.20", f"s3://{'b' * 64}", "s3://buck et/x"],
)  # fmt: skip
def test_invalid_bucket_names(aws_env: S3Server, uri: str):
    with pytest.raises(StorageError, match="is not a valid S3 bucket name") as info:
        open_store(uri)
    assert repr(uri) in str(info.value)
    assert "s3://my-bucket" in str(info.value)


@pytest.mark.parametrize("uri", ["s3://bucket/../x", "s3://bucket/a//b", "s3://bucket/a b"])
def test_invalid_prefixes(aws_env: S3Server, uri: str):
    with pytest.raises(InvalidKeyError) as info:
        S3Store.from_uri(uri)
    assert repr(uri) in str(info.value)
    assert "Use a relative path" in str(info.value)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://bucket", "names a bucket, not an object"),
        ("s3://bucket/", "names a bucket, not an object"),
        ("s3://bucket/dir/", "empty, '.' or '..' segment"),
        ("s3://bucket/a/../b", "empty, '.' or '..' segment"),
        ("/data/x.png", "is not an S3 URI"),
    ],
)
def test_invalid_object_uris(aws_env: S3Server, uri: str, problem: str):
    with pytest.raises(StorageError, match=problem) as info:
        S3Store.from_object_uri(uri)
    assert repr(uri) in str(info.value)


# -- unsafe keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("../outside", "'..' segment"),
        ("a/../../outside", "'..' segment"),
        ("/etc/passwd", "is an absolute path"),
        ("C:/x", "is an absolute path"),
        ("a\nb", "control characters"),
        ("a\x00b", "control characters"),
    ],
)
def test_unsafe_keys_are_refused_before_any_request(
    store: S3Store, aws_env: S3Server, bucket: str, tmp_path: Path, key: str, problem: str
):
    source = tmp_path / "x.bin"
    source.write_bytes(b"x")
    requests: list[str] = []
    store.client.meta.events.register("before-send", lambda **_: requests.append("sent"))
    for attempt in (
        lambda: store.write_bytes(key, b"x"),
        lambda: store.upload_file(source, key),
        lambda: store.read_bytes(key),
        lambda: store.exists(key),
        lambda: store.download_file(key, tmp_path / "dl" / "x"),
    ):
        with pytest.raises(InvalidKeyError, match=problem) as info:
            attempt()
        assert repr(key) in str(info.value)
    assert requests == []
    assert _object_keys(aws_env, bucket) == []
    assert not (tmp_path / "dl").exists()


# -- misconfiguration: missing bucket, unreachable endpoint, credentials -------------------------


def test_missing_bucket(aws_env: S3Server, tmp_path: Path):
    name = _unique_bucket()
    store = S3Store(name, "runs")
    expected = (
        f"store = 's3://{name}/runs': bucket '{name}' does not exist at {aws_env.endpoint_url}; "
        f"create it (e.g. `aws s3 mb s3://{name} --endpoint-url {aws_env.endpoint_url}`) or "
        "fix the store URI."
    )
    source = tmp_path / "x.bin"
    source.write_bytes(b"x")
    for attempt in (
        store.check,
        lambda: store.read_bytes("a.txt"),
        lambda: store.write_bytes("a.txt", b"x"),
        lambda: store.upload_file(source, "a.txt"),
        lambda: store.download_file("a.txt", tmp_path / "dl" / "a.txt"),  # HEAD: bare 404
    ):
        with pytest.raises(StorageError) as info:
            attempt()
        assert str(info.value) == expected
    assert not store.exists("a.txt")  # a miss; `check()` is what tells the two apart
    assert os.listdir(tmp_path / "dl") == []


@pytest.mark.parametrize("attempts", [None, "2"])
def test_unreachable_endpoint_fails_after_bounded_attempts(
    aws_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attempts: str | None
):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(s3_module.ENDPOINT_ENV, endpoint)
    if attempts is None:
        monkeypatch.delenv(s3_module.MAX_ATTEMPTS_ENV, raising=False)
    else:
        monkeypatch.setenv(s3_module.MAX_ATTEMPTS_ENV, attempts)
    expected_attempts = int(attempts or s3_module.DEFAULT_MAX_ATTEMPTS)
    store = S3Store("some-bucket", "runs")
    sent: list[str] = []
    store.client.meta.events.register("before-send", lambda **_: sent.append("try"))
    source = tmp_path / "x.bin"
    source.write_bytes(b"x")

    for attempt in (
        store.check,
        lambda: store.read_bytes("a.txt"),
        lambda: store.upload_file(source, "a.txt"),
        lambda: store.download_file("a.txt", tmp_path / "dl" / "a.txt"),
    ):
        sent.clear()
        with pytest.raises(StorageUnavailableError) as info:  # transient: orchestrators retry
            attempt()
        message = str(info.value)
        assert message.startswith("store = 's3://some-bucket/runs': ")
        assert f"cannot reach {endpoint} after {expected_attempts} attempts" in message
        assert "check IMAGIC_S3_ENDPOINT_URL" in message
        assert len(sent) == expected_attempts
    assert os.listdir(tmp_path / "dl") == []


@pytest.mark.parametrize("value", ["0", "-1", "three"])
def test_invalid_max_attempts(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv(s3_module.MAX_ATTEMPTS_ENV, value)
    with pytest.raises(StorageError, match=f"IMAGIC_S3_MAX_ATTEMPTS = {value!r}: must be"):
        S3Store.from_uri("s3://some-bucket")


@dataclass(frozen=True)
class AuthServer:
    """A moto server that checks signatures and IAM permissions (unlike the shared one)."""

    endpoint_url: str
    bucket: str
    allowed: dict[str, str]  # access key with s3:* on the bucket
    powerless: dict[str, str]  # a valid access key without any permission


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    with running(command, f"{url}/moto-api/", {}, log):
        setup = {"endpoint_url": url, "region_name": "us-east-1"}
        setup |= {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        keys = {}
        for user in ("allowed", "powerless"):
            iam.create_user(UserName=user)
            if user == "allowed":
                iam.put_user_policy(
                    UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy)
                )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        bucket = _unique_bucket()
        boto3.client("s3", **setup).create_bucket(Bucket=bucket)
        # From now on every request must be signed by a known key and be allowed by IAM.
        request = urllib.request.Request(
            f"{url}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        yield AuthServer(url, bucket, keys["allowed"], keys["powerless"])


def _use(monkeypatch: pytest.MonkeyPatch, server: AuthServer, credentials: dict[str, str]):
    monkeypatch.setenv(s3_module.ENDPOINT_ENV, server.endpoint_url)
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)


def test_auth_server_accepts_valid_credentials(
    aws_env: S3Server, auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch
):
    _use(monkeypatch, auth_server, auth_server.allowed)
    store = S3Store(auth_server.bucket, "ok")
    store.check()
    store.write_bytes("a.txt", b"signed")
    assert store.read_bytes("a.txt") == b"signed"


@pytest.mark.parametrize("case", ["unknown key", "wrong secret"])
def test_rejected_credentials(
    aws_env: S3Server,
    auth_server: AuthServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
):
    secret = "wrong-secret-value-1234"
    key_id = (
        "AKIAUNKNOWNKEY000000"
        if case == "unknown key"
        else auth_server.allowed["AWS_ACCESS_KEY_ID"]
    )
    _use(monkeypatch, auth_server, {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})
    store = S3Store(auth_server.bucket, "runs")
    code = "InvalidAccessKeyId" if case == "unknown key" else "SignatureDoesNotMatch"
    source = tmp_path / "x.bin"
    source.write_bytes(b"x")

    with pytest.raises(StorageError) as info:
        store.check()  # HEAD: a bare 403, no error code
    assert not isinstance(info.value, StorageUnavailableError)  # a fix is needed, not a retry
    assert str(info.value).startswith(f"store = 's3://{auth_server.bucket}/runs': ")
    assert "denied access (403)" in str(info.value)
    assert "credentials (found in: env) were rejected or lack permission" in str(info.value)

    for attempt in (
        lambda: store.read_bytes("a.txt"),
        lambda: store.write_bytes("a.txt", b"x"),
        lambda: store.upload_file(source, "a.txt"),
    ):
        with pytest.raises(StorageError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(f"store = 's3://{auth_server.bucket}/runs': ")
        assert f"{auth_server.endpoint_url} rejected the AWS credentials (found in: env)" in message
        assert f"({code}: " in message
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
        assert "AWS_PROFILE" in message
        assert secret not in message


def test_credentials_without_permission(
    aws_env: S3Server, auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch
):
    _use(monkeypatch, auth_server, auth_server.powerless)
    store = S3Store(auth_server.bucket, "runs")
    with pytest.raises(StorageError) as info:
        store.read_bytes("a.txt")
    message = str(info.value)
    assert f"denied access (AccessDenied) to read 's3://{auth_server.bucket}/runs/a.txt'" in (
        message
    )
    assert "s3:GetObject" in message and "AWS_PROFILE" in message
    assert auth_server.powerless["AWS_SECRET_ACCESS_KEY"] not in message


def test_missing_credentials(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("BOTO_CONFIG", str(tmp_path / "no-boto-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role lookup
    store = S3Store("some-bucket")
    with pytest.raises(StorageError) as info:
        store.check()
    message = str(info.value)
    assert message.startswith("store = 's3://some-bucket': no usable AWS credentials")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert "AWS_PROFILE" in message


def test_unknown_profile(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StorageError) as info:
        S3Store.from_uri("s3://some-bucket/x")
    message = str(info.value)
    assert message.startswith("store = 's3://some-bucket/x': AWS_PROFILE names a profile")
    assert "no-such-profile" in message
