"""Store keys: unsafe keys are refused with a message naming the value and the rule."""

from __future__ import annotations

import re

import pytest

from imagic.errors import InvalidKeyError, StorageError
from imagic.storage.keys import KEY_DIGEST_CHARS, content_key, join_key, validate_key


@pytest.mark.parametrize(
    "key",
    ["a", "stage/0123abcd", "edit/ab12/unet/diffusion_pytorch_model.safetensors",
     "x=1,y+2@v-3_z.txt", "...", "a.b/c..d"],
)  # fmt: skip
def test_normal_keys_are_accepted_unchanged(key: str):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "is empty"),
        ("..", "empty, '.' or '..' segment"),
        ("a/../b", "empty, '.' or '..' segment"),
        ("../etc/passwd", "empty, '.' or '..' segment"),
        (".", "empty, '.' or '..' segment"),
        ("a/./b", "empty, '.' or '..' segment"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("/etc/passwd", "absolute path"),
        ("C:/x", "absolute path"),
        ("c:x", "absolute path"),
        ("a\\b", "backslash"),
        ("..\\..\\windows", "backslash"),
        ("a\nb", "control characters"),
        ("a\x00b", "control characters"),
        ("a\x7fb", "control characters"),
        ("a\tb", "control characters"),
        ("a b", "outside the safe set"),
        ("a/b?c", "outside the safe set"),
        ("a#b", "outside the safe set"),
        ("a*", "outside the safe set"),
        ("ünï", "outside the safe set"),
    ],
)
def test_unsafe_keys_are_refused_naming_value_and_rule(key: str, rule: str):
    with pytest.raises(InvalidKeyError) as info:
        validate_key(key)
    message = str(info.value)
    assert repr(key) in message
    assert rule in message
    assert "Use a relative path" in message


def test_invalid_key_error_is_a_storage_error_and_names_the_field():
    with pytest.raises(StorageError, match=r"^file name = '\.\./x'"):
        validate_key("../x", field="file name")


def test_content_key_is_deterministic_and_order_independent():
    inputs = {"image": "abc", "params": {"steps": 3, "lr": 1e-3}, "seeds": [0, 1]}
    reordered = {"seeds": [0, 1], "params": {"lr": 1e-3, "steps": 3}, "image": "abc"}
    key = content_key("optimize", inputs)
    assert key == content_key("optimize", dict(inputs))
    assert key == content_key("optimize", reordered)
    assert re.fullmatch(rf"optimize/[0-9a-f]{{{KEY_DIGEST_CHARS}}}", key)
    assert KEY_DIGEST_CHARS == 32


@pytest.mark.parametrize(
    "other",
    [
        {"image": "abd", "params": {"steps": 3, "lr": 1e-3}, "seeds": [0, 1]},
        {"image": "abc", "params": {"steps": 4, "lr": 1e-3}, "seeds": [0, 1]},
        {"image": "abc", "params": {"steps": 3, "lr": 1e-3}, "seeds": [1, 0]},  # order matters
        {"image": "abc", "params": {"steps": 3, "lr": 1e-3}},
        {"image": "abc", "params": {"steps": "3", "lr": 1e-3}, "seeds": [0, 1]},
    ],
)
def test_content_key_differs_for_different_inputs(other: dict):
    inputs = {"image": "abc", "params": {"steps": 3, "lr": 1e-3}, "seeds": [0, 1]}
    assert content_key("optimize", inputs) != content_key("optimize", other)


def test_content_key_differs_per_stage_and_refuses_an_unsafe_stage():
    inputs = {"a": 1}
    assert content_key("optimize", inputs) != content_key("finetune", inputs)
    with pytest.raises(InvalidKeyError):
        content_key("bad stage", inputs)


def test_join_key():
    assert join_key("a", "b/c", "d.txt") == "a/b/c/d.txt"
    assert join_key("a/", "/b") == "a/b"
    assert join_key("", "a", "") == "a"
    with pytest.raises(InvalidKeyError, match=r"'\.\.' segment"):
        join_key("a", "..", "b")
    with pytest.raises(InvalidKeyError, match="is empty"):
        join_key("", "")
