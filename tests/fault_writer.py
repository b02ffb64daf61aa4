"""The writer process of the crash-atomicity test in ``tests/test_faults.py``.

It writes large ``set_keys`` batches in a loop until it is killed (SIGKILL, at a
random moment chosen by the test)::

    python fault_writer.py postgres DSN SCHEMA FIRST_BATCH
    python fault_writer.py sqlite PATH FIRST_BATCH

Batch ``n`` writes ``BATCH_SIZE`` keys, half ``pre-key`` and half ``session``,
into key-id slot ``n % SLOTS``; every value carries ``{"batch": n}``. So a
batch entirely overwrites the batch written ``SLOTS`` batches earlier, and a
partial write would leave a slot holding two batch tags. On stdout it prints
``ready`` once the store is open, then ``begin N`` before and ``ack N`` after
each batch (``ack`` only once ``set_keys`` returned, i.e. acknowledged).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from wa_session_store import PostgresStore, RetryPolicy, SQLiteStore
from wa_session_store.store.base import BaseStore

SESSION = "crash"
BATCH_SIZE = 2000
SLOTS = 4
HALF = BATCH_SIZE // 2
PAD = "x" * 64


def batch(n: int) -> dict[str, dict[str, Any]]:
    """The keys of batch ``n``: one full slot, every value tagged with ``n``."""
    slot = n % SLOTS
    return {
        "pre-key": {str(slot * HALF + i): {"batch": n, "i": i, "pad": PAD} for i in range(HALF)},
        "session": {f"peer-{slot}-{i}.0": {"batch": n, "i": i, "pad": PAD} for i in range(HALF)},
    }


def open_store(argv: list[str]) -> tuple[BaseStore, int]:
    policy = RetryPolicy(attempts=5, timeout=5.0, backoff=0.2, max_backoff=1.0)
    if argv[0] == "postgres":
        dsn, schema, first = argv[1:4]
        return PostgresStore(dsn, schema=schema, retry=policy, max_size=1), int(first)
    if argv[0] == "sqlite":
        path, first = argv[1:3]
        return SQLiteStore(path, retry=policy), int(first)
    raise SystemExit(f"unknown backend {argv[0]!r}")


async def main(argv: list[str]) -> None:
    store, n = open_store(argv)
    async with store:
        print("ready", flush=True)
        while True:
            data = batch(n)
            print(f"begin {n}", flush=True)
            await store.set_keys(SESSION, data)
            print(f"ack {n}", flush=True)
            n += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
