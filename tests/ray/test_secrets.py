"""Credentials planted in every place a config can hold them never reach the run directory or console.

A stage runs as a user runs it (``python -m moaa_ray generate``, its own local cluster), with a model
that fails every call, so the keys also travel through engine errors, rejects and the manifest.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

SECRETS = {
    "api_key": "sk-planted-kwarg-7f3a",
    "token": "tok-planted-91bd",
    "authorization": "Bearer auth-planted-44c1",
    "password": "pw-planted-0e2d",
    "header": "hdr-planted-5b77",
    "url_password": "url-planted-c9e0",
    "env_key": "sk-planted-env-a1b2",
}


def test_planted_credentials_appear_nowhere(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))
    sim = {"engine": "simulated", "num_cpus": 0, "simulated": {"answer_tokens": 4}}
    planted = {
        "api_key": SECRETS["api_key"],
        "token": SECRETS["token"],
        "authorization": SECRETS["authorization"],
        "password": SECRETS["password"],
        "extra_headers": {"X-Api-Key": SECRETS["header"]},
    }
    config = {
        "run_dir": str(tmp_path / "run"),
        "ray": {"num_cpus": 2},
        "models": {
            "p1": {"path": "p1", **sim, "engine_kwargs": planted},
            "remote": {
                "path": "remote-model",
                "engine": "openai_http",
                "num_cpus": 0,
                # Nothing listens on port 9: every call fails, and its error is recorded.
                "api_base": f"http://alice:{SECRETS['url_password']}@127.0.0.1:9/v1",
                "api_key_env": "MOAA_PLANTED_KEY",
                "max_attempts": 1,
                "request_timeout_s": 5,
            },
            "agg": {"path": "agg", **sim},
        },
        "generate": {
            "inputs": [{"path": str(prompts)}],
            "proposers": ["p1", "remote"],
            "aggregator": "agg",
            "sampling": {"max_new_tokens": 4},
        },
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MOAA_PLANTED_KEY"] = SECRETS["env_key"]
    done = subprocess.run(
        [sys.executable, "-m", "moaa_ray", "generate", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 4, done.stdout + done.stderr  # every row failed: nothing written
    run_dir = tmp_path / "run"
    rejects = (run_dir / "generate" / "rejects.jsonl").read_text()
    assert rejects.count('"failed": true') == 4  # the failures, and their errors, were recorded
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["models"]["p1"]["engine_kwargs"]["api_key"] == "***"
    places = {"console": done.stdout + done.stderr}
    for path in run_dir.rglob("*"):  # the logs/ray link into Ray's session logs included
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for ray_log in Path(os.path.realpath(run_dir / "logs" / "ray")).rglob("*"):
        if ray_log.is_file():
            places[str(ray_log)] = ray_log.read_bytes().decode("utf-8", "replace")
    leaks = [
        (name, where)
        for name, secret in SECRETS.items()
        for where, text in places.items()
        if secret.removeprefix("Bearer ") in text
    ]
    assert leaks == []
