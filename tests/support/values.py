"""What the codec's values read back as, for tests comparing a round trip."""

from __future__ import annotations

from typing import Any


def read_back(value: Any) -> Any:
    """What an accepted value reads back as: tuples as lists, bytes-like objects as bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return {k: read_back(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [read_back(v) for v in value]
    return value
