"""Turning `ml_collections` config sections into validated dataclasses, with errors naming the field."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(section: Any) -> dict[str, Any]:
    if section is None:
        return {}
    if hasattr(section, "to_dict"):
        return section.to_dict()
    return dict(section)


def dataclass_from(section: Any, cls: type[T], name: str, **overrides: Any) -> T:
    """`cls(**section, **overrides)`; unknown fields and invalid values fail naming `config.<name>.<field>`."""
    values = {**to_dict(section), **overrides}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config.{name} has unknown field(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.{name}: {e}") from None


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def set_fields(config: Any, overrides: dict[str, Any]) -> Any:
    """Sets dotted fields (`"skills.backend": "oracle"`) on a config in place; returns it."""
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return config
