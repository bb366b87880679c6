"""The server's API key: reading it, checking a request's bearer token, and warning when there is none.

Replicas receive only the key's SHA-256 digest, so the key itself never leaves the process that read it
(it is in no deployment argument, runtime environment or log).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from moaa_ray.serve.protocol import OpenAIError

LOOPBACK_NAMES = ("localhost",)


def read_api_key(variable: str, environ: Mapping[str, str]) -> str:
    """The API key held in an environment variable.

    Raises:
        ValueError: when the variable is unset or empty (an empty key would let anyone in).
    """
    key = environ.get(variable, "")
    if not key.strip():
        raise ValueError(f"--api-key-env {variable}: the variable is not set or is empty")
    return key.strip()


def key_digest(key: str) -> str:
    """The hex SHA-256 digest of a key, which is all a replica keeps."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(authorization: str | None, digest: str) -> bool:
    """Whether an ``Authorization: Bearer <key>`` header holds the key with this digest.

    Digests of equal length are compared in constant time, so timing tells nothing about the key.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(key_digest(token.strip()), digest)


def auth_error(authorization: str | None) -> OpenAIError:
    """The 401 for a request without the right key (OpenAI's ``invalid_api_key``)."""
    message = (
        "Incorrect API key provided"
        if authorization
        else "You didn't provide an API key: send it as 'Authorization: Bearer <key>'"
    )
    return OpenAIError(message, status=401, code="invalid_api_key")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def exposure_warning(host: str, has_key: bool) -> str | None:
    """The warning for a server that others can reach and use without a key; None when safe."""
    if has_key or is_loopback(host):
        return None
    bar = "!" * 78
    return (
        f"{bar}\n"
        f"WARNING: serving on {host} WITHOUT an API key: anyone who can reach this port can use\n"
        "the model. Pass --api-key-env VAR (clients then send 'Authorization: Bearer $VAR'), or\n"
        "bind --host 127.0.0.1.\n"
        f"{bar}"
    )
