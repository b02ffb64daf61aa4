"""The demo's simulated bot: a WhatsApp client's side of ``wa-session-store demo``.

:class:`_Bot` holds creds shaped like Baileys' ``AuthenticationCreds``, makes
the pre-key upload, the ``creds.update`` events and the Signal key writes a
client makes, and remembers a digest of every key it wrote; :func:`_storm`
paces that traffic over the storm. :mod:`wa_session_store.cli.demo` runs it
against a store and checks the result in a new process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import time
from collections.abc import Mapping
from typing import Any

from ..auth.state import AuthState

#: Pre-keys uploaded right after pairing (Baileys' ``INITIAL_PREKEY_COUNT``).
PREKEY_COUNT = 812

_TICK = 0.02  # seconds between two slices of the storm
_REPLACE_EVERY = 250  # every n-th creds update hands over a new dict
_NESTED_EVERY = 97  # every n-th creds update changes a nested value in place
_CONTACTS = 40  # contacts with a Signal session when the storm starts
_GROUPS = 4  # groups whose sender keys are rotated
_FAKE_NUMBER = "15550001234"  # a fictional phone number (555-01xx)


class _Bot:
    """The client side: its creds, and the keys it believes are stored."""

    def __init__(self) -> None:
        self.rng = random.Random()
        self.creds = _new_creds(self.rng)
        self.updates = 0
        self.key_writes = 0
        # (category, key id) -> digest of the last value written, None if deleted.
        self.keys: dict[tuple[str, str], str | None] = {}
        self.contacts = [f"1555{n:07d}.0" for n in range(_CONTACTS)]
        self.groups = [f"1203630000000000{n:02d}@g.us" for n in range(_GROUPS)]
        self.next_consumed = 1

    def _record(self, batch: Mapping[str, Mapping[str, Any]]) -> None:
        for category, entries in batch.items():
            for key_id, value in entries.items():
                self.keys[category, key_id] = None if value is None else _digest(value)

    def upload_prekeys(self) -> dict[str, dict[str, Any]]:
        """812 pre-keys from ``nextPreKeyId`` on; moves the counters past them."""
        first = int(self.creds["nextPreKeyId"])
        batch = {
            "pre-key": {
                str(key_id): {"private": os.urandom(32), "public": os.urandom(32)}
                for key_id in range(first, first + PREKEY_COUNT)
            }
        }
        self._record(batch)
        self.creds["nextPreKeyId"] = first + PREKEY_COUNT
        self.creds["firstUnuploadedPreKeyId"] = first + PREKEY_COUNT
        return batch

    def update_creds(self, auth: AuthState) -> None:
        """One ``creds.update`` event: in place, or now and then a new dict."""
        self.updates += 1
        if self.updates % _REPLACE_EVERY == 0:
            self.creds = {**self.creds, "lastPropHash": self.rng.getrandbits(64).to_bytes(8, "big")}
        self.creds["accountSyncCounter"] = int(self.creds["accountSyncCounter"]) + 1
        self.creds["lastAccountSyncTimestamp"] = int(time.time())
        if self.updates % _NESTED_EVERY == 0:
            settings = self.creds["accountSettings"]
            settings["unarchiveChats"] = not settings["unarchiveChats"]
        if self.updates % _REPLACE_EVERY == 0:
            auth.creds_updated(self.creds)
        else:
            auth.creds_updated()

    def next_key_write(self) -> dict[str, dict[str, Any]]:
        """One ``keys.set`` batch: a ratchet step, a sender key, or a new contact."""
        self.key_writes += 1
        kind = self.key_writes % 10
        batch: dict[str, dict[str, Any]]
        if kind == 0:
            # A new contact's first message: a session built on one of our
            # pre-keys, which is deleted as consumed.
            address = f"1555{len(self.contacts):07d}.0"
            self.contacts.append(address)
            batch = {"session": {address: _session_record(self.rng)}}
            if self.next_consumed <= PREKEY_COUNT:
                batch["pre-key"] = {str(self.next_consumed): None}
                self.next_consumed += 1
        elif kind in (3, 7):
            group = self.rng.choice(self.groups)
            sender = self.rng.choice(self.contacts).split(".")[0]
            batch = {"sender-key": {f"{group}::{sender}::0": _sender_key(self.rng)}}
        else:
            address = self.rng.choice(self.contacts)
            batch = {"session": {address: _session_record(self.rng)}}
        self._record(batch)
        return batch

    def expected_keys(self) -> dict[str, dict[str, str | None]]:
        """``{category: {key id: digest, or None if deleted}}``."""
        expected: dict[str, dict[str, str | None]] = {}
        for (category, key_id), digest in self.keys.items():
            expected.setdefault(category, {})[key_id] = digest
        return expected


def _key_pair() -> dict[str, bytes]:
    return {"private": os.urandom(32), "public": os.urandom(32)}


def _new_creds(rng: random.Random) -> dict[str, Any]:
    """Fresh creds shaped like Baileys' ``initAuthCreds()`` after a QR pairing."""
    return {
        "noiseKey": _key_pair(),
        "pairingEphemeralKeyPair": _key_pair(),
        "signedIdentityKey": _key_pair(),
        "signedPreKey": {"keyPair": _key_pair(), "signature": os.urandom(64), "keyId": 1},
        "registrationId": rng.randrange(1, 16380),
        "advSecretKey": base64.b64encode(os.urandom(32)).decode("ascii"),
        "processedHistoryMessages": [],
        "nextPreKeyId": 1,
        "firstUnuploadedPreKeyId": 1,
        "accountSyncCounter": 0,
        "accountSettings": {"unarchiveChats": False},
        "registered": False,
        "pairingCode": None,
        "lastPropHash": None,
        "routingInfo": None,
        "me": {"id": f"{_FAKE_NUMBER}:7@s.whatsapp.net", "name": "Demo Bot", "lid": None},
        "account": {
            "details": os.urandom(60),
            "accountSignatureKey": os.urandom(32),
            "accountSignature": os.urandom(64),
            "deviceSignature": os.urandom(64),
        },
        "signalIdentities": [
            {
                "identifier": {"name": f"{_FAKE_NUMBER}:7@s.whatsapp.net", "deviceId": 0},
                "identifierKey": os.urandom(33),
            }
        ],
        "platform": "android",
        "myAppStateKeyId": base64.b64encode(os.urandom(6)).decode("ascii"),
        "lastAccountSyncTimestamp": int(time.time()),
    }


def _session_record(rng: random.Random) -> dict[str, Any]:
    return {
        "version": "v1",
        "rootKey": os.urandom(32),
        "chain": {"counter": rng.randrange(1_000_000), "chainKey": os.urandom(32)},
        "remoteIdentityKey": os.urandom(33),
    }


def _sender_key(rng: random.Random) -> dict[str, Any]:
    return {
        "senderKeyId": rng.randrange(1 << 31),
        "chainKey": {"iteration": rng.randrange(10_000), "seed": os.urandom(32)},
        "signingKeyPublic": os.urandom(33),
    }


async def _storm(
    auth: AuthState, bot: _Bot, updates: int, key_writes: int, duration: float
) -> float:
    """Send the updates and key writes in slices of ``_TICK`` s over ``duration`` s.

    Returns the seconds it took (more than ``duration`` if the key writes are
    slower than the pace asked for).
    """
    loop = asyncio.get_running_loop()
    ticks = max(1, round(duration / _TICK))
    start = loop.time()
    sent_updates = sent_writes = 0
    for tick in range(1, ticks + 1):
        n_updates = updates * tick // ticks - sent_updates
        n_writes = key_writes * tick // ticks - sent_writes
        sent_updates += n_updates
        sent_writes += n_writes
        # The slice's updates in n_writes + 1 runs, a key write between two runs.
        for part in range(n_writes + 1):
            run = n_updates * (part + 1) // (n_writes + 1) - n_updates * part // (n_writes + 1)
            for _ in range(run):
                bot.update_creds(auth)
            if part < n_writes:
                await auth.keys.set(bot.next_key_write())
        # Even a zero sleep lets the throttle's timers and saves run.
        await asyncio.sleep(max(0.0, start + duration * tick / ticks - loop.time()))
    return loop.time() - start


def _canonical(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    raise TypeError(type(value).__name__)


def _digest(value: object) -> str:
    """SHA-256 of a value's canonical JSON (bytes as hex): equal digests, equal values."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_canonical)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
