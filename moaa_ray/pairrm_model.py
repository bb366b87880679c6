"""PairRM's published checkpoint layout (``llm-blender/PairRM-hf``), without the ``llm-blender`` package.

PairRM (Jiang et al., LLM-Blender, arXiv 2306.02561) reads one sequence ``[CLS] <|source|> source [SEP]
[CLS] <|candidate1|> answer 1 [SEP] [CLS] <|candidate2|> answer 2 [SEP]``; a head scores the
``<|source|>`` state concatenated with each candidate's marker state, and the logit that candidate 1
beats candidate 2 is the difference of the two scores. Here: the module (config ``architectures:
[DebertaV2PairRM]``, weights ``pretrained_model.*`` and ``head_layer.*``), its input format, the
source and candidate texts as llm-blender and SPPO's scripts write them, and tiny random checkpoints
of the same layout for tests. The engine is :mod:`moaa_ray.engines.pairrm`.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.models.deberta_v2.modeling_deberta_v2 import (
    DebertaV2Model,
    DebertaV2PreTrainedModel,
)

from moaa_ray.core.conversations import Messages, conform

SOURCE, CANDIDATE1, CANDIDATE2 = "<|source|>", "<|candidate1|>", "<|candidate2|>"
CANDIDATE = "<|candidate|>"  # in the vocabulary of the published checkpoint; unused at inference
MARKERS = (SOURCE, CANDIDATE1, CANDIDATE2, CANDIDATE)
# llm-blender's PairRM budget: 1224 source tokens, 412 per candidate plus what the source leaves.
SOURCE_MAX_LENGTH, CANDIDATE_MAX_LENGTH = 1224, 412


class DebertaV2PairRM(DebertaV2PreTrainedModel):
    """The published PairRM module: a DeBERTa-v2 encoder and a two-layer head over marker states.

    Its config carries ``n_tasks``, ``drop_out`` and the marker token ids ``source_prefix_id``,
    ``cand1_prefix_id`` and ``cand2_prefix_id``; attribute names match the checkpoint's weights.
    """

    def __init__(self, config: Any):
        super().__init__(config)
        self.pretrained_model = DebertaV2Model(config)
        hidden = config.hidden_size
        self.head_layer = nn.Sequential(
            nn.Dropout(config.drop_out),
            nn.Linear(2 * hidden, hidden),
            nn.Tanh(),
            nn.Dropout(config.drop_out),
            nn.Linear(hidden, config.n_tasks),
        )
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch]`` logits that candidate 1 beats candidate 2 (mean over the head's tasks).

        Raises:
            ValueError: a row does not hold each marker token exactly once.
        """
        states = self.pretrained_model(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        config = self.config

        def at(token_id: int) -> torch.Tensor:
            found = input_ids == token_id
            if not bool((found.sum(dim=1) == 1).all()):
                raise ValueError(f"every row needs marker token {token_id} exactly once")
            return states[found]  # row order: one state per row

        source = at(config.source_prefix_id)
        first = self.head_layer(torch.cat([source, at(config.cand1_prefix_id)], dim=-1))
        second = self.head_layer(torch.cat([source, at(config.cand2_prefix_id)], dim=-1))
        return (first - second).mean(dim=-1)


# llm-blender's Blender.compare_conversations (llm_blender/blender/blender.py): the instruction it
# puts before a conversation's turns, spelled as there; RankerDataset (blender_utils.py) joins the
# two with nothing between them.
CONVERSATION_INSTRUCTION = (
    "Finish the following coversation in each i-th turn by filling in <Response i> with your "
    "response."
)


def comparison_texts(conversation: Messages, first: str, second: str) -> tuple[str, str, str]:
    """(source, candidate 1, candidate 2) of two answers to a conversation, as llm-blender gives them.

    A one-turn request is the source as is and each answer a candidate (``Blender.rank`` and
    ``compare``, as SPPO's and Snorkel's rankings call them). A longer conversation is laid out as
    ``Blender.compare_conversations`` does: the source is its instruction then every user turn as
    ``USER: text\\nAssistant: <Response i>``, and each candidate is every assistant turn, the earlier
    ones and the answer, as ``<Response i>: text`` lines, so PairRM cuts a long history from the
    candidates' end. A system message, which llm-blender has no place for, opens the first user turn.

    Raises:
        ValueError: the conversation is not user turns alternating with assistant turns, ending
            with a user turn.
    """
    turns = conform(conversation, accepts_system=False)
    roles = [m["role"] for m in turns]
    if roles != ["user", "assistant"] * (len(turns) // 2) + ["user"]:
        raise ValueError(
            f"PairRM compares answers to user/assistant turns ending with a user's; got {roles}"
        )
    if len(turns) == 1:
        return turns[0]["content"], first, second
    requests = [m["content"] for m in turns[::2]]
    earlier = [m["content"] for m in turns[1::2]]
    source = CONVERSATION_INSTRUCTION + "\n".join(
        f"USER: {text}\nAssistant: <Response {i}>" for i, text in enumerate(requests, 1)
    )

    def candidate(answer: str) -> str:
        return "\n".join(f"<Response {i}>: {text}" for i, text in enumerate([*earlier, answer], 1))

    return source, candidate(first), candidate(second)


# What SPPO's scripts/rank.py (apply_template) writes as the answer before cutting the text there.
_SPPO_PLACEHOLDER = "None"


def chat_template_source(tokenizer: Any, conversation: Messages, accepts_system: bool) -> str:
    """The source as SPPO's ``scripts/rank.py`` gives PairRM the prompt (``apply_template``): the
    conversation rendered by the policy's chat template with the answer ``"None"``, cut before the
    first ``"None"``, so the text ends where the policy's answer begins (Mistral: after
    ``[/INST]``). As there, a ``"None"`` inside the conversation cuts it there.

    Args:
        tokenizer: the policy's tokenizer, with its chat template.
        conversation: the turns before the answers.
        accepts_system: whether the template takes a system message (else it opens the first
            user turn).
    """
    answered = [*conversation, {"role": "assistant", "content": _SPPO_PLACEHOLDER}]
    text = tokenizer.apply_chat_template(
        conform(answered, accepts_system=accepts_system), tokenize=False
    )
    return text.split(_SPPO_PLACEHOLDER)[0]


def _without_markers(text: str) -> str:
    # A marker inside a text would be read as a second marker token.
    for marker in MARKERS:
        text = text.replace(marker, " ")
    return text


def encode_pair(
    tokenizer: Any,
    source: str,
    first: str,
    second: str,
    source_max_length: int = SOURCE_MAX_LENGTH,
    candidate_max_length: int = CANDIDATE_MAX_LENGTH,
) -> list[int]:
    """Token ids of one comparison in PairRM's input format (the PairRM-hf model card's).

    The source keeps at most ``source_max_length`` tokens; each candidate gets half of what the
    source leaves of ``source_max_length + 2 * candidate_max_length``. Every part is cut at its
    end and keeps its ``[CLS]``, marker and ``[SEP]``.
    """
    source_ids = tokenizer.encode(
        SOURCE + _without_markers(source), truncation=True, max_length=source_max_length
    )
    budget = (source_max_length + 2 * candidate_max_length - len(source_ids)) // 2
    candidates = [
        tokenizer.encode(marker + _without_markers(text), truncation=True, max_length=budget)
        for marker, text in ((CANDIDATE1, first), (CANDIDATE2, second))
    ]
    return source_ids + candidates[0] + candidates[1]


def build_tiny_checkpoint(directory: Path, hidden_size: int, num_layers: int, seed: int) -> None:
    """Save a random PairRM of the published layout: DeBERTa-v3-style relative attention, a
    character Unigram tokenizer with ``[CLS]``/``[SEP]`` and the marker tokens, the head."""
    from transformers import DebertaV2Config, DebertaV2Tokenizer

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    characters = [c for c in string.printable if not c.isspace()]
    vocab = [(token, 0.0) for token in specials] + [("▁", -2.0)]
    vocab += [(piece, -3.0) for c in characters for piece in (c, f"▁{c}")]
    tokenizer = DebertaV2Tokenizer(vocab=vocab)
    tokenizer.add_tokens(list(MARKERS))
    tokenizer.save_pretrained(directory)
    marker_ids = {m: tokenizer.convert_tokens_to_ids(m) for m in MARKERS}
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=1,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        n_tasks=1,
        drop_out=0.05,
        source_prefix_id=marker_ids[SOURCE],
        cand1_prefix_id=marker_ids[CANDIDATE1],
        cand2_prefix_id=marker_ids[CANDIDATE2],
        cand_prefix_id=marker_ids[CANDIDATE],
    )
    torch.manual_seed(seed)
    DebertaV2PairRM(config).save_pretrained(directory)
