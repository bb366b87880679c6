"""Tests for ``moaa serve``'s arguments and the refusals it makes before starting Ray."""

from __future__ import annotations

import pytest

from moaa_ray.cli import build_parser, main
from moaa_ray.serve.command import read_serve_args
from moaa_ray.serve.protocol import DEFAULT_REQUEST_TIMEOUT_S
from moaa_ray.serve.security import key_digest


def parse(*argv: str):
    return build_parser().parse_args(["serve", "--model", "tiny:llama-a", *argv])


def test_serving_defaults_are_loopback_no_key_and_the_default_timeout():
    args = parse()
    assert (args.host, args.api_key_env, args.max_batch_size) == ("127.0.0.1", None, None)
    assert args.request_timeout_s == DEFAULT_REQUEST_TIMEOUT_S


def test_a_key_variable_that_is_not_set_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("MOAA_TEST_MISSING_KEY", raising=False)
    argv = ["serve", "--model", "tiny:llama-a", "--api-key-env", "MOAA_TEST_MISSING_KEY"]
    assert main(argv) == 2
    assert "MOAA_TEST_MISSING_KEY: the variable is not set" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_a_timeout_that_is_not_positive_is_a_usage_error(timeout, capsys):
    assert main(["serve", "--model", "tiny:llama-a", "--request-timeout-s", timeout]) == 2
    assert "--request-timeout-s must be > 0" in capsys.readouterr().err


def test_a_bad_batch_size_is_a_usage_error_naming_the_field(capsys):
    assert main(["serve", "--model", "tiny:llama-a", "--max-batch-size", "0"]) == 2
    assert "serve: max_batch_size:" in capsys.readouterr().err


def test_the_settings_hold_the_keys_digest_not_the_key():
    args = parse("--api-key-env", "MOAA_KEY", "--request-timeout-s", "5", "--max-batch-size", "4")
    config, settings = read_serve_args(args, {"MOAA_KEY": "sk-secret"})
    assert settings.api_key_sha256 == key_digest("sk-secret")
    assert "sk-secret" not in repr(settings) + repr(config)
    assert (settings.request_timeout_s, config.max_batch_size) == (5.0, 4)
    assert settings.served_model_name == "tiny:llama-a"


def test_cpus_per_replica_are_passed_on():
    config, _ = read_serve_args(parse("--num-cpus", "2"), {})
    assert config.num_cpus == 2.0


def test_without_a_key_variable_no_key_is_needed():
    config, settings = read_serve_args(parse("--served-model-name", "chat"), {})
    assert (settings.api_key_sha256, settings.served_model_name) == (None, "chat")
    assert (config.engine, config.num_gpus, config.num_cpus, config.max_batch_size) == (
        "hf",
        0.0,
        1,
        64,  # the hf engine's own batch size
    )
