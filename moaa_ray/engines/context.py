"""Each model's context window, and its prompts measured in tokens before they are sent.

Stages fit every prompt to the model that will read it (:func:`moaa_ray.core.context.fit_parts`) on
the driver's side, with the model's own tokenizer and chat template, so no engine call fails for
length and a prompt that cannot fit is rejected with its row instead of failing a batch.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moaa_ray.core.context import Prompt, fit_parts
from moaa_ray.core.conversations import Messages, conform, template_accepts_system

if TYPE_CHECKING:
    from moaa_ray.config import ModelConfig

logger = logging.getLogger(__name__)

# Names model configs give their context length, most common first.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# Engines whose tokenizer the driver can load; the others (openai_http, simulated, function) are
# sent prompts as they are: a server enforces its own window.
_MEASURED_ENGINES = ("hf", "vllm")


def context_length_of(model_config: Any) -> int | None:
    """The context length a transformers model config declares, or None if it names none."""
    for name in CONTEXT_FIELDS:
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class ContextWindow:
    """A model's window in tokens and its tokenizer, which counts prompts as the engine renders them."""

    limit: int
    tokenizer: Any
    accepts_system: bool

    def count_tokens(self, conversation: Messages) -> int:
        """Tokens of the conversation under the chat template, generation prompt included."""
        shaped = conform(conversation, accepts_system=self.accepts_system)
        text = self.tokenizer.apply_chat_template(
            shaped, tokenize=False, add_generation_prompt=True
        )
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def fit(self, prompt: Prompt, max_new_tokens: int) -> tuple[Messages, int]:
        """The prompt with its parts cut evenly so it and ``max_new_tokens`` fit the window.

        Returns:
            ``(messages, parts_cut)``.

        Raises:
            PromptTooLong: not even with every part cut to nothing.
        """
        budget = self.limit - max_new_tokens
        return fit_parts(prompt.render, list(prompt.parts), self.count_tokens, budget)


_WINDOWS: dict[str, ContextWindow | None] = {}
# Ray Data runs a worker's batches on several threads; transformers' lazy imports are not safe to
# race, and each window loads once.
_LOADING = threading.Lock()


def context_window(config: ModelConfig) -> ContextWindow | None:
    """The model's context window, loaded once per process.

    The limit is ``max_model_len``, else vLLM's ``engine_kwargs.max_model_len``, else what the
    model's config declares (``max_position_embeddings`` and the like).

    Returns:
        None for engines whose prompts are not measured here (openai_http, simulated, function) and
        for a model that declares no context length.
    """
    if config.engine not in _MEASURED_ENGINES:
        return None
    key = config.model_dump_json()
    with _LOADING:
        if key not in _WINDOWS:
            _WINDOWS[key] = _load_window(config)
    return _WINDOWS[key]


def _load_window(config: ModelConfig) -> ContextWindow | None:
    from transformers import AutoConfig, AutoTokenizer

    from moaa_ray.tiny_models import resolve_model_path

    path = resolve_model_path(config.path)
    remote = config.trust_remote_code
    limit = config.max_model_len or config.engine_kwargs.get("max_model_len")
    if limit is None:
        limit = context_length_of(AutoConfig.from_pretrained(path, trust_remote_code=remote))
    if limit is None:
        logger.warning("%s declares no context length; its prompts are sent unmeasured", path)
        return None
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
    return ContextWindow(int(limit), tokenizer, template_accepts_system(tokenizer))
