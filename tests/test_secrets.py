"""Secret hygiene: a whole session lifecycle with DEBUG logging captured, faults
included, and not one credential byte, key byte or DSN password in any log
record, exception message or repr."""

from __future__ import annotations

import base64
import logging
import os
import traceback
from typing import Any

import psycopg
import pytest
from psycopg import sql

from wa_session_store import (
    AESGCMCipher,
    PostgresStore,
    RetryDetails,
    RetryPolicy,
    SessionStoreError,
    restore_all,
    use_auth_state,
)

from .proxy import Proxy

pytestmark = pytest.mark.postgres

PASSWORD = "Pw-0f-the-DSN-9f8e7d"
CREDS_SECRET = os.urandom(32)
KEY_SECRET = os.urandom(32)
PASSPHRASE = "adv-secret-" + base64.b64encode(os.urandom(12)).decode()


def _forms(secret: bytes) -> list[str]:
    return [
        base64.b64encode(secret).decode(),
        secret.hex(),
        secret.hex().upper(),
        repr(secret)[2:-1],
        secret.decode("latin-1"),
    ]


FORBIDDEN = [PASSWORD, PASSPHRASE, *_forms(CREDS_SECRET), *_forms(KEY_SECRET)]


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args)]
    parts += [repr(v) for k, v in vars(record).items() if k not in ("msg", "args")]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


async def test_nothing_secret_leaves_the_process(
    proxy: Proxy, pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, psycopg's, the pool's
    dsn = proxy.dsn(pg_dsn).replace("postgres@", f"postgres:{PASSWORD}@")
    texts: list[str] = []
    details: list[RetryDetails] = []
    cipher = AESGCMCipher({"k1": os.urandom(32)}, "k1")
    policy = RetryPolicy(attempts=2, timeout=0.5, backoff=0.1)
    store = PostgresStore(
        dsn, schema=pg_schema, retry=policy, on_retry=details.append, on_giveup=details.append
    )
    texts.append(repr(store))
    async with store:
        auth = await use_auth_state(store, "user_123", throttle=0.05, backup_interval=None)
        creds: dict[str, Any] = {
            "noiseKey": {"private": CREDS_SECRET, "public": b"\x00" * 32},
            "advSecretKey": PASSPHRASE,
            "nextPreKeyId": 1,
        }
        await auth.save_creds(creds)
        await auth.keys.set({"pre-key": {"1": {"private": KEY_SECRET}}})
        for n in range(50):
            creds["nextPreKeyId"] = n
            auth.creds_updated()
        await auth.flush()
        texts += [repr(auth), repr(auth.keys), repr(auth.throttler), repr(cipher), repr(policy)]

        # Faults: an outage longer than the budget, with secrets in flight.
        proxy.refuse()
        for call in (
            store.save_creds("user_123", creds),
            store.set_keys("user_123", {"session": {"peer": KEY_SECRET}}),
            store.get_keys("user_123", "pre-key", ["1"]),
        ):
            with pytest.raises(SessionStoreError) as info:
                await call
            texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
        proxy.restore()

        # Bad input holding secrets next to what is wrong with it.
        for bad in (
            store.save_creds("user_123", {"k": CREDS_SECRET, "bad": float("nan")}),
            store.set_keys("user_123", {"pre-key": {"1": [KEY_SECRET, {1, 2}]}}),
            store.save_creds("user_123", {"k": KEY_SECRET, "x": "y" * (70 * 1024 * 1024)}),
        ):
            with pytest.raises(SessionStoreError) as info:
                await bad
            texts += [str(info.value), repr(info.value)]

        await auth.aclose()
        restored = await restore_all(store, backup_interval=None)
        texts += [repr(restored), *(repr(s) for s in await store.list_sessions())]
        for state in restored.states.values():
            await state.aclose()

        # A permanent error from the server.
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(pg_schema, "wa_keys")))
        with pytest.raises(SessionStoreError) as info:
            await store.set_keys("user_123", {"session": {"peer": KEY_SECRET}})
        texts += [str(info.value), str(info.value.__cause__)]

    texts += [repr(d) for d in details]
    texts += [_record_text(r) for r in caplog.records]
    assert len(caplog.records) > 20
    leaks = [(secret, text) for text in texts for secret in FORBIDDEN if secret in text]
    assert not leaks, leaks[:3]
    print(f"\nsecret hygiene: {len(caplog.records)} log records, {len(texts)} texts, 0 leaks")
