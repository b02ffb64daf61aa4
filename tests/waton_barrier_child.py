"""A waton client for the crash tests: ``python tests/waton_barrier_child.py CONFIG_JSON``.

The waton twin of ``tests/barrier_child.py``, with the same protocol: it
opens Signal sessions to ``devices`` devices (stored: the frame "sessions
opened" waited for them), encrypts one message for all of them (waton's own
``encrypt_message``: one ratchet step per device, buffered by the barrier),
and then, with ``stop`` "before the barrier", says so and waits to be
SIGKILLed; with "after the barrier" it first sends the frame "the fan-out"
through ``WAClient.send_node``, which waits for the barrier. Frames go to the
file ``frames`` (hex lines), fsynced as they are sent. The line it prints
holds the session records as the store had them before the fan-out and as
the client holds them after it.
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

from waton.client.client import WAClient  # noqa: E402
from waton.protocol.signal_repo import SignalRepository  # noqa: E402

from tests.barrier_child import open_store, text  # noqa: E402
from tests.waton_fanout import (  # noqa: E402
    device_jids,
    fan_out,
    make_bundles,
    message,
    open_sessions,
    wire,
)
from wa_session_store import AuthKeys  # noqa: E402
from wa_session_store.integrations.waton import use_waton_auth_state  # noqa: E402


async def main(config: dict[str, str]) -> None:
    AuthKeys.FLUSH_DELAY = 3600.0  # only a barrier stores the fan-out
    async with open_store(config) as store:
        auth = await use_waton_auth_state(store, "crash", backup_interval=None)
        client = WAClient(auth.storage)
        auth.attach(client)  # before the client has loaded its creds, as a bot does
        wire(client, Path(config["frames"]))
        client.creds = await client.storage.get_creds()  # what connect() does first
        repo = SignalRepository(client.creds, client.storage)
        jids = device_jids(int(config["devices"]))
        await open_sessions(repo, make_bundles(jids))
        await client.send_node(message("sessions opened"))
        changed = [repo._session_key(jid) for jid in jids]
        before = await store.get_keys("crash", "session", changed)
        await fan_out(repo, jids, "to everyone")
        said: dict[str, Any] = {"event": "ready to die", "changed": changed}
        said["before"] = text(before)
        if config["stop"] == "after the barrier":
            await client.send_node(message("the fan-out"))
            said["after"] = text(await auth.keys.get("session", changed))
        print(json.dumps(said), flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
