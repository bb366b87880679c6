"""vLLM backend: the offline ``vllm.LLM`` engine; tensor parallelism etc. via ``engine_kwargs``."""

from __future__ import annotations

import vllm

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.tiny_models import resolve_model_path


def vllm_engine_args(config: ModelConfig) -> dict:
    """Keyword arguments of ``vllm.LLM`` and ``AsyncEngineArgs``: ``engine_kwargs`` unchanged, the
    model's dtype, and tensor parallelism over the actor's GPUs unless ``engine_kwargs`` says."""
    kwargs = {"dtype": config.dtype, **config.engine_kwargs}
    if config.num_gpus > 1:
        kwargs.setdefault("tensor_parallel_size", int(config.num_gpus))
    model = resolve_model_path(config.path)
    return {"model": model, "trust_remote_code": config.trust_remote_code, **kwargs}


def vllm_sampling(params: SamplingParams, **extra) -> vllm.SamplingParams:
    """Our sampling parameters as vLLM's."""
    return vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_new_tokens,
        seed=params.seed,
        **extra,
    )


class VLLMEngine:
    """``vllm.LLM`` with the model's chat template; ``engine_kwargs`` go to ``vllm.LLM`` unchanged."""

    def __init__(self, config: ModelConfig):
        self.llm = vllm.LLM(**vllm_engine_args(config))
        self.tokenizer = self.llm.get_tokenizer()

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[str]]:
        """Sample ``params.n`` answers per conversation."""
        outputs = self.llm.chat(conversations, vllm_sampling(params), use_tqdm=False)
        return [[c.text for c in out.outputs] for out in outputs]

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Exact logprob of each choice's first token: scored as the last prompt token."""
        choice_ids = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
        prompts = []
        for conversation in conversations:
            text = self.tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            ids = self.tokenizer.encode(text + prefix, add_special_tokens=False)
            prompts += [{"prompt_token_ids": ids + [choice]} for choice in choice_ids]
        sampling = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        scores = [out.prompt_logprobs[-1][out.prompt_token_ids[-1]].logprob for out in outputs]
        k = len(choice_ids)
        return [scores[i * k : (i + 1) * k] for i in range(len(conversations))]
