"""A pyaileys client for the crash tests: ``python tests/barrier_child.py CONFIG_JSON``.

It opens Signal sessions to ``devices`` devices (stored: the frame
"sessions opened" waited for them), encrypts one message for all of them
(pyaileys' own ``encrypt_message``: one ratchet step per device, buffered by
the barrier), and then, with ``stop`` "before the barrier", says so and waits
to be SIGKILLed; with "after the barrier" it first sends the frame "the
fan-out", which waits for the barrier. Frames go to the file ``frames``,
fsynced as they are sent. The line it prints holds the session records as the
store had them before the fan-out and as the client holds them after it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wa_session_store import AuthKeys, PostgresStore, SQLiteStore  # noqa: E402
from wa_session_store.store.base import BaseStore  # noqa: E402


def text(records: dict[str, Any]) -> dict[str, str]:
    """Key records as JSON-able text (latin-1), for the line the child prints."""
    return {key: bytes(value).decode("latin-1") for key, value in records.items()}


def open_store(config: dict[str, str]) -> BaseStore:
    """The store the test named: ``url`` (``sqlite:///path`` or a DSN) and ``schema``."""
    if config["url"].startswith("sqlite:"):
        return SQLiteStore(config["url"].removeprefix("sqlite:///"))
    return PostgresStore(config["url"], schema=config["schema"], prepare_threshold=None)


async def main(config: dict[str, str]) -> None:
    # Here, so that the waton child can import the helpers above without pyaileys.
    from pyaileys import WhatsAppClient
    from pyaileys.signal import SignalRepository

    from tests.fanout import device_jids, fan_out, make_bundles, open_sessions, wire
    from wa_session_store.integrations.pyaileys import use_pyaileys_auth_state

    AuthKeys.FLUSH_DELAY = 3600.0  # only a barrier stores the fan-out
    async with open_store(config) as store:
        auth = await use_pyaileys_auth_state(store, "crash", backup_interval=None)
        client = WhatsAppClient(auth=auth.state)
        auth.attach(client)
        wire(client, Path(config["frames"]))
        repo = SignalRepository(auth.state)
        jids = device_jids(int(config["devices"]))
        await open_sessions(repo, make_bundles(jids))
        await client.socket.send_raw(b"sessions opened")
        changed = [str(repo.jid_to_address(jid)) for jid in jids]
        before = await store.get_keys("crash", "session", changed)
        await fan_out(repo, jids, "to everyone")
        said: dict[str, Any] = {"event": "ready to die", "changed": changed}
        said["before"] = text(before)
        if config["stop"] == "after the barrier":
            await client.socket.send_raw(b"the fan-out")
            said["after"] = text(await auth.keys.get("session", changed))
        print(json.dumps(said), flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
