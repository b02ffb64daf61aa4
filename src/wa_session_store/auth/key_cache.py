"""The key values AuthKeys holds, and its read cache bounded by bytes.

A value is snapshotted when it is written (:func:`freeze`): immutable values
as they are, containers as their encoded BufferJSON, decoded afresh for every
reader, so no caller can change another's copy and the cache knows each
entry's size. No I/O here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..store.codec import decode_value, encode_value

__all__ = ["ABSENT", "Cache", "Entry", "Key", "freeze", "grouped"]

Key = tuple[str, str]
# Bookkeeping bytes counted per cached entry besides its value.
_OVERHEAD = 64
_IMMUTABLE = (bytes, str, int, float, bool, type(None))


class Entry:
    """One key's value as this module keeps it: immutable values as they are
    (the hot path: Signal records are bytes), containers as their encoded
    BufferJSON, decoded afresh for every reader so no caller can change
    another's copy. ``None`` is an absent (or deleted) key."""

    __slots__ = ("blob", "size", "value")

    def __init__(self, value: object, blob: bytes | None, size: int) -> None:
        self.value = value
        self.blob = blob
        self.size = size

    def same(self, other: Entry) -> bool:
        return self.blob == other.blob and (self.blob is not None or self.value == other.value)

    def read(self) -> Any:
        if self.blob is None:
            return self.value
        return decode_value(self.blob, what="a cached key value")


ABSENT = Entry(None, None, _OVERHEAD)


def freeze(value: object, category: str, key_id: str, max_size: int) -> Entry:
    """Validate ``value`` as the store would, and snapshot it."""
    if value is None:
        return ABSENT
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if type(value) is bytes and len(value) * 4 // 3 + 64 < max_size:
        return Entry(value, None, len(value) + _OVERHEAD)
    blob = encode_value(
        value, what=lambda: f"value of {category} key {key_id!r}", max_size=max_size
    )
    if isinstance(value, _IMMUTABLE):
        return Entry(value, None, len(blob) + _OVERHEAD)
    return Entry(None, blob, len(blob) + _OVERHEAD)


class Cache:
    """A least-recently-used map of entries, bounded by the bytes they hold."""

    __slots__ = ("budget", "bytes", "entries")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self.entries: OrderedDict[Key, Entry] = OrderedDict()

    def get(self, key: Key) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: Key, entry: Entry) -> None:
        self.discard(key)
        if entry.size > self.budget:
            return
        self.entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.budget:
            _, evicted = self.entries.popitem(last=False)
            self.bytes -= evicted.size

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.budget

    def discard(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


def grouped(batch: Mapping[Key, Entry]) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {}
    for (category, key_id), entry in batch.items():
        data.setdefault(category, {})[key_id] = entry.read()
    return data
