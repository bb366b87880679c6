"""Fingerprints: everything that determines a stage's outputs, as flat ``dotted.key -> value`` data.

A stage records its fingerprint in the manifest. A rerun with the same fingerprint resumes; a rerun
with another one is refused, naming the keys that changed, so a result is never reused for a config
that did not produce it. Config keys marked operational (replicas, batch sizes, timeouts) change how a
stage runs, not what it writes, and are left out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moaa_ray.callables import source_digest
from moaa_ray.config import ENGINE_SETTINGS
from moaa_ray.redact import redact

_MISSING = object()


def config_identity(section: BaseModel, prefix: str) -> dict[str, Any]:
    """A config section's keys that shape results, flattened to ``prefix.key`` (lists by index).

    Args:
        section: a config section (pydantic model).
        prefix: the section's dotted key, e.g. ``generate`` or ``models.llama-a``.

    Returns:
        ``{dotted key: JSON value}`` without the fields marked operational; credentials are
        masked (a new API key is no new result).
    """
    flat: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("operational"):
            continue
        flat.update(_flatten(getattr(section, name), f"{prefix}.{name}"))
    return {key: redact(value, key) for key, value in flat.items()}


def _flatten(value: Any, key: str) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return config_identity(value, key)
    if isinstance(value, list | tuple) and any(isinstance(v, BaseModel) for v in value):
        flat: dict[str, Any] = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{key}.{index}"))
        return flat
    return {key: json.loads(json.dumps(value, default=str))}


def digest_path(path: str | Path, pattern: str = "**/*") -> str:
    """A cheap content digest of a file or directory: each file's relative name, size and mtime.

    Used for artifacts a stage reads (Parquet shards, model directories): a grown dataset or a
    retrained model gets another digest without hashing gigabytes of weights. A path that does not
    exist (a hub name, ``tiny:...``) digests as its name.

    Args:
        path: the file or directory.
        pattern: which files of a directory count (e.g. ``part-*.parquet``: the rows, not the
            rejects file a rerun rewrites).
    """
    root = Path(path)
    if not root.exists():
        return f"name:{path}"
    files = [root] if root.is_file() else sorted(p for p in root.glob(pattern) if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        if file.name.startswith("."):  # temporary files of atomic writes
            continue
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """A short stable hash of a fingerprint."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose value differs, or that only one of the two fingerprints has, sorted."""
    keys = set(recorded) | set(current)
    return sorted(k for k in keys if recorded.get(k, _MISSING) != current.get(k, _MISSING))


def describe_change(recorded: dict[str, Any], current: dict[str, Any], limit: int = 8) -> str:
    """``key: old -> new`` lines for the changed keys (values shortened), at most ``limit``."""
    lines = []
    # Section keys first: they say what the user changed; model keys follow from them.
    keys = sorted(changed_keys(recorded, current), key=lambda k: (k.startswith("models."), k))
    for key in keys[:limit]:
        old, new = recorded.get(key, "(absent)"), current.get(key, "(absent)")
        lines.append(f"  {key}: {_short(old)} -> {_short(new)}")
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more")
    return "\n".join(lines)


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def models_identity(models: dict[str, Any], names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The result-shaping settings of the named models, plus a digest of each local model folder.

    Args:
        models: ``config.models``.
        names: the models a stage uses.

    Returns:
        Flat ``models.<name>.<key>`` entries; ``models.<name>.content`` digests a local path, so a
        model retrained in place under the same path counts as another model, and a function
        engine's module file, so an edited function counts as another model too.
    """
    flat: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        engine = models[name].engine
        identity = {  # an engine's own settings mean nothing to the other engines
            key: value
            for key, value in config_identity(models[name], f"models.{name}").items()
            if ENGINE_SETTINGS.get(key.split(".")[2], engine) == engine
        }
        flat.update(identity)
        flat[f"models.{name}.content"] = _content_digest(models[name])
    return flat


def _content_digest(model: Any) -> str:
    """What a model's outputs come from: its function's source file, or its local folder."""
    if model.engine == "function":
        return source_digest(model.path)
    return digest_path(Path(model.path).expanduser())
