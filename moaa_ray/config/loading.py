"""Loading a config: YAML files plus ``key=value`` overrides, validated against the schema.

Unknown keys, wrong types and references to models that are not defined are errors that name the key
and the file (or the override) they came from. Relative paths resolve against the working directory,
which under ``ray job submit --working-dir .`` is the uploaded project.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from moaa_ray.config.models import PAIRWISE_ENGINES, ModelConfig
from moaa_ray.config.run import MoaaConfig


class ConfigError(ValueError):
    """Config problems, one per line, each worded as ``<source>: <dotted.key>: <what is wrong>``."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that reads ``1e-2`` as a number and notes every repeated mapping key.

    YAML 1.1 (PyYAML) reads an exponent without a dot (``8e-6``) as a string, where YAML 1.2 and
    every reader of a config mean a number; a repeated key would silently keep its last value.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []  # (line, problem)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_lines:
                first = first_lines[key_node.value]
                self.duplicates.append(
                    (
                        line,
                        f"duplicate key {key_node.value!r} (first at line {first}); merge the "
                        "two, or YAML keeps only the last",
                    )
                )
            first_lines.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML the way configs are read: ``1e-2`` is a number, a repeated key is an error.

    Args:
        text: the YAML text.
        source: the file or override it came from, for messages.

    Raises:
        ConfigError: ``<source>:<line>: duplicate key ...`` for every repeated key, or the parse error.
    """
    loader = _ConfigLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc}") from exc
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            *(f"{source}:{line}: {problem}" for line, problem in sorted(loader.duplicates))
        )
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> MoaaConfig:
    """Load a YAML config, apply ``dotted.key=value`` overrides and validate it.

    Args:
        path: the YAML file.
        overrides: e.g. ``["generate.sampling.temperature=0.5", "models.a.engine=vllm"]``; values are
            parsed as YAML.

    Returns:
        The validated config.

    Raises:
        ConfigError: listing every problem found, each naming the key and the file or override.
    """
    check = check_config(path, overrides)
    if check.config is None or check.problems:
        raise ConfigError(*check.problems)
    return check.config


@dataclass(frozen=True)
class ConfigCheck:
    """A config as loaded, every problem found in it, and where each key came from."""

    path: Path
    config: MoaaConfig | None  # None when the file cannot be read or the schema rejects it
    problems: list[str]
    sources: dict[str, str]  # dotted key -> the override that set it

    def source(self, key: str) -> str:
        """The override that set ``key`` (or a section around it), else the config file."""
        return _source(key, self.sources, self.path)


def check_config(path: str | Path, overrides: list[str] | None = None) -> ConfigCheck:
    """Load and validate a config, collecting every problem instead of stopping at the first.

    Schema problems (unknown keys, types, bounds) are all listed; the cross-checks that need a valid
    schema (model references, log-prob roles, the reward model's engine) run when it has none.
    """
    path = Path(path)
    sources: dict[str, str] = {}
    try:
        raw = read_yaml(path.read_text(), str(path)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        for override in overrides or []:
            sources[_apply_override(raw, override)] = f"override {override!r}"
    except OSError as exc:
        return ConfigCheck(path, None, [f"{path}: cannot read config: {exc}"], sources)
    except ConfigError as exc:
        return ConfigCheck(path, None, exc.problems, sources)
    try:
        config = MoaaConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_schema_problem(error, raw, sources, path) for error in exc.errors()]
        return ConfigCheck(path, None, problems, sources)
    check = ConfigCheck(path, config, [], sources)
    check.problems.extend(_reference_problems(config, check))
    check.problems.extend(_reward_model_problems(config, check))
    return check


def _schema_problem(error: Any, raw: dict, sources: dict[str, str], path: Path) -> str:
    key = ".".join(str(part) for part in error["loc"])
    return f"{_source(key, sources, path)}: {key}: {_describe(error, raw)}"


def _reference_problems(config: MoaaConfig, check: ConfigCheck) -> list[str]:
    """Model names that are not defined, and engines without log-probabilities asked for them."""
    problems = [
        f"{check.source(key)}: {key}: model {name!r} is not defined under 'models' "
        f"(defined: {sorted(config.models)})"
        for key, name in config.model_references()
        if name not in config.models
    ]
    for mode_key, key, name in config.logprob_references():
        engine = config.models[name].engine if name in config.models else ""
        if engine in _NO_LOGPROBS:
            problems.append(
                f"{check.source(mode_key)}: {mode_key}: {key} is model {name!r}, a {engine} "
                f"engine: {_NO_LOGPROBS[engine]}; set {mode_key.rpartition('.')[2]}: text"
            )
    return problems


def _reward_model_problems(config: MoaaConfig, check: ConfigCheck) -> list[str]:
    """A reward model whose engine cannot give ``preferences.reward``: a pairwise_ranker that is no
    pairwise engine, a scalar_rm that is one, a likelihood that is no hf causal LM."""
    prefs = config.preferences
    name = prefs.reward_model if prefs else None
    if prefs is None or name not in config.models:  # none, or undefined: a problem of its own
        return []
    engine = config.models[name].engine
    pairwise = engine in PAIRWISE_ENGINES
    if prefs.reward == "pairwise_ranker" and not pairwise:
        problem = (
            f"reward pairwise_ranker compares two answers with a pairwise engine "
            f"({', '.join(sorted(PAIRWISE_ENGINES))}); model {name!r} has engine {engine!r}"
        )
    elif prefs.reward == "scalar_rm" and pairwise:
        problem = (
            f"model {name!r} is a {engine} engine: it compares two answers; "
            "set reward: pairwise_ranker"
        )
    elif prefs.reward == "likelihood" and engine != "hf":
        problem = (
            "reward likelihood reads token log-probabilities from an hf causal LM; "
            f"model {name!r} has engine {engine!r}"
        )
    else:
        return []
    # Named by where the clash came from: an override of either side, else the config file.
    keys = ("preferences.reward_model", "preferences.reward", f"models.{name}.engine")
    overrides = [check.source(k) for k in keys if check.source(k) != str(check.path)]
    return [f"{(overrides or [str(check.path)])[0]}: preferences.reward_model: {problem}"]


# Engines that cannot give log-probabilities at the verdict or grade position, and why.
_NO_LOGPROBS = {
    "function": "it writes text and has no log-probabilities",
    "openai_http": "a chat endpoint cannot continue an assistant turn that begins 'Verdict: ' "
    "or 'Rating: [[', so its log-probabilities would be of the wrong position",
}


def _source(key: str, sources: dict[str, str], path: Path) -> str:
    for override_key, source in sources.items():
        related = key.startswith(override_key + ".") or override_key.startswith(key + ".")
        if key == override_key or related:
            return source
    return str(path)


def _describe(error: Any, raw: dict) -> str:
    if error["type"] == "extra_forbidden":
        siblings = MoaaConfig
        for part in error["loc"][:-1]:
            siblings = _field_model(siblings, part)
        hint = ""
        if siblings is not None:
            close = difflib.get_close_matches(str(error["loc"][-1]), siblings.model_fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key{hint}"
    if error["type"] == "value_error":  # our own validators say what is wrong
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']} (got {error.get('input')!r})"


def _field_model(model: Any, part: Any) -> Any:
    if model is None or isinstance(part, int):
        return model
    field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
    if field is None:  # a dict key (e.g. a model name) or list index
        return ModelConfig if model is MoaaConfig else model
    annotation = field.annotation
    for candidate in getattr(annotation, "__args__", ()) + (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in getattr(candidate, "__args__", ()):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _apply_override(raw: dict, override: str) -> str:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key=value")
    value = read_yaml(text, f"override {override!r}") if text else ""
    node: Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(part, node, override)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    if isinstance(node, list):
        node[_list_index(parts[-1], node, override)] = value
    else:
        node[parts[-1]] = value
    return key


def _list_index(part: str, node: list, override: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"override {override!r}: {part} is not an index of a {len(node)}-item list"
        )
    return int(part)


def dump_config(config: MoaaConfig) -> dict[str, Any]:
    """The resolved config as plain data (for manifests). Holds no secrets: keys live in env vars."""
    return config.model_dump(mode="json")
