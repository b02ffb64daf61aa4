"""A bot process for the deploy tests: ``python tests/deploy_bot.py MODE CONFIG_JSON``.

Modes:
- ``bot``: acquire one session's lease (waiting for the old owner), keep it
  alive, write creds and keys fenced by it every few milliseconds; on SIGTERM
  flush, release and exit 0. Prints one JSON line per event with a wall-clock
  time: ``acquired``, ``ack`` (every 20th acknowledged write), ``lost``,
  ``released``.
- ``worker``: a SessionWorker over every stored session; prints ``start`` and
  ``end`` lines per session it runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from wa_session_store import Lease, LeaseLostError, PostgresStore, SessionWorker, use_auth_state


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


async def bot(config: dict[str, Any]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    owner, sid = config["owner"], config["session"]
    async with PostgresStore(config["dsn"], schema=config["schema"], max_size=3) as store:
        lease = await store.acquire_lease(sid, owner=owner, ttl=config["ttl"], wait=None)
        emit("acquired", owner=owner, token=lease.token)
        lost = asyncio.Event()
        lease.keep_alive(on_lost=lambda _lease, _reason: lost.set())
        auth = await use_auth_state(
            store,
            sid,
            lease=lease,
            throttle=0.2,
            backup_interval=None,
            on_lost=lambda _auth: lost.set(),
        )
        creds = {"owner": owner, "n": 0}
        n = 0
        while not stop.is_set() and not lost.is_set():
            n += 1
            creds["n"] = n
            auth.creds_updated(dict(creds))
            try:
                await auth.keys.set({"session": {"peer": {"owner": owner, "n": n}}})
            except LeaseLostError:
                break
            if n % 20 == 0:
                emit("ack", owner=owner, n=n)
            await asyncio.sleep(0.005)
        await auth.aclose()  # the last creds land, fenced; a replaced owner's are dropped
        if lost.is_set() or lease.lost:
            emit("lost", owner=owner, n=n)
            return 3
        await lease.release()
        emit("released", owner=owner, n=n)
    return 0


async def worker(config: dict[str, Any]) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    owner = config["owner"]
    async with PostgresStore(config["dsn"], schema=config["schema"], max_size=4) as store:

        async def handler(lease: Lease) -> None:
            emit("start", owner=owner, session=lease.session_id, token=lease.token)
            try:
                await asyncio.Event().wait()
            finally:
                emit("end", owner=owner, session=lease.session_id)

        runner = SessionWorker(
            store,
            owner,
            handler,
            capacity=config["capacity"],
            ttl=config["ttl"],
            claim_every=config["claim_every"],
            claim_batch=config["claim_batch"],
        )
        task = asyncio.ensure_future(runner.run())
        await stop.wait()
        held = len(runner.sessions)
        stopping = time.monotonic()
        await runner.stop()
        await task
        emit("stopped", owner=owner, sessions=held, took=time.monotonic() - stopping)
    return 0


if __name__ == "__main__":
    mode, raw = sys.argv[1], sys.argv[2]
    run = {"bot": bot, "worker": worker}[mode]
    sys.exit(asyncio.run(run(json.loads(raw))))
