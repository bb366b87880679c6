"""vLLM backend: vLLM's ``AsyncLLM`` engine, which batches continuously.

Each conversation is a request of its own, added to the engine's running batch at its next step, so a
replica serves many calls at once and vLLM keeps as many sequences running as it can hold (the
pool's actor admits calls up to ``max_batch_size`` items: :mod:`moaa_ray.pools.replica`). A call
that is cancelled (a timeout) aborts its requests in the engine. Tensor parallelism and every other
vLLM setting go through ``engine_kwargs``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import vllm
from transformers import AutoTokenizer
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from moaa_ray.config import ModelConfig
from moaa_ray.core.conversations import conform
from moaa_ray.engines.base import Answer, Conversation, SamplingParams, answer_of
from moaa_ray.engines.choice_tokens import plan_choices
from moaa_ray.engines.hf import accepts_system
from moaa_ray.tiny_models import resolve_model_path


def vllm_engine_args(config: ModelConfig) -> dict:
    """Keyword arguments of ``vllm.LLM`` and ``AsyncEngineArgs``: ``engine_kwargs`` unchanged, the
    model's dtype and ``max_model_len``, and tensor parallelism over the actor's GPUs unless
    ``engine_kwargs`` says."""
    kwargs = {"dtype": config.dtype, **config.engine_kwargs}
    if config.max_model_len is not None:
        kwargs.setdefault("max_model_len", config.max_model_len)
    if config.num_gpus > 1:
        kwargs.setdefault("tensor_parallel_size", int(config.num_gpus))
    model = resolve_model_path(config.path)
    return {"model": model, "trust_remote_code": config.trust_remote_code, **kwargs}


def vllm_sampling(params: SamplingParams, **extra: Any) -> vllm.SamplingParams:
    """Our sampling parameters as vLLM's, for the request's final output only."""
    return vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_new_tokens,
        seed=params.seed,
        output_kind=RequestOutputKind.FINAL_ONLY,
        **extra,
    )


class VLLMEngine:
    """``AsyncLLM`` with the model's chat template; ``engine_kwargs`` go to ``AsyncEngineArgs``."""

    def __init__(self, config: ModelConfig):
        args = vllm_engine_args(config)
        self.engine = AsyncLLM.from_engine_args(vllm.AsyncEngineArgs(**args))
        self.tokenizer = AutoTokenizer.from_pretrained(
            args["model"], trust_remote_code=config.trust_remote_code
        )
        self.accepts_system = accepts_system(self.tokenizer, args["model"])
        self.context_length: int | None = self.engine.model_config.max_model_len

    def render(self, conversation: Conversation, prefix: str = "") -> str:
        """The conversation under the model's chat template, ready for the assistant's answer."""
        text = self.tokenizer.apply_chat_template(
            conform(conversation, accepts_system=self.accepts_system),
            tokenize=False,
            add_generation_prompt=True,
        )
        return text + prefix

    async def complete(self, token_ids: list[int], sampling: vllm.SamplingParams) -> Any:
        """One request's final output (a ``vllm.RequestOutput``)."""
        final = None
        request = {"prompt_token_ids": token_ids}
        async for output in self.engine.generate(request, sampling, uuid.uuid4().hex):
            final = output
        if final is None:
            raise RuntimeError("vLLM ended a request without output")
        return final

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    async def chat(
        self, conversations: list[Conversation], params: SamplingParams
    ) -> list[list[Answer]]:
        """Sample ``params.n`` answers per conversation, each with vLLM's finish reason."""
        sampling = vllm_sampling(params)
        outputs = await asyncio.gather(
            *(self.complete(self.encode(self.render(c)), sampling) for c in conversations)
        )
        return [[answer_of(c.text, c.finish_reason) for c in out.outputs] for out in outputs]

    async def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Exact log-probability of each choice after ``prefix``, read from the tokens the tokenizer
        writes for prefix + choice (:mod:`moaa_ray.engines.choice_tokens`) as prompt tokens."""
        texts = [self.render(c, prefix) for c in conversations]

        def encode(suffix: str) -> list[list[int]]:
            return [self.encode(t + suffix) for t in texts]

        sequences, reads = plan_choices(encode(""), [encode(c) for c in choices], choices)
        flat = [read for row in reads for read in row]
        sampling = vllm.SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        outputs = await asyncio.gather(
            *(self.complete(sequences[r.sequence] + [r.tokens[-1]], sampling) for r in flat)
        )
        scores = [
            sum(out.prompt_logprobs[r.start + k][t].logprob for k, t in enumerate(r.tokens))
            for r, out in zip(flat, outputs, strict=True)
        ]
        k = len(choices)
        return [scores[i * k : (i + 1) * k] for i in range(len(conversations))]

    def shutdown(self) -> None:
        """Stop the engine's core process."""
        self.engine.shutdown()
