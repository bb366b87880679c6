"""Tests for the API key and exposure checks of moaa_ray.serve.security (no Ray)."""

from __future__ import annotations

import pytest

from moaa_ray.serve.security import (
    auth_error,
    exposure_warning,
    is_loopback,
    key_digest,
    key_matches,
    read_api_key,
)

KEY = "sk-test-1234"


def test_the_key_is_read_from_the_named_variable_and_stripped():
    assert read_api_key("MOAA_KEY", {"MOAA_KEY": f" {KEY}\n"}) == KEY


@pytest.mark.parametrize("environ", [{}, {"MOAA_KEY": ""}, {"MOAA_KEY": "  \n"}])
def test_an_unset_or_empty_key_variable_is_refused(environ):
    with pytest.raises(ValueError, match="MOAA_KEY: the variable is not set or is empty"):
        read_api_key("MOAA_KEY", environ)


def test_the_digest_is_sha256_hex_and_not_the_key():
    digest = key_digest(KEY)
    assert len(digest) == 64 and KEY not in digest
    assert digest == key_digest(KEY) != key_digest(KEY + "x")


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),  # the scheme is case-insensitive
        (f"Bearer  {KEY} ", True),
        (f"Bearer {KEY}x", False),
        (f"Bearer {KEY[:-1]}", False),
        ("Bearer ", False),
        (KEY, False),
        (f"Basic {KEY}", False),
        ("", False),
        (None, False),
        ("Bearer ünïcode", False),
    ],
)
def test_only_the_bearer_token_with_the_digest_matches(header, matches):
    assert key_matches(header, key_digest(KEY)) is matches


def test_auth_errors_are_401_invalid_api_key_and_never_echo_the_token():
    for header in (None, "Bearer wrong-key-123"):
        error = auth_error(header)
        body = error.body()["error"]
        assert error.status == 401
        assert (body["type"], body["code"]) == ("invalid_request_error", "invalid_api_key")
        assert "wrong-key-123" not in body["message"]
    assert "didn't provide" in str(auth_error(None))
    assert "Incorrect" in str(auth_error("Bearer nope"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("my-host.example", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_a_reachable_host_without_a_key_is_warned_about_loudly():
    warning = exposure_warning("0.0.0.0", has_key=False)
    assert warning is not None
    assert "WARNING" in warning and "0.0.0.0" in warning and "--api-key-env" in warning


def test_no_warning_with_a_key_or_on_loopback():
    assert exposure_warning("0.0.0.0", has_key=True) is None
    assert exposure_warning("127.0.0.1", has_key=False) is None
