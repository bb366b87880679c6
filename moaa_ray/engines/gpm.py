"""The ``gpm`` engine: the General Preference Model (Zhang et al., arXiv 2410.02197), which scores a
prompt's answers against each other from one preference embedding per answer, loaded from its
published checkpoint layout (:mod:`moaa_ray.gpm_model`).

The engine's ``preference_table`` gives, per (conversation, answers) item, the K x K table that the
reference's ``rank_gp.py`` saves: ``[i][j]`` is ``s(answer i ≻ answer j)``, skew-symmetric with a
zero diagonal. Each answer is read once (K sequences per item, not K²).
"""

from __future__ import annotations

import logging

import torch

from moaa_ray.config import ModelConfig
from moaa_ray.core.conversations import conform
from moaa_ray.engines.base import Conversation
from moaa_ray.engines.hf import left_padded_tokenizer, resolve_dtype
from moaa_ray.gpm_model import TAU, GeneralPreferenceModel, preference_table, render
from moaa_ray.tiny_models import resolve_model_path

logger = logging.getLogger(__name__)

TableItem = tuple[Conversation, list[str]]  # (conversation before the answers, the answers)


class GPMEngine:
    """Scores a conversation's answers against each other with a GPM checkpoint.

    ``engine_kwargs`` may set ``tau`` (the reference's ``RM_CONFIGS``; 0.1, as every published
    GPM's); the rest goes to ``from_pretrained``. Sequences are not cut, as in the reference.

    Raises:
        ValueError: ``tau`` is not positive, or the checkpoint is not of GPM's layout.
    """

    batches_items = True  # waiting calls are merged into one batch (pools/replica.py)

    def __init__(self, config: ModelConfig):
        kwargs = dict(config.engine_kwargs)
        self.tau = float(kwargs.pop("tau", TAU))
        if self.tau <= 0:
            raise ValueError(f"engine_kwargs.tau must be positive, got {self.tau}")
        path = resolve_model_path(config.path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer, self.accepts_system = left_padded_tokenizer(path, config)
        self.model = GeneralPreferenceModel.from_pretrained(
            path,
            dtype=resolve_dtype(config.dtype, self.device),
            trust_remote_code=config.trust_remote_code,
            **kwargs,
        ).to(self.device)
        self.model.eval()
        logger.info(
            "loaded GPM %s on %s: value_head_dim %d, %s prompt head, tau %g",
            path,
            self.device,
            self.model.value_head_dim,
            "with a" if self.model.prompt_head is not None else "no",
            self.tau,
        )

    def _tokens(self, conversation: Conversation) -> list[int]:
        text = render(self.tokenizer, conversation)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def preference_table(self, items: list[TableItem]) -> list[list[list[float]]]:
        """The K x K table of each (conversation, K answers) item; all answers in one batch."""
        reads_prompt = self.model.prompt_head is not None
        ids: list[list[int]] = []
        prompt_lengths: list[int] = []
        for conversation, answers in items:
            shaped = conform(conversation, accepts_system=self.accepts_system)
            ids += [self._tokens([*shaped, {"role": "assistant", "content": a}]) for a in answers]
            # Only a prompt head reads the conversation's last token; only then is it counted.
            prompt_lengths += [len(self._tokens(shaped)) if reads_prompt else 0] * len(answers)
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        ends = None
        if reads_prompt:
            # Left padding: a conversation's last token is the one before its answer's tokens.
            width = batch["input_ids"].shape[1]
            pairs = zip(ids, prompt_lengths, strict=True)
            ends = torch.tensor([width - len(row) + n - 1 for row, n in pairs], device=self.device)
        embeddings, scales = self.model(batch["input_ids"], batch["attention_mask"], ends)
        tables, start = [], 0
        for _, answers in items:
            rows = slice(start, start + len(answers))
            own = None if scales is None else scales[rows]
            tables.append(preference_table(embeddings[rows], own, self.tau).tolist())
            start = rows.stop
        return tables
