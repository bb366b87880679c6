"""Every config key with its type, default and description, read from the config schema.

``moaa config --schema`` prints it, so the reference never drifts from what the loader accepts.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from moaa_ray.config.base import OPERATIONAL
from moaa_ray.config.run import MoaaConfig

SECTION = "(section)"  # the default shown for a section: its keys follow with their own


@dataclass(frozen=True)
class ConfigKey:
    """One documented key: ``generate.sampling.temperature``, ``models.<name>.path``."""

    key: str
    type: str
    default: str
    description: str
    operational: bool  # left out of fingerprints: changing it never invalidates finished results


def config_keys(
    model: type[BaseModel] = MoaaConfig, prefix: str = "", defaults: BaseModel | None = None
) -> list[ConfigKey]:
    """Every key of ``model`` and its sections, depth first in declaration order.

    ``defaults`` is the section's own default value where it has one (the judges' ``sampling``
    defaults differ from the proposers'), so each key shows the default that applies there.
    """
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section, path = _section(field.annotation)
        if defaults is not None:
            default = _show(getattr(defaults, name))
        else:
            default = "required" if field.is_required() else _show(_default(field))
        operational = (field.json_schema_extra or {}) == OPERATIONAL
        description = field.description or _first_line(section.__doc__ if section else None)
        keys.append(ConfigKey(key, _type_name(field.annotation), default, description, operational))
        if section is not None:
            own = defaults if defaults is not None else None
            value = getattr(own, name) if own is not None else _default(field)
            nested = value if isinstance(value, BaseModel) and not path else None
            keys += config_keys(section, f"{key}{path}.", nested)
    return keys


def format_reference(keys: list[ConfigKey]) -> str:
    """Per key: ``key: type = default`` (``[operational]`` where so), then its description."""
    lines = [
        "Config keys, as YAML sections or key=value overrides. [operational] keys are not part of a",
        "stage's fingerprint: changing them keeps finished results.",
        "",
    ]
    for k in keys:
        default = "" if k.default == SECTION else f" = {k.default}"
        mark = "  [operational]" if k.operational else ""
        lines += [f"{k.key}: {k.type}{default}{mark}", f"    {k.description}"]
    return "\n".join(lines)


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def _default(field: Any) -> Any:
    return None if field.is_required() else field.get_default(call_default_factory=True)


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return SECTION
    return repr(value) if isinstance(value, str) else str(value)


def _section(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The section model under a field (through Optional, list and dict) and the key path to it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args:
        section, path = _section(args[0])
        return section, ".<i>" + path
    if origin is dict and len(args) == 2:
        section, path = _section(args[1])
        return section, ".<name>" + path
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            section, path = _section(arg)
            if section is not None:
                return section, path
    return None, ""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return "section" if issubclass(annotation, BaseModel) else annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in args)
    if origin is not None:
        return (
            f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
        )
    return str(annotation).replace("typing.", "")
