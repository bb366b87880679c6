"""Injected faults on a local Ray cluster: nothing lost, nothing duplicated, nothing made up.

The models are the ``simulated`` engine (no weights, latency without CPU, faults by config); the real
engines are tested in the other modules of this folder.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline.evaluate.stage import evaluate
from moaa_ray.pipeline.generate import generate_sft
from moaa_ray.pipeline.preferences import build_preferences
from moaa_ray.stages.rundir import RunDir
from moaa_ray.stages.runner import FingerprintMismatch
from tests.support.simulated_runs import MOA, POISON, sim, write_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def moa_models(**aggregator_faults):
    return {
        "p1": sim("p1"),
        "p2": sim("p2"),
        "agg": sim("agg", **aggregator_faults),
    }


def rows_of(run_dir, stage="generate"):
    table = RunDir(run_dir).stage(stage).read()
    return table.to_pylist() if table is not None else []


def rejects_of(run_dir, stage="generate"):
    text = (RunDir(run_dir).root / stage / "rejects.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_a_poisoned_prompt_fails_only_itself_and_is_retried_by_the_next_run(ray_cluster, tmp_path):
    prompts = [f"question {i}" for i in range(11)] + [f"tell me {POISON}"]
    path = write_config(tmp_path, moa_models(poison_marker=POISON), prompts, generate=MOA)
    config = load_config(path)
    summary = generate_sft(config, config.run_dir)
    assert summary["status"] == "partial"
    assert summary["rows_written"] == 11 and summary["rows_failed"] == 1
    [reject] = rejects_of(config.run_dir)
    assert reject["failed"] and "poisoned prompt" in reject["reason"]
    assert all(POISON not in r["messages"][0]["content"] for r in rows_of(config.run_dir))
    # The failed row is not done: the next run tries it (and only it) again.
    again = generate_sft(config, config.run_dir)
    assert again["rows_written"] == 0 and again["rows_failed"] == 1
    assert len(rows_of(config.run_dir)) == 11


def test_transient_failures_are_retried_until_every_row_is_written(ray_cluster, tmp_path):
    models = {
        "p1": sim("p1", fail_first_n=2),
        "p2": sim("p2", failure_rate=0.3),
        "agg": sim("agg", fail_first_n=1),
    }
    models["p2"]["max_attempts"] = 6
    path = write_config(tmp_path, models, [f"q{i}" for i in range(16)], generate=MOA)
    config = load_config(path)
    summary = generate_sft(config, config.run_dir)
    assert summary["status"] == "done" and summary["rows_failed"] == 0
    rows = rows_of(config.run_dir)
    assert len(rows) == len({r["row_id"] for r in rows}) == 16
    assert all(p["content"] for r in rows for p in r["proposals"])  # every reference is real


def test_a_crashed_replica_restarts_and_its_calls_go_to_the_live_one(ray_cluster, tmp_path):
    models = moa_models(crash_after_calls=2)
    models["agg"]["num_replicas"] = [2, 2]
    path = write_config(tmp_path, models, [f"q{i}" for i in range(24)], generate=MOA)
    config = load_config(path)
    summary = generate_sft(config, config.run_dir)
    assert summary["status"] == "done"
    rows = rows_of(config.run_dir)
    assert len(rows) == len({r["row_id"] for r in rows}) == 24


def test_a_hung_call_times_out_frees_its_replica_and_fails_only_its_row(ray_cluster, tmp_path):
    models = moa_models(hang_marker="HANG")
    models["agg"].update(request_timeout_s=2, max_attempts=2)
    path = write_config(tmp_path, models, ["q1", "q2", "please HANG", "q3"], generate=MOA)
    config = load_config(path)
    summary = generate_sft(config, config.run_dir)
    assert summary["rows_written"] == 3 and summary["rows_failed"] == 1
    [reject] = rejects_of(config.run_dir)
    assert "request_timeout_s=2" in reject["reason"]


def test_a_failed_reward_model_score_is_never_a_zero_reward(ray_cluster, tmp_path):
    models = {"policy": sim("policy"), "rm": sim("rm", poison_marker="answer-of-doom")}
    prefs = {"policy": "policy", "num_samples": 3, "reward": "scalar_rm", "reward_model": "rm"}
    path = write_config(tmp_path, models, ["q1", "q2", "answer-of-doom"], preferences=prefs)
    config = load_config(path)
    stats = build_preferences(config, config.run_dir)
    assert stats["status"] == "partial" and stats["rows_failed"] == 1
    kept = rows_of(config.run_dir, "preferences")
    assert len(kept) == 2 and all("answer-of-doom" not in str(r["prompt"]) for r in kept)


def test_a_failed_judge_call_is_a_failed_row_not_an_abstain(ray_cluster, tmp_path):
    models = {"policy": sim("policy"), "j1": sim("j1"), "j2": sim("j2", failure_rate=1.0)}
    models["j2"]["max_attempts"] = 2
    prefs = {
        "policy": "policy",
        "num_samples": 3,
        "judging": {"judges": ["j1", "j2"], "aggregator_judge": "j1"},
    }
    path = write_config(tmp_path, models, ["q1", "q2"], preferences=prefs)
    config = load_config(path)
    stats = build_preferences(config, config.run_dir)
    assert stats["status"] == "empty" and stats["rows_failed"] == 2
    assert rows_of(config.run_dir, "preferences") == []
    assert RunDir(config.run_dir).stage("preferences/dropped").read() is None  # not dropped


class _Flaky(BaseHTTPRequestHandler):
    """An OpenAI-style endpoint answering 503 for prompts with the marker, else a fixed answer."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests += 1
        if any(POISON in m["content"] for m in body["messages"]):
            self.send_response(503)
            self.end_headers()
            return
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": f"answer {i}. Verdict: [[A]]"},
                    "finish_reason": "stop",
                }
                for i in range(body.get("n") or 1)
            ],
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_an_http_judge_answering_503_fails_its_rows_and_the_stage_goes_on(ray_cluster, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    server.requests = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = {
            "path": "judge-model",
            "engine": "openai_http",
            "api_base": f"http://127.0.0.1:{server.server_port}/v1",
            "num_cpus": 0,
            "max_attempts": 2,
            "retry_backoff_s": 0.05,
        }
        models = {"policy": sim("policy"), "judge": judge}
        prefs = {"policy": "policy", "num_samples": 2, "judging": {"judges": ["judge"]}}
        path = write_config(tmp_path, models, ["q1", f"q2 {POISON}", "q3"], preferences=prefs)
        config = load_config(path)
        stats = build_preferences(config, config.run_dir)
    finally:
        server.shutdown()
    assert stats["rows_written"] == 2 and stats["rows_failed"] == 1
    # The endpoint's judge says "A" in both orders, pure position bias: no pair is kept, and the
    # stage says so rather than reporting the failed row alone.
    assert stats["status"] == "empty" and stats["pairs_kept"] == 0
    [reject] = rejects_of(config.run_dir, "preferences")
    assert reject["failed"] and "503" in reject["reason"]


def test_results_of_another_config_are_never_returned_under_a_new_name(ray_cluster, tmp_path):
    prompts = [f"q{i}" for i in range(4)]
    models = {**moa_models(), "other": sim("other")}
    path = write_config(tmp_path, models, prompts, generate=MOA)
    config = load_config(path)
    assert generate_sft(config, config.run_dir)["rows_written"] == 4
    changed = load_config(path, ["generate.aggregator=other"])
    with pytest.raises(FingerprintMismatch, match="generate.aggregator"):
        generate_sft(changed, config.run_dir)
    # Operational keys (replicas, batch sizes) do not invalidate finished rows.
    scaled = load_config(path, ["models.p1.num_replicas=[1,2]", "generate.batch_size=2"])
    assert generate_sft(scaled, config.run_dir)["rows_written"] == 0
    redo = generate_sft(changed, config.run_dir, fresh=True)
    assert redo["rows_written"] == 4
    assert {r["models"][-1] for r in rows_of(config.run_dir)} == {"other"}
    assert list((tmp_path / "run" / "superseded").glob("*/generate/part-*.parquet"))


def test_evaluating_another_model_in_the_same_run_dir_is_refused(ray_cluster, tmp_path):
    questions = tmp_path / "alpaca.json"
    rows = [{"instruction": f"Say {i}.", "output": "ok", "generator": "g"} for i in range(3)]
    questions.write_text(json.dumps(rows))
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {"a": sim("a"), "c": sim("c"), "j": sim("j")},
        "evaluate": {
            "benchmarks": [{"path": str(questions), "format": "alpaca_eval"}],
            "model": "a",
            "judging": {"judges": ["j"]},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    first = evaluate(config, config.run_dir)
    assert first["benchmarks"]["alpaca"]["judged"] == 3
    with pytest.raises(FingerprintMismatch, match='evaluate.model: "a" -> "c"'):
        evaluate(load_config(path, ["evaluate.model=c"]), config.run_dir)


def test_a_slow_model_gets_its_calls_once_loaded_while_the_stream_runs_ahead(ray_cluster, tmp_path):
    """The stream starts while the pools load: the aggregator's calls wait for it, untimed."""
    models = moa_models(load_s=3)
    models["agg"]["request_timeout_s"] = 1
    config = load_config(write_config(tmp_path, models, [f"q{i}" for i in range(8)], generate=MOA))
    summary = generate_sft(config, config.run_dir)
    assert summary["rows_written"] == 8 and summary["rows_rejected"] == 0
    assert all(row["messages"][-1]["content"] for row in rows_of(tmp_path / "run"))


def test_a_model_that_fails_to_load_ends_the_stage_and_the_fixed_config_reruns_it(
    ray_cluster, tmp_path
):
    from moaa_ray.pools.dispatch import EngineFailure

    broken = tmp_path / "broken"  # a config.json and no weights
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    models = {**moa_models(), "agg": {"path": str(broken), "num_cpus": 0}}
    path = write_config(tmp_path, models, [f"q{i}" for i in range(8)], generate=MOA)
    config = load_config(path)
    with pytest.raises(EngineFailure, match="model 'agg' .* failed to load: \\w+Error: ") as error:
        generate_sft(config, config.run_dir)
    assert "\n" not in str(error.value)  # one line; the traceback is on the error's cause
    assert rows_of(tmp_path / "run") == []
    fixed = load_config(path, ["models.agg.engine=simulated", "models.agg.path=agg"])
    summary = generate_sft(fixed, fixed.run_dir)  # no --fresh: the failed run wrote nothing
    assert summary["status"] == "done" and len(rows_of(tmp_path / "run")) == 8


def test_a_pending_replica_that_fails_to_load_is_dropped_and_the_pool_goes_on(
    ray_cluster, tmp_path
):
    import ray

    from moaa_ray.config import ModelConfig
    from moaa_ray.engines.base import SamplingParams
    from moaa_ray.pools.actor import EngineActor
    from moaa_ray.pools.pool_set import start_pool, stop_actors

    pool = start_pool("p", ModelConfig(path="p", engine="simulated", num_cpus=0))
    not_a_model = ModelConfig(path=str(tmp_path), engine="hf", num_cpus=0)
    broken = EngineActor.options(num_cpus=0).remote("p", not_a_model)
    ready_ref = broken.ready.remote()
    ray.wait([ready_ref], timeout=120)
    pool.pending.append((ready_ref, broken))
    try:
        completions = pool.chat([[{"role": "user", "content": "hi"}]] * 6, SamplingParams())
    finally:
        stop_actors(pool.actors)
    assert all(c.output for c in completions)
    assert pool.pending == [] and len(pool.actors) == 1
