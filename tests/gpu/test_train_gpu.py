"""SFT then DPO on one GPU: bf16, DeepSpeed ZeRO-3, nccl; the saved models are bf16 and load."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytest.importorskip("ray.train")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ANSWER = "It is blue."
TRAIN = {
    "global_batch_size": 4,
    "micro_batch_size": 2,
    "max_seq_len": 128,
    "num_workers": [1, 1],
    "gpus_per_worker": 1,
    "zero_stage": 3,
    "max_failures": 0,
}


def _write(directory, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-00000.parquet")


@pytest.fixture(scope="module")
def gpu_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_sft_and_dpo_train_in_bf16_with_zero3(gpu_cluster, tmp_path):
    from moaa_ray.config import MoaaConfig
    from moaa_ray.train.dpo import train_dpo
    from moaa_ray.train.sft import train_sft

    questions = [f"What color is thing number {i}?" for i in range(8)]
    _write(
        tmp_path / "generate",
        [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            for q in questions
        ],
    )
    _write(
        tmp_path / "preferences",
        [
            {
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": ANSWER}],
                "rejected": [{"role": "assistant", "content": "No idea."}],
            }
            for q in questions
        ],
    )
    config = MoaaConfig.model_validate(
        {
            "run_dir": str(tmp_path),
            "models": {"a": {"path": "tiny:llama-a"}},
            "sft": {**TRAIN, "model": "a", "learning_rate": 5e-3, "num_epochs": 8},
            "dpo": {**TRAIN, "learning_rate": 2e-3, "beta": 0.5, "num_epochs": 2},
        }
    )
    sft = train_sft(config, tmp_path)
    dpo = train_dpo(config, tmp_path)
    assert sft["steps"] == 16 and sft["final_loss"] < 2.0
    assert dpo["metrics"]["reward_margin"] > 0 and dpo["metrics"]["reward_accuracy"] == 1.0
    for name in ("sft", "dpo"):
        saved = json.loads((tmp_path / name / "model" / "config.json").read_text())
        assert saved["dtype"] == "bfloat16"

    from moaa_ray.config import ModelConfig
    from moaa_ray.engines.base import SamplingParams
    from moaa_ray.engines.hf import HFEngine

    engine = HFEngine(ModelConfig(path=str(tmp_path / "dpo" / "model")))
    params = SamplingParams(temperature=0, max_new_tokens=8)
    assert engine.chat([[{"role": "user", "content": questions[0]}]], params)[0][0].text.strip()
