"""The bot of workload 12: ``python -m benchmarks._failover_bot URL SCHEMA LOG``.

It keeps one session busy as a bot does, round after round, on
``RetryPolicy.failover()``: an acknowledged creds save (``auth.save_creds``),
a key batch (a pre-key), and a barrier-mode fan-out (session records of
``DEVICES`` devices, then the "frame", sent only once ``auth.barrier()``
returned). Each acknowledged thing is a line of ``LOG`` (fsynced), with the
``time.monotonic()`` of its acknowledgement (the clock every process on the
machine shares): ``creds N T``, ``keys N T``, ``frame N T`` and ``fail T``
for a round that raised. It runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from wa_session_store import AuthKeys, PostgresStore, RetryPolicy, use_auth_state

SESSION = "failover-bot"
DEVICES = 5


def device_keys(n: int) -> list[str]:
    """The session records that the frame of round ``n`` depends on."""
    return [f"55119{d:05d}.{n}" for d in range(DEVICES)]


async def main(url: str, schema: str, log_path: str) -> None:
    AuthKeys.FLUSH_DELAY = 3600.0  # only the barrier stores the fan-out
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    log = open(log_path, "a", buffering=1)  # noqa: ASYNC230, SIM115  # line-buffered, fsynced below

    def note(line: str) -> None:
        log.write(f"{line} {time.monotonic():.4f}\n")
        log.flush()
        os.fsync(log.fileno())

    async with PostgresStore(url, schema=schema, retry=RetryPolicy.failover()) as store:
        auth = await use_auth_state(store, SESSION, key_writes="barrier", backup_interval=None)
        note("ready 0")
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await auth.save_creds({"me": SESSION, "round": n})
                note(f"creds {n}")
                await auth.keys.set({"pre-key": {str(n): {"public": os.urandom(33)}}})
                await auth.keys.set({"session": {key: os.urandom(256) for key in device_keys(n)}})
                await auth.barrier()
                note(f"keys {n}")
                note(f"frame {n}")  # sent: its barrier returned
            except Exception:
                note("fail 0")
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(0.02)
        await auth.aclose()
    log.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
