"""The General Preference Model's published checkpoint layout (``general-preference/GPM-*``), without
the reference repository's code.

GPM (Zhang et al., arXiv 2410.02197; github.com/general-preference/general-preference-model) embeds
an answer to a conversation as a vector ``v`` of ``value_head_dim = 2k`` numbers: the backbone's last
hidden state at the sequence's last token through ``value_head``, scaled to unit L2 norm. With a
prompt head, the hidden state at the conversation's own last token through ``prompt_head`` and a
softmax gives ``k`` scales ``λ``; without one each ``λ`` is 1. The score of answer i over answer j is

    s(i ≻ j) = Σ_m λ_m (v_i[2m] v_j[2m+1] - v_i[2m+1] v_j[2m]) / tau,

that is ``<R v_i, v_j> / tau`` with ``R`` block-diagonal of blocks ``[[0, -λ_m], [λ_m, 0]]``, ``λ``
read from answer i's row (the reference's ``calculate_score`` in
``LLM-Alignment/scripts/RMs/reward_model.py``, which ``rank_gp.py`` ranks with). A sequence is the
backbone's chat template of the conversation and the answer, its BOS token removed and no special
token added (``rank_gp.py`` puts the policy's chat-templated prompt in the user turn; here the
conversation goes in as it is).

A checkpoint is what the reference's training saves: the backbone's ``config.json`` and tokenizer,
and safetensors weights ``model.*`` (the backbone), perhaps ``lm_head.weight`` (unused here),
``value_head.weight`` ``[2k, hidden]`` and, with a prompt head, ``prompt_head.weight`` ``[k, hidden]``
(both without bias). ``value_head_dim`` and ``add_prompt_head`` are read from those weights; ``tau``
is not in a checkpoint (the reference's ``RM_CONFIGS`` give it: 0.1 for every GPM). The engine is
:mod:`moaa_ray.engines.gpm`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from moaa_ray.core.conversations import Messages

VALUE_HEAD, PROMPT_HEAD = "value_head.weight", "prompt_head.weight"
TAU = 0.1  # every GPM's RM_CONFIGS in the reference's GPO/SPPO scripts
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"


class GeneralPreferenceModel(nn.Module):
    """A causal LM's backbone (transformers' ``AutoModel``) and GPM's heads."""

    def __init__(self, backbone: Any, value_head: nn.Linear, prompt_head: nn.Linear | None):
        super().__init__()
        self.backbone = backbone
        self.value_head = value_head
        self.prompt_head = prompt_head

    @classmethod
    def from_pretrained(
        cls, path: str, dtype: torch.dtype, trust_remote_code: bool = False, **kwargs: Any
    ) -> GeneralPreferenceModel:
        """Load a checkpoint of the published layout (a local directory or a hub name).

        Raises:
            ValueError: the checkpoint has no GPM value head, or heads of the wrong shapes.
        """
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
        )
        heads = _read_heads(path)
        hidden = backbone.config.hidden_size
        value = heads.get(VALUE_HEAD)
        if value is None:
            raise ValueError(f"{path}: no {VALUE_HEAD} in its weights: not a GPM checkpoint")
        dim = value.shape[0]
        if value.shape[1] != hidden or dim < 2 or dim % 2:
            what = "a Bradley-Terry reward model's" if dim == 1 else "not a GPM's"
            raise ValueError(
                f"{path}: {VALUE_HEAD} has shape {list(value.shape)}, {what}: GPM needs an even "
                f"value_head_dim of at least 2 over the backbone's hidden size {hidden}"
            )
        prompt = heads.get(PROMPT_HEAD)
        if prompt is not None and list(prompt.shape) != [dim // 2, hidden]:
            raise ValueError(
                f"{path}: {PROMPT_HEAD} has shape {list(prompt.shape)}, GPM's is "
                f"[value_head_dim / 2, hidden] = {[dim // 2, hidden]}"
            )
        prompt_head = None if prompt is None else _linear(prompt, dtype)
        return cls(backbone, _linear(value, dtype), prompt_head)

    @property
    def value_head_dim(self) -> int:
        """``2k``: the size of a preference embedding."""
        return self.value_head.out_features

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_ends: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each row's preference embedding and, with a prompt head, its scales.

        Args:
            input_ids: ``[rows, width]``, padded on either side.
            attention_mask: ``[rows, width]``.
            prompt_ends: ``[rows]``, the column of each row's last conversation token (needed with a
                prompt head).

        Returns:
            ``[rows, 2k]`` unit-length embeddings and ``[rows, k]`` softmax scales (None without a
            prompt head), in float32.
        """
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        states = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        ).last_hidden_state
        rows = torch.arange(states.shape[0], device=states.device)
        last = attention_mask.shape[1] - 1 - attention_mask.long().fliplr().argmax(dim=1)
        embeddings = F.normalize(self.value_head(states[rows, last]).float(), p=2, dim=-1)
        if self.prompt_head is None:
            return embeddings, None
        if prompt_ends is None:
            raise ValueError("a GPM with a prompt head needs each row's prompt end")
        scales = torch.softmax(self.prompt_head(states[rows, prompt_ends]).float(), dim=-1)
        return embeddings, scales


def _linear(weight: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def _read_heads(path: str) -> dict[str, torch.Tensor]:
    """The head tensors a checkpoint's safetensors hold (one file, or shards with an index).

    Raises:
        ValueError: the checkpoint has no safetensors weights.
    """
    from safetensors import safe_open
    from transformers.utils import cached_file

    def locate(name: str) -> str | None:
        return cached_file(path, name, _raise_exceptions_for_missing_entries=False)

    index = locate(SAFETENSORS_INDEX)
    if index is not None:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        files = {name: weight_map[name] for name in (VALUE_HEAD, PROMPT_HEAD) if name in weight_map}
    else:
        files = {VALUE_HEAD: SAFETENSORS, PROMPT_HEAD: SAFETENSORS}
    heads = {}
    for name, file in files.items():
        local = locate(file)
        if local is None:
            raise ValueError(f"{path}: no {file}: GPM checkpoints are read from safetensors")
        with safe_open(local, framework="pt") as weights:
            if name in weights.keys():  # safe_open is not a mapping
                heads[name] = weights.get_tensor(name)
    return heads


def render(tokenizer: Any, conversation: Messages) -> str:
    """A conversation as the reference's ranking reads it: the chat template's text (no generation
    prompt) with the BOS token removed; it is tokenized without special tokens."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    return text.replace(tokenizer.bos_token, "") if tokenizer.bos_token else text


def preference_table(
    embeddings: torch.Tensor, scales: torch.Tensor | None, tau: float
) -> torch.Tensor:
    """``[K, K]`` scores ``s(i ≻ j)`` of K answers to one conversation (see the module docstring);
    row i uses answer i's scales, and the diagonal is 0 (no answer is scored against itself)."""
    even, odd = embeddings[:, 0::2], embeddings[:, 1::2]
    weights = torch.ones_like(even) if scales is None else scales
    table = (weights * even) @ odd.T - (weights * odd) @ even.T
    return table.fill_diagonal_(0.0) / tau


def build_tiny_gpm(
    directory: Path,
    tokenizer: Any,
    hidden_size: int,
    num_layers: int,
    seed: int,
    value_head_dim: int = 8,
    prompt_head: bool = True,
) -> None:
    """Save a random GPM of the published layout next to ``tokenizer`` (already in ``directory``): a
    Gemma backbone saved as its causal LM with tied embeddings, as GPM-Gemma-2B's, and the heads."""
    from safetensors.torch import load_file, save_file
    from transformers import GemmaConfig, GemmaForCausalLM

    config = GemmaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    GemmaForCausalLM(config).save_pretrained(directory)
    heads = {VALUE_HEAD: nn.Linear(hidden_size, value_head_dim, bias=False).weight}
    if prompt_head:
        heads[PROMPT_HEAD] = nn.Linear(hidden_size, value_head_dim // 2, bias=False).weight
    weights = load_file(directory / SAFETENSORS)
    weights.update({name: tensor.detach().clone() for name, tensor in heads.items()})
    save_file(weights, directory / SAFETENSORS, metadata={"format": "pt"})
