import logging

import pytest

from moaa_ray import redact
from moaa_ray.redact import MASK, RedactingFilter, register_secrets, scrub


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch):
    monkeypatch.setattr(redact, "_known", set())


CONFIG = {
    "models": {
        "remote": {
            "path": "gpt-x",
            "api_base": "https://alice:hunter2-url@api.example.com/v1",
            "api_key_env": "MOAA_TEST_KEY",
            "engine_kwargs": {
                "api_key": "sk-kwarg-123",
                "hf_token": "hf_abcdef",
                "extra_headers": {"Authorization": "Bearer tok-header-9", "X-Trace": "t1-visible"},
                "password": "pw-5678",
                "temperature_floor": 0.1,
            },
            "max_new_tokens": 64,
        }
    }
}


def test_values_under_credential_keys_and_url_passwords_are_masked():
    out = redact.redact(CONFIG)["models"]["remote"]
    kwargs = out["engine_kwargs"]
    assert kwargs["api_key"] == kwargs["hf_token"] == kwargs["password"] == MASK
    assert kwargs["extra_headers"] == MASK
    assert kwargs["temperature_floor"] == 0.1 and out["max_new_tokens"] == 64
    assert out["api_base"] == f"https://{MASK}@api.example.com/v1"
    assert out["api_key_env"] == "MOAA_TEST_KEY"  # the variable's name is no secret


def test_registered_secrets_are_scrubbed_from_free_text(monkeypatch):
    monkeypatch.setenv("MOAA_TEST_KEY", "sk-env-secret-42")
    register_secrets(CONFIG)
    text = (
        "401 for sk-env-secret-42 at https://api.example.com (key sk-kwarg-123, header "
        "Bearer tok-header-9, hunter2-url, pw-5678, hf_abcdef)"
    )
    clean = scrub(text)
    for secret in ("sk-env-secret-42", "sk-kwarg-123", "tok-header-9", "hunter2-url", "pw-5678"):
        assert secret not in clean
    assert "hf_abcdef" not in clean and "https://api.example.com" in clean
    assert scrub("gpt-x") == "gpt-x"  # only values under credential keys count


def test_the_log_filter_scrubs_formatted_records(monkeypatch):
    register_secrets(CONFIG)
    record = logging.LogRecord(
        "moaa_ray.x", logging.ERROR, "f", 1, "call failed: %s", ("sk-kwarg-123",), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"call failed: {MASK}"
