"""The creds documents several test modules save (the contract suite keeps its fuller one)."""

from __future__ import annotations

from typing import Any

#: A minimal creds document: the fields the default ``urgent`` predicate and
#: the throttle tests look at (``nextPreKeyId``, ``accountSyncCounter``) and
#: one Buffer pair, so the codec's bytes round trip is exercised too. Copy it
#: before changing it (``dict(CREDS)``, ``{**CREDS, ...}``).
CREDS: dict[str, Any] = {
    "registrationId": 7,
    "noiseKey": {"private": b"\x01" * 32, "public": b"\x02" * 32},
    "nextPreKeyId": 1,
    "firstUnuploadedPreKeyId": 1,
    "accountSyncCounter": 0,
}
