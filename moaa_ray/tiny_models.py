"""Tiny random-init models and a tokenizer, built offline for the demo, tests and benchmarks.

A config names them as ``tiny:<name>`` (e.g. ``tiny:llama-a``); :func:`resolve_model_path` turns that
into a local directory, building it on first use. Every model has head_dim 64 so vLLM's CPU build runs it.
The ``addition-*`` models are trained, not random: task models for "What is A + B?"
(:mod:`moaa_ray.tasks.addition_models`), about 2 minutes for all of them on 2 cores.
Builds are deterministic (fixed seeds, BPE trained on text the package ships), atomic (a directory is
renamed into place) and serialised by a file lock, so concurrent actors on one node build each model once
(:mod:`moaa_ray.build_cache`). Which names exist is :mod:`moaa_ray.tiny_catalog`'s table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moaa_ray import real_models
from moaa_ray.build_cache import build_once, default_cache_dir
from moaa_ray.tasks.addition_models import build_task_model, build_trunk, recipe_digest
from moaa_ray.tiny_catalog import (
    ADDITION_MODELS,
    ADDITION_TRUNK,
    KNOWN_MODELS,
    PAIRWISE_RANKERS,
    PREFERENCE_MODELS,
    TINY_MODELS,
    TINY_PREFIX,
    TinySpec,
)

BUILD_VERSION = "v2"  # v2: verdict words are single tokens (" A", " B", " tie")
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# ChatML; {% generation %} marks assistant tokens so trainers can mask the loss to them.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# Gemma-2's rules: no system role, strict user/model alternation ("model" is the assistant).
GEMMA_STYLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Mistral's rules: an optional system message (put before the first user turn), then strict
# user/assistant alternation; no generation prompt, the answer follows [/INST].
MISTRAL_STYLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% set offset = 1 if messages[0]['role'] == 'system' else 0 %}"
    "{% for message in messages[offset:] %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' and loop.first and offset == 1 %}"
    "{{ '[INST] ' + messages[0]['content'] + '\n\n' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)


@dataclass(frozen=True)
class ChatFormat:
    """A model family's chat template and the special tokens it is written with."""

    template: str
    bos_token: str
    eos_token: str
    extra_special_tokens: tuple[str, ...] = ()


CHAT_FORMATS = {
    "chatml": ChatFormat(CHATML_TEMPLATE, "<|im_start|>", "<|im_end|>"),
    "gemma": ChatFormat(
        GEMMA_STYLE_TEMPLATE,
        "<bos>",
        "<end_of_turn>",
        ("<bos>", "<start_of_turn>", "<end_of_turn>"),
    ),
    "mistral": ChatFormat(
        MISTRAL_STYLE_TEMPLATE, "<s>", "</s>", ("<s>", "</s>", "[INST]", "[/INST]")
    ),
}


def is_tiny(model_path: str) -> bool:
    """Whether a config's model path names a tiny offline model."""
    return model_path.startswith(TINY_PREFIX)


def resolve_model_path(model_path: str, cache_dir: Path | None = None) -> str:
    """Return a loadable path: tiny and real models are built (once) and their directory returned.

    Args:
        model_path: ``tiny:<name>``, ``real:<name>`` (:mod:`moaa_ray.real_models`), a local
            directory, or a hub name.
        cache_dir: where built models live; defaults to :func:`default_cache_dir`.

    Returns:
        The local directory of a tiny or real model, or ``model_path`` unchanged.
    """
    if model_path.startswith(real_models.REAL_PREFIX):
        return real_models.resolve_real_model(model_path, cache_dir or default_cache_dir())
    if not is_tiny(model_path):
        return model_path
    name = model_path[len(TINY_PREFIX) :]
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(KNOWN_MODELS)}")
    root = (cache_dir or default_cache_dir()) / "tiny-models" / BUILD_VERSION
    if name in ADDITION_MODELS:
        # Named by their training recipe, so a changed recipe never reuses an older build.
        trunk = build_once(root / f"{ADDITION_TRUNK}-{recipe_digest(ADDITION_TRUNK)}", build_trunk)
        target = root / f"{name}-{recipe_digest(name)}"
        return str(build_once(target, lambda tmp: build_task_model(name, trunk, tmp)))
    if name in PAIRWISE_RANKERS:
        from moaa_ray.pairrm_model import build_tiny_checkpoint  # torch, only to build it

        return str(build_once(root / name, lambda tmp: build_tiny_checkpoint(tmp, 64, 2, seed=9)))
    if name in PREFERENCE_MODELS:
        from moaa_ray.gpm_model import build_tiny_gpm  # torch, only to build it

        def build(tmp: Path) -> None:  # value_head_dim 8 and a prompt head on a Gemma backbone
            build_tiny_gpm(tmp, build_tokenizer(tmp, "gemma"), 64, 2, seed=10)

        return str(build_once(root / name, build))
    return str(build_once(root / name, lambda tmp: build_model(TINY_MODELS[name], tmp)))


def _training_text() -> list[str]:
    lines = []
    for name in ("demo_prompts.jsonl", "demo_conversations.jsonl"):
        for line in resources.files("moaa_ray.data").joinpath(name).read_text().splitlines():
            row = json.loads(line)
            lines.append(row.get("prompt", ""))
            lines.extend(m["content"] for m in row.get("messages", []))
    lines += ["system", "user", "assistant"]
    # Often enough that " A", " B" and " tie" become tokens, as in real vocabularies: a logprob
    # verdict then compares one token with one token, not " A" with " " followed by "B".
    lines += ["Verdict: A", "Verdict: B", "Verdict: tie"] * 50
    lines += [f"Rating: [[{i}]]" for i in range(1, 11)]
    return lines


def build_tokenizer(directory: Path, chat_format: str = "chatml"):
    """Train a byte-level BPE tokenizer on the shipped text and save it with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fmt = CHAT_FORMATS[chat_format]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS + list(fmt.extra_special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=fmt.bos_token,
        eos_token=fmt.eos_token,
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = fmt.template
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_model(spec: TinySpec, directory: Path) -> None:
    """Write a random-init model of ``spec`` and its tokenizer to ``directory``."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        LlamaConfig,
        Qwen2Config,
    )

    tokenizer = build_tokenizer(directory, spec.chat_format)
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[spec.architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 2,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.hidden_size // 64,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        num_labels=1,
    )
    torch.manual_seed(spec.seed)
    model_class = (
        AutoModelForSequenceClassification if spec.task == "reward" else AutoModelForCausalLM
    )
    model = model_class.from_config(config, dtype=torch.float32)
    if spec.task == "causal_lm":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
