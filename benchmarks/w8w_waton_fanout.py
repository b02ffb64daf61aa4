"""Workload 8w: workload 8's waton twin, a waton send to 100 and 500 devices.

What waton does: ``SignalRepository.encrypt_message`` for each recipient
device (one ``get_session`` and one ``save_session`` through its
``StoragePort``), then the message frame through ``WAClient.send_node``,
which waits for the write barrier. Through ``use_waton_auth_state``
(barrier mode, preload) on SQLite and on PostgreSQL at 0, 1 and 5 ms one
way, against waton's own storages on local disk, side by side in one run,
interleaved: ``SQLiteStorage`` (its default, the baseline: a commit per
save) and ``JsonStorage`` (the whole file read and rewritten per save), and
a dict in memory (the floor). Round trips are counted at the proxy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.waton_fanout import (
    Bundle,
    device_jids,
    fan_out,
    make_bundles,
    message,
    open_sessions,
    wire,
)
from waton.client.client import WAClient
from waton.infra.storage_json import JsonStorage
from waton.infra.storage_sqlite import SQLiteStorage
from waton.protocol.signal_repo import SignalRepository
from waton.utils.auth import AuthCreds, init_auth_creds

from wa_session_store.integrations.waton import WatonAuthState, use_waton_auth_state
from wa_session_store.store.base import BaseStore

from ._env import Config, Net, scratch_schema
from ._harness import Row
from .w8_client_fanout import by_size, fan_out_rows, measure, open_stores, start_all

WORKLOAD = "8w Client fan-out, waton"
SID = "fanout-waton"


class DictStorage:
    """The floor: waton's ``StoragePort`` over dicts in memory."""

    def __init__(self) -> None:
        self.creds: AuthCreds | None = None
        self.data: dict[tuple[str, ...], bytes] = {}

    async def get_creds(self) -> AuthCreds | None:
        return self.creds

    async def save_creds(self, creds: AuthCreds) -> None:
        self.creds = creds

    async def get_session(self, jid: str) -> bytes | None:
        return self.data.get(("session", jid))

    async def save_session(self, jid: str, data: bytes) -> None:
        self.data["session", jid] = data

    async def get_prekey(self, key_id: int) -> bytes | None:
        return self.data.get(("pre-key", str(key_id)))

    async def save_prekey(self, key_id: int, data: bytes) -> None:
        self.data["pre-key", str(key_id)] = data

    async def get_sender_key(self, group_jid: str, sender_jid: str) -> bytes | None:
        return self.data.get(("sender-key", group_jid, sender_jid))

    async def save_sender_key(self, group_jid: str, sender_jid: str, data: bytes) -> None:
        self.data["sender-key", group_jid, sender_jid] = data


class Ours:
    """Our auth state on a store, with a waton client wired to a recorder."""

    def __init__(self, store: BaseStore, net: Net | None, session_id: str) -> None:
        self.store = store
        self.net = net
        self.session_id = session_id
        self.auth: WatonAuthState | None = None
        self.client: WAClient | None = None
        self.repo: SignalRepository | None = None

    async def start(self, **options: Any) -> None:
        self.auth = await use_waton_auth_state(
            self.store, self.session_id, backup_interval=None, **options
        )
        self.client = WAClient(self.auth.storage)
        self.auth.attach(self.client)
        wire(self.client)
        self.client.creds = await self.client.storage.get_creds()  # what connect() does
        self.repo = SignalRepository(self.client.creds, self.client.storage)

    async def send(self, jids: list[str]) -> None:
        assert self.repo is not None
        assert self.client is not None
        await fan_out(self.repo, jids, "hello group")
        await self.client.send_node(message("message"))  # waits for the barrier

    async def prepare(self, bundles: list[tuple[str, Bundle]]) -> None:
        """Open sessions to every device, stored by the frame that follows."""
        assert self.repo is not None
        assert self.client is not None
        await open_sessions(self.repo, bundles)
        await self.client.send_node(message("sessions opened"))

    async def stop(self) -> None:
        if self.auth is not None:
            await self.auth.aclose()


async def run(cfg: Config) -> list[Row]:
    return await by_size(cfg, _one_size)


async def _one_size(cfg: Config, devices: int, reps: int) -> list[Row]:
    jids = device_jids(devices)
    bundles = make_bundles(jids)
    with (
        tempfile.TemporaryDirectory() as tmp,
        scratch_schema(cfg.dsn, f"waton{devices}") as schema,
    ):
        waton_sqlite = SQLiteStorage(str(Path(tmp) / "waton.db"))
        plain = {
            "memory": SignalRepository(init_auth_creds(), DictStorage()),
            "SQLiteStorage": SignalRepository(init_auth_creds(), waton_sqlite),
            "JsonStorage": SignalRepository(init_auth_creds(), JsonStorage(Path(tmp) / "w.json")),
        }
        for repo in plain.values():
            await open_sessions(repo, bundles)
        stores, nets = open_stores(cfg, Path(tmp), schema)
        # One session each: the PostgreSQL contenders share a schema.
        ours = await start_all(
            stores, lambda name, store: Ours(store, nets[name], f"{SID}-{name}"), bundles
        )

        def sends(repo: SignalRepository) -> Callable[[], Awaitable[object]]:
            return lambda: fan_out(repo, jids, "hello group")

        times, trips = await measure(
            cfg, {name: sends(repo) for name, repo in plain.items()}, ours, jids, reps
        )
        rows = fan_out_rows(
            WORKLOAD,
            devices,
            times,
            trips,
            ours,
            baseline=("SQLiteStorage", "waton SQLiteStorage, local disk"),
            others={
                "memory": ("a dict in memory", "the floor: no storage at all"),
                "JsonStorage": (
                    "waton JsonStorage, local disk",
                    "waton's other storage: the whole file rewritten per save",
                ),
            },
        )
        for contender in ours.values():
            await contender.stop()
        for store in stores.values():
            await store.close()
        await waton_sqlite.close()
    for row in rows:
        row.extra["client"] = "waton"
    return rows
