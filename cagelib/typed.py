"""A settings dataclass from a JSON object (a saved ``config.json``, a preset's table): one rule for every class.

``from_mapping(cls, d)`` refuses keys that are not fields of ``cls`` (naming them and the class) and builds
``cls(**d)``; the class's own ``__post_init__`` checks the values (tuples from JSON lists included).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping


def from_mapping(cls: type, d: Mapping[str, Any]):
    """``cls(**d)`` for a dataclass ``cls``; a ``ValueError`` naming the unknown keys."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**d)
