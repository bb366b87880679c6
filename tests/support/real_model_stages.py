"""The production path on real weights: SmolLM2-135M-Instruct (``real:smollm2-135m-instruct``) in
every role, through the Ray pools and the Ray Data stream, for any engine (``hf`` in the main tier,
``vllm`` in the vLLM tier). Each check is what a person would look at: real text, finish reasons,
the model's own chat template and default system prompt, every row once."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from moaa_ray.config import MoaaConfig, load_config

MODEL = "real:smollm2-135m-instruct"
# vLLM's CPU build: eager (compiling at load takes longer here than it saves), and whole prompts
# only, since it fails a seeded request whose prompt is split across steps.
VLLM_CPU = {"max_model_len": 2048, "enforce_eager": True, "enable_chunked_prefill": False}
# Questions the model answers right when greedy (measured with transformers), and the city each
# answer must name.
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Egypt": "Cairo", "Germany": "Berlin"}


def question(country: str) -> str:
    return f"What is the capital of {country}?"


def names_the_capital(messages: list[dict], answer: str) -> bool | None:
    """The verifier of the capital questions: whether the answer names the country's capital."""
    for country, city in CAPITALS.items():
        if question(country) in messages[-1]["content"]:
            return city.lower() in answer.lower()
    return None


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def real_config(tmp_path: Path, engine: str, **sections: dict) -> MoaaConfig:
    """One model, ``smol``, in every role; loaded from a YAML file as a user writes it."""
    model: dict = {"path": MODEL, "engine": engine, "num_cpus": 0, "startup_timeout_s": 600}
    if engine == "vllm":
        model["engine_kwargs"] = VLLM_CPU
    raw = {"run_dir": str(tmp_path / "run"), "models": {"smol": model}, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def check_generate(tmp_path: Path, engine: str) -> None:
    """Two MoA layers: the model proposes twice and aggregates its own answers; greedy answers to
    the capital questions name the city; a cut answer is reported as cut."""
    from moaa_ray.pipeline.generate import generate_sft

    prompts = [{"prompt": question(c)} for c in CAPITALS]
    config = real_config(
        tmp_path,
        engine,
        generate={
            "inputs": [{"path": write_jsonl(tmp_path / "prompts.jsonl", prompts)}],
            "proposers": ["smol", "smol"],
            "aggregator": "smol",
            "sampling": {"temperature": 0.0, "max_new_tokens": 64},
            "truncated_answers": "keep",
            "batch_size": 2,
        },
    )
    summary = generate_sft(config, config.run_dir)
    assert summary["status"] == "done", summary
    rows = [r for f in sorted((tmp_path / "run" / "generate").glob("part-*.parquet"))
            for r in pq.read_table(f).to_pylist()]  # fmt: skip
    assert len(rows) == len(prompts) == len({r["row_id"] for r in rows})  # every row once
    by_question = {r["messages"][-2]["content"]: r for r in rows}
    for country, city in CAPITALS.items():
        proposals = [p for p in by_question[question(country)]["proposals"] if p["layer"] == 0]
        assert len(proposals) == 2 and all(city in p["content"] for p in proposals), proposals
    # The aggregator rewrites two references at 135M parameters: most, not all, keep the city.
    finals = {q: r["messages"][-1]["content"] for q, r in by_question.items()}
    assert sum(city in finals[question(c)] for c, city in CAPITALS.items()) >= 3, finals

    (tmp_path / "short").mkdir()
    short = real_config(
        tmp_path / "short",
        engine,
        generate={
            "inputs": [{"path": write_jsonl(tmp_path / "one.jsonl", prompts[:1])}],
            "proposers": ["smol"],
            "aggregator": "smol",
            "sampling": {"temperature": 0.0, "max_new_tokens": 2},
        },
    )
    cut = generate_sft(short, short.run_dir)
    # Two tokens cannot finish an answer: the final answer is cut, so the row is no SFT data, and
    # the stage that kept nothing says so.
    assert cut["truncated_answers_dropped"] == 1 and cut["status"] == "empty", cut
    assert "kept nothing of 1 input rows" in cut["warning"]


def check_chat_template(engine: str) -> None:
    """The engine renders the model's own template (ChatML) with its default system prompt when a
    conversation has none, and the conversation's own system turn instead of it."""
    if engine == "vllm":
        from transformers import AutoTokenizer

        from moaa_ray.engines.hf import accepts_system
        from moaa_ray.tiny_models import resolve_model_path

        path = resolve_model_path(MODEL)  # the vllm engine renders with this tokenizer
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert accepts_system(tokenizer, path)

        def render(conversation):
            return tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
    else:
        from moaa_ray.config import ModelConfig
        from moaa_ray.engines.hf import HFEngine

        hf = HFEngine(ModelConfig(path=MODEL))

        def render(conversation):
            return hf.tokenizer.decode(hf._encode([conversation])["input_ids"][0])

    user = {"role": "user", "content": question("France")}
    default = render([user])
    assert default.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert default.endswith("<|im_start|>assistant\n")
    own = render([{"role": "system", "content": "Be brief."}, user])
    assert "Be brief." in own and "SmolLM" not in own


def check_preferences(tmp_path: Path, engine: str) -> None:
    """Samples at T=1, judged by the model itself with logprob verdicts in both orders and an
    aggregator judge: every prompt once, calibrated P(A) in (0, 1), pairs in TRL's format."""
    from moaa_ray.pipeline.preferences import build_preferences

    prompts = [{"prompt": question(c)} for c in CAPITALS]
    config = real_config(
        tmp_path,
        engine,
        verifier="tests.support.real_model_stages:names_the_capital",
        preferences={
            "inputs": [{"path": write_jsonl(tmp_path / "prompts.jsonl", prompts)}],
            "policy": "smol",
            "num_samples": 3,
            "sampling": {"temperature": 1.0, "max_new_tokens": 48},
            "truncated_samples": "keep",
            "judging": {
                "judges": ["smol"],
                "aggregator_judge": "smol",
                "verdict_mode": "logprob",
                "sampling": {"temperature": 0.0, "max_new_tokens": 8},
            },
            "batch_size": 2,
        },
    )
    stats = build_preferences(config, config.run_dir)
    assert stats["status"] == "done", stats
    assert stats["pairs_kept"] == len(prompts) and stats["abstain_rate"] == 0.0, stats
    stage = tmp_path / "run" / "preferences"
    pairs = [r for f in sorted(stage.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len({p["row_id"] for p in pairs}) == len(pairs) == len(prompts)
    for pair in pairs:
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"][0]["content"] and pair["rejected"][0]["content"]
    audit = pq.read_table(stage / "judgments").to_pylist()
    assert audit and all(0.0 < a["p_a"] < 1.0 for a in audit)
    assert "verifier" in stats and 0.0 <= stats["verifier"]["ensemble_agreement"] <= 1.0


def check_evaluate(tmp_path: Path, engine: str) -> None:
    """A verified benchmark of the capital questions: the model's greedy answers, checked by the
    verifier, are mostly right (the model gets them right with transformers)."""
    from moaa_ray.pipeline.evaluate.stage import evaluate

    rows = [{"id": c, "prompt": question(c)} for c in CAPITALS]
    config = real_config(
        tmp_path,
        engine,
        verifier="tests.support.real_model_stages:names_the_capital",
        evaluate={
            "benchmarks": [
                {"path": write_jsonl(tmp_path / "capitals.jsonl", rows), "format": "verified"}
            ],
            "model": "smol",
            "sampling": {"temperature": 0.0, "max_new_tokens": 48},
        },
    )
    summary = evaluate(config, config.run_dir)
    assert summary["status"] == "done", summary
    results = json.loads((tmp_path / "run" / "evaluate" / "results.json").read_text())
    capitals = results["benchmarks"]["capitals"]
    assert (capitals["total"], capitals["verifiable"]) == (len(rows), len(rows)), capitals
    assert capitals["accuracy"] >= 0.75, capitals


def check_serve(engine: str) -> None:
    """``moaa serve``'s app on Ray Serve, bound to 127.0.0.1, answering the openai client with the
    model's real text and finish reasons."""
    import socket

    from openai import OpenAI
    from ray import serve

    from moaa_ray.config import ModelConfig
    from moaa_ray.serve.openai_app import ServeSettings, run_server

    kwargs = VLLM_CPU if engine == "vllm" else {}
    config = ModelConfig(path=MODEL, engine=engine, num_cpus=0, engine_kwargs=kwargs)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = run_server(config, ServeSettings("smol"), host="127.0.0.1", port=port)
    try:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": question("France")}]
        reply = client.chat.completions.create(
            model="smol", messages=messages, max_tokens=48, temperature=0.0
        )
        [choice] = reply.choices
        assert "Paris" in choice.message.content and choice.finish_reason == "stop", reply
        cut = client.chat.completions.create(
            model="smol", messages=messages, max_tokens=2, temperature=0.0
        )
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    finally:
        serve.shutdown()
