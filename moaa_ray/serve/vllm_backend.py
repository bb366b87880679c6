"""The ``vllm`` serving backend: the stages' vLLM engine (``AsyncLLM``, continuous batching).

Each request goes to the engine as soon as it arrives and joins the running batch at the next step;
a request that is cancelled (a timeout, a client gone) is aborted in the engine. Imports neither Ray
nor FastAPI, so it runs (and is tested) wherever vLLM is installed.
"""

from __future__ import annotations

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.vllm_async import VLLMEngine, vllm_sampling
from moaa_ray.serve.protocol import GeneratedChoice
from moaa_ray.serve.rendering import RenderedPrompt, TemplateRendering


class VLLMBackend(TemplateRendering):
    """:class:`VLLMEngine` answering one rendered request at a time, many at once."""

    def __init__(self, config: ModelConfig):
        self.engine = VLLMEngine(config)
        self.context_length: int | None = self.engine.context_length
        self.tokenizer, self.accepts_system = self.engine.tokenizer, self.engine.accepts_system

    async def generate(
        self, prompt: RenderedPrompt, params: SamplingParams
    ) -> list[GeneratedChoice]:
        """``params.n`` completions, from the engine's final output for the request."""
        final = await self.engine.complete(prompt.token_ids, vllm_sampling(params))
        return [
            GeneratedChoice(
                choice.text,
                len(choice.token_ids),
                "length" if choice.finish_reason == "length" else "stop",
            )
            for choice in final.outputs
        ]
