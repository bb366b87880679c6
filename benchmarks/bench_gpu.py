"""GPU figures: the hf engine's generation and Ray Train + DeepSpeed training on one GPU.

Runs where CUDA is (``benchmarks/run.py`` leaves it out elsewhere), on a random-init
Llama-architecture model of 417M parameters (hidden 2048, 12 layers, grouped-query attention with 4
key/value heads), built offline like the tiny models, with the tiny models' 512-token vocabulary.
Random weights generate random text, which costs what real text costs per token.

* Generation: ``HFEngine.chat`` (the ``hf`` engine a pool replica runs) in bf16 on batches of
  ``GENERATION_BATCHES`` one-turn conversations, ``NEW_TOKENS`` new tokens at most, temperature 1.
  Tokens are the answers' tokens, re-tokenized from their text; the median of ``repeats`` timed
  calls after one warm-up call.
* Training: ``bench_training.compare`` on one GPU. Ours is ``train_sft``/``train_dpo`` (a Ray Train
  worker with one GPU, DeepSpeed bf16, ZeRO-2 config on one worker as the default); the torch loop
  and TRL's ``DPOTrainer`` train fp32 weights under bf16 autocast. Larger batches than on CPU so
  a step is GPU work, not launch overhead: ``SETUP``. The baselines use our trainer's attention
  kernels (cuDNN's off) for the goal ratios, then run again with PyTorch's default (cuDNN's).

Run as ``.venv/bin/python benchmarks/run.py --only gpu``.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench_training import (
    SEED,
    Setup,
    compare,
    make_conversations,
    make_pairs,
    run_torch_loop,
    run_trl,
)
from benchmarks.bench_training import plot as plot_training
from moaa_ray.tiny_models import TinySpec, build_model

MODEL = TinySpec("llama", hidden_size=2048, num_layers=12, num_kv_heads=4, seed=10)
SETUP = Setup("", steps=(12, 32), sft_batch=(64, 16), dpo_batch=(32, 8), gpu=True)
GENERATION_BATCHES = (1, 16, 64)
NEW_TOKENS = 128


def generation(model_dir: str, repeats: int) -> dict[str, float]:
    """Generated tokens/s of the hf engine at each batch size."""
    from moaa_ray.config import ModelConfig
    from moaa_ray.engines.base import SamplingParams
    from moaa_ray.engines.hf import HFEngine

    engine = HFEngine(ModelConfig(path=model_dir))
    params = SamplingParams(temperature=1.0, max_new_tokens=NEW_TOKENS, seed=SEED)
    prompts = [c[:1] for c in make_conversations(max(GENERATION_BATCHES), SEED)]
    figures: dict[str, float] = {}
    for batch in GENERATION_BATCHES:
        engine.chat(prompts[:batch], params)  # warm-up
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            answers = engine.chat(prompts[:batch], params)
            seconds = time.perf_counter() - started
            texts = [a.text for row in answers for a in row]
            tokens = sum(map(len, engine.tokenizer(texts, add_special_tokens=False).input_ids))
            rates.append(tokens / seconds)
        figures[f"hf_generate_tokens_per_s_batch_{batch}"] = round(statistics.median(rates))
    return figures


def measure(quick: bool) -> dict[str, float | int | str]:
    """Build the model, then time generation and training on this machine's GPU."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("the gpu benchmark needs a CUDA GPU; torch sees none")
    model_dir = tempfile.mkdtemp(prefix="bench-gpu-model-")
    try:
        started = time.perf_counter()
        build_model(MODEL, Path(model_dir))
        figures: dict[str, float | int | str] = {
            "gpu_name": torch.cuda.get_device_name(),
            "torch_version": torch.__version__,
            "model_build_s": round(time.perf_counter() - started, 1),
            "generate_new_tokens": NEW_TOKENS,
        }
        figures |= generation(model_dir, repeats=3 if quick else 10)
        torch.cuda.empty_cache()
        setup = dataclasses.replace(SETUP, model=model_dir)
        training = compare({"gpu": setup}, quick, gpus=1)
        training["gpu_model"] = "llama-2048x12 (random init)"
        # The baselines again with PyTorch's default attention kernel (cuDNN's), as a script runs.
        steps = setup.steps[0 if quick else 1]
        default = dataclasses.replace(setup, cudnn_attention=True)
        loop = run_torch_loop(default, make_conversations(setup.sft_batch[0] * steps, SEED), steps)
        trl = run_trl(default, make_pairs(setup.dpo_batch[0] * steps, SEED), steps)
        training["gpu_sft_tokens_per_s_torch_cudnn_attention"] = round(loop["tokens_per_s"])
        training["gpu_dpo_tokens_per_s_trl_cudnn_attention"] = round(trl["tokens_per_s"])
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    return figures | training


def plot(figures: dict, path: Path) -> None:
    """The training comparison's bars, as for the CPU benchmark."""
    plot_training(figures, path)
