"""What every part of the contract shares: the data it writes, the
``make_store`` factory it is given, and :class:`ContractBase`, which opens
the store each test uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from ..store.base import BaseStore

__all__ = ["CREDS", "HOSTILE_IDS", "PRIMITIVE_TIMEOUT", "ContractBase", "StoreFactory"]

#: What a ``make_store`` fixture returns: ``make_store(**options)`` builds a
#: store (not yet opened) on the test's one database.
StoreFactory = Callable[..., BaseStore]

#: A creds document as a Baileys-style client writes it: nested objects,
#: bytes, non-ASCII text, ``None`` and an empty list.
CREDS: dict[str, Any] = {
    "noiseKey": {"private": b"\x01" * 32, "public": b"\x02" * 32},
    "signedIdentityKey": {"private": bytes(range(32)), "public": bytes(range(32, 64))},
    "signedPreKey": {
        "keyPair": {"private": b"\x03" * 32, "public": b"\x04" * 32},
        "signature": b"\x05" * 64,
        "keyId": 1,
    },
    "registrationId": 4242,
    "advSecretKey": "c2VjcmV0",
    "nextPreKeyId": 813,
    "firstUnuploadedPreKeyId": 813,
    "me": {"id": "15551234567:1@s.whatsapp.net", "name": "Bot ✓"},
    "accountSyncCounter": 0,
    "registered": True,
    "platform": None,
    "processedHistoryMessages": [],
}

#: Session ids, key ids and categories that a store must keep literally
#: (quotes, SQL, format strings, separators, non-ASCII, 255 characters).
HOSTILE_IDS = [
    "'; DROP TABLE wa_keys; --",
    'quote"double',
    "percent %s %(x)s {}",
    "emoji 🔑 ünïcödé 中文",
    "sender::key/with:colons",
    "a" * 255,
    " leading and trailing ",
    "back\\slash",
]

#: The timeout the primitive-level tests give each attempt, in seconds.
PRIMITIVE_TIMEOUT = 5.0


class ContractBase:
    """One part of the contract: its tests are coroutines marked ``asyncio``,
    and its ``store`` fixture is ``make_store()``, opened for the test.

    Needs a ``make_store`` fixture (see :mod:`wa_session_store.testing`).
    """

    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def store(self, make_store: StoreFactory) -> AsyncIterator[BaseStore]:
        """``make_store()``, open for the test, closed after it."""
        async with make_store() as opened:
            yield opened
