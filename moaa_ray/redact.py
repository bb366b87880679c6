"""Credentials never reach a manifest, a log, a rejects file or the console.

Two rules. A value stored under a credential-like key (``api_key``, ``token``, ``authorization``,
``password``, ``secret``, any ``*headers``, ``cookie``) is masked wherever it sits, and so is the
``user:password@`` part of a URL. And every such value seen in the run's config, plus the values of
the environment variables named by ``api_key_env``, is registered, so free text that happens to
contain one (an engine's error message, a log line) is scrubbed too.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(
    r"(^|[._-])(api[_-]?key|token|authorization|password|passwd|secret|cookie|[a-z_-]*headers)$",
    re.IGNORECASE,
)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
MIN_SECRET_CHARS = 4  # shorter values would scrub ordinary words

_known: set[str] = set()


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) key names a credential: ``engine_kwargs.api_key``, ``hf_token``."""
    return bool(SECRET_KEY.search(str(key)))


def redact(value: Any, key: str = "") -> Any:
    """``value`` with credentials masked: under secret keys, in URLs and the registered ones."""
    if key and is_secret_key(key) and value not in (None, "", {}, []):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def scrub(text: str) -> str:
    """Free text with URL credentials and every registered secret masked."""
    text = URL_CREDENTIALS.sub(f"{MASK}@", text)
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def register_secrets(config: dict[str, Any]) -> None:
    """Remember the secrets of a config (its dump) and of the env variables it names for keys."""
    _known.update(_secret_values(config))
    for name in _env_names(config):
        if len(os.environ.get(name, "")) >= MIN_SECRET_CHARS:
            _known.add(os.environ[name])


def _secret_values(value: Any, under_secret: bool = False) -> set[str]:
    """String values under secret keys (with and without ``Bearer``) and URL passwords."""
    if isinstance(value, dict):
        return {
            secret
            for k, v in value.items()
            for secret in _secret_values(v, under_secret or is_secret_key(str(k)))
        }
    if isinstance(value, list | tuple):
        return {secret for v in value for secret in _secret_values(v, under_secret)}
    if not isinstance(value, str):
        return set()
    found = {m.group(0)[:-1].split(":", 1)[1] for m in URL_CREDENTIALS.finditer(value)}
    if under_secret:
        found |= {value, value.removeprefix("Bearer ").strip()}
    return {secret for secret in found if len(secret) >= MIN_SECRET_CHARS}


def _env_names(value: Any) -> set[str]:
    if isinstance(value, dict):
        names = {v for k, v in value.items() if k == "api_key_env" and isinstance(v, str)}
        return names | {n for v in value.values() for n in _env_names(v)}
    if isinstance(value, list | tuple):
        return {n for v in value for n in _env_names(v)}
    return set()


class RedactingFilter(logging.Filter):
    """Scrubs every record a handler emits (attach it to handlers, not loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True
