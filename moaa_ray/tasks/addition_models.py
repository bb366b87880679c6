"""Tiny task models for "What is A + B?", trained offline in a few minutes on CPU.

One small Llama (0.35M parameters, a character-level tokenizer with whole-token "What is " and
" + ") first learns addition on the pretraining split with correct labels: the trunk. Each task model
is the trunk fine-tuned on the same prompts with noisy labels, correct with probability
``label_accuracy`` and otherwise with a wrong last digit. So each model knows the answer but says it only that
often when sampling: the base policy at 0.35, the proposers at 0.65, 0.6 and 0.55. Alignment has to
make the policy say what it knows, which is what SFT on MoA data and DPO are for.

Nothing here touches the evaluation, SFT or DPO prompts (:func:`moaa_ray.tasks.addition.splits`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import string
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from moaa_ray.tasks.addition import make_prompt, splits

logger = logging.getLogger(__name__)

END, USER, ASSISTANT, SYSTEM, PAD, UNK = (
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|pad|>",
    "<|unk|>",
)
WORDS = ["What is ", " + "]  # whole tokens: shorter sequences make the trunk learn 3x faster
# Role tokens; {% generation %} marks the assistant tokens so trainers mask the loss to them.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class TrainingSpec:
    """How one model is trained: from scratch (the trunk) or from the trunk with noisy labels."""

    label_accuracy: float  # share of labels that are A + B
    steps: int
    learning_rate: float
    seed: int
    batch_size: int = 128


TRUNK = TrainingSpec(label_accuracy=1.0, steps=1000, learning_rate=2e-3, seed=0)
TASK_MODELS: dict[str, TrainingSpec] = {
    "addition-base": TrainingSpec(0.35, steps=150, learning_rate=1e-3, seed=1),
    "addition-proposer-a": TrainingSpec(0.65, steps=150, learning_rate=1e-3, seed=2),
    "addition-proposer-b": TrainingSpec(0.6, steps=150, learning_rate=1e-3, seed=3),
    "addition-proposer-c": TrainingSpec(0.55, steps=150, learning_rate=1e-3, seed=4),
}


def recipe_digest(name: str) -> str:
    """A short digest of how ``name`` is trained (trunk included): a changed recipe is a new model."""
    recipe = {
        "trunk": asdict(TRUNK),
        "model": asdict(TASK_MODELS[name]) if name in TASK_MODELS else None,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]


def build_task_tokenizer(directory: Path | None = None):
    """A character-level tokenizer (printable ASCII) with role tokens and the task's chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [END, USER, ASSISTANT, SYSTEM, PAD, UNK]
    characters = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {token: index for index, token in enumerate(specials + WORDS + characters)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    pieces = "|".join(word.replace("+", r"\+") for word in WORDS)
    word_level.pre_tokenizer = pre_tokenizers.Split(Regex(rf"{pieces}|[\s\S]"), "isolated")
    word_level.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, eos_token=END, pad_token=PAD, unk_token=UNK
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [USER, ASSISTANT, SYSTEM]})
    tokenizer.chat_template = CHAT_TEMPLATE
    if directory is not None:
        tokenizer.save_pretrained(directory)
    return tokenizer


def noisy_label(a: int, b: int, label_accuracy: float, rng: random.Random) -> int:
    """A + B with probability ``label_accuracy``; otherwise A + B with another last digit.

    A slip in the last digit only is what a model can learn in a few steps (one calibrated digit),
    and its nine wrong answers rarely coincide across models, as real models' mistakes rarely do.
    """
    total = a + b
    if rng.random() < label_accuracy:
        return total
    return total - total % 10 + rng.choice([d for d in range(10) if d != total % 10])


def _new_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.convert_tokens_to_ids(USER),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(TRUNK.seed)
    return LlamaForCausalLM(config)


def _encode(tokenizer, a: int, b: int, label: int) -> tuple[list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": make_prompt(a, b)}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(f"{label}{END}", add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids


def _batch(rows: Sequence[tuple[list[int], list[int]]], pad_id: int):
    import torch

    length = max(len(p) + len(r) for p, r in rows)
    inputs = torch.full((len(rows), length), pad_id)
    labels = torch.full((len(rows), length), -100)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        ids = prompt + answer
        inputs[i, : len(ids)] = torch.tensor(ids)
        labels[i, len(prompt) : len(ids)] = torch.tensor(answer)
        attention[i, : len(ids)] = 1
    return inputs, labels, attention


def train(model, tokenizer, spec: TrainingSpec, pairs: Sequence[tuple[int, int]]) -> float:
    """Train ``model`` in place on answers to ``pairs`` labelled per ``spec``; returns the last loss."""
    import torch

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    # beta2 0.98 rather than 0.999: the trunk then learns addition at every seed tried, not at some.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.98), weight_decay=0.0
    )
    warmup = max(1, spec.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / warmup, 0.1 + 0.45 * (1 + math.cos(math.pi * step / spec.steps))
        ),
    )
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(spec.steps):
        rows = []
        for a, b in (rng.choice(pairs) for _ in range(spec.batch_size)):
            rows.append(_encode(tokenizer, a, b, noisy_label(a, b, spec.label_accuracy, rng)))
        inputs, labels, attention = _batch(rows, tokenizer.pad_token_id)
        loss = model(input_ids=inputs, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())


def _save(model, tokenizer, directory: Path, name: str, spec: TrainingSpec, seconds: float) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    card = {"task": "addition", "name": name, "training": asdict(spec), "seconds": seconds}
    (directory / "task_model.json").write_text(json.dumps(card, indent=2) + "\n")


def build_trunk(directory: Path) -> None:
    """Train the trunk on the pretraining split with correct labels and save it to ``directory``."""
    started = time.monotonic()
    tokenizer = build_task_tokenizer()
    model = _new_model(tokenizer)
    loss = train(model, tokenizer, TRUNK, splits()["pretrain"])
    seconds = round(time.monotonic() - started, 1)
    logger.info("trained the addition trunk in %.0f s (last loss %.3f)", seconds, loss)
    _save(model, tokenizer, directory, "addition-trunk", TRUNK, seconds)


def build_task_model(name: str, trunk: Path, directory: Path) -> None:
    """Fine-tune the trunk with the named model's label accuracy and save it to ``directory``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = TASK_MODELS[name]
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(trunk)
    model = AutoModelForCausalLM.from_pretrained(trunk)
    loss = train(model, tokenizer, spec, splits()["pretrain"])
    seconds = round(time.monotonic() - started, 1)
    logger.info("trained %s in %.0f s (last loss %.3f)", name, seconds, loss)
    _save(model, tokenizer, directory, name, spec, seconds)
