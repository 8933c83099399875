"""The one JSON form that audit hashes and signatures are computed on."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_json", "normalise"]


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def normalise(extra: dict[str, Any] | None) -> dict[str, Any]:
    """What the JSON column gives back: the hash is computed on the stored value."""
    return json.loads(canonical_json(extra or {}))
