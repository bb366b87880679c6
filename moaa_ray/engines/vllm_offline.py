"""vLLM backend: the offline ``vllm.LLM`` engine; tensor parallelism etc. via ``engine_kwargs``."""

from __future__ import annotations

import vllm

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
        self.accepts_system = accepts_system(self.tokenizer, config.path)

    def _conform(self, conversations: list[Conversation]) -> list[Conversation]:
        return [conform(c, accepts_system=self.accepts_system) for c in conversations]

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Answer]]:
        """Sample ``params.n`` answers per conversation, each with vLLM's finish reason."""
        outputs = self.llm.chat(self._conform(conversations), vllm_sampling(params), use_tqdm=False)
        return [[answer_of(c.text, c.finish_reason) for c in out.outputs] for out in outputs]

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Exact log-probability of each choice after ``prefix``, read from the tokens the tokenizer
        writes for prefix + choice (:mod:`moaa_ray.engines.choice_tokens`) as prompt tokens."""
        texts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            + prefix
            for c in self._conform(conversations)
        ]

        def encode(suffix: str) -> list[list[int]]:
            return [self.tokenizer.encode(t + suffix, add_special_tokens=False) for t in texts]

        sequences, reads = plan_choices(encode(""), [encode(c) for c in choices], choices)
        flat = [read for row in reads for read in row]
        prompts = [{"prompt_token_ids": sequences[r.sequence] + [r.tokens[-1]]} for r in flat]
        sampling = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        scores = [
            sum(out.prompt_logprobs[r.start + k][t].logprob for k, t in enumerate(r.tokens))
            for r, out in zip(flat, outputs, strict=True)
        ]
        k = len(choices)
        return [scores[i * k : (i + 1) * k] for i in range(len(conversations))]
