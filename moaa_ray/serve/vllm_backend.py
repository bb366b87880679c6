"""The ``vllm`` serving backend: vLLM's ``AsyncLLM``, which batches concurrent requests continuously.

Each request goes to the engine as soon as it arrives and joins the running batch at the next step;
a request that is cancelled (a timeout, a client gone) is aborted in the engine. Imports neither Ray
nor FastAPI, so it runs (and is tested) wherever vLLM is installed.
"""

from __future__ import annotations

import uuid

import vllm
from transformers import AutoTokenizer
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.engines.hf import accepts_system
from moaa_ray.engines.vllm_offline import vllm_engine_args, vllm_sampling
from moaa_ray.serve.backends import RenderedPrompt, render_prompt
from moaa_ray.serve.protocol import GeneratedChoice


class VLLMBackend:
    """``AsyncLLM`` with the model's chat template; ``engine_kwargs`` go to ``AsyncEngineArgs``."""

    def __init__(self, config: ModelConfig):
        engine_args = vllm_engine_args(config)
        path = engine_args["model"]
        args = vllm.AsyncEngineArgs(**engine_args)
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=config.trust_remote_code
        )
        self.accepts_system = accepts_system(self.tokenizer, path)
        self.context_length: int | None = self.engine.model_config.max_model_len

    def render(self, conversation: Conversation) -> RenderedPrompt:
        """Apply the chat template; vLLM then gets token ids, so counts and generation agree."""
        return RenderedPrompt(
            conversation,
            render_prompt(self.tokenizer, conversation, accepts_system=self.accepts_system),
        )

    async def generate(
        self, prompt: RenderedPrompt, params: SamplingParams
    ) -> list[GeneratedChoice]:
        """``params.n`` completions, from the engine's final output for the request."""
        sampling = vllm_sampling(params, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        request = {"prompt_token_ids": prompt.token_ids}
        async for output in self.engine.generate(request, sampling, uuid.uuid4().hex):
            final = output
        assert final is not None, "vLLM ended a request without output"
        return [
            GeneratedChoice(
                choice.text,
                len(choice.token_ids),
                "length" if choice.finish_reason == "length" else "stop",
            )
            for choice in final.outputs
        ]
