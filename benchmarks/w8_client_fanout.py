"""Workload 8: client fan-out, a pyaileys send to 100 and 500 devices.

What a real client does: pyaileys' ``SignalRepository.encrypt_message`` for
each recipient device (one ``keys.get`` and one ``keys.set`` of its session),
then the message frame, which waits for the write barrier. Through
``use_pyaileys_auth_state`` (barrier mode, preload) on SQLite and on
PostgreSQL at 0, 1 and 5 ms one way, against a dict in memory (the floor) and
pyaileys' own ``MultiFileKeyStore`` on local disk (the baseline), all in one
run, interleaved. Round trips are counted at the proxy. Also measured: the
first send after a restart, with and without preload, and write-through mode
(round trips per ``set``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from pyaileys import WhatsAppClient
from pyaileys.auth.state import AuthenticationState
from pyaileys.auth.store import MultiFileKeyStore
from pyaileys.auth.utils import init_auth_creds
from pyaileys.signal import SignalRepository
from pyaileys.signal.repository import PreKeyBundle
from tests.fanout import device_jids, fan_out, make_bundles, open_sessions, wire

from wa_session_store import AuthKeys, PostgresStore, SQLiteStore
from wa_session_store.integrations.pyaileys import PyaileysAuthState, use_pyaileys_auth_state
from wa_session_store.store.base import BaseStore

from ._env import Config, Net, scratch_schema
from ._harness import Row, Stat, Timer, interleaved, ratios

WORKLOAD = "8 Client fan-out"
SID = "fanout-client"


class DictKeys:
    """The floor: a dict in memory, pyaileys' ``SignalKeyStore`` shape."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}

    async def get(self, key_type: str, ids: list[str]) -> dict[str, Any]:
        return {i: self.data.get((key_type, i)) for i in ids}

    async def set(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        for category, items in data.items():
            for key_id, value in items.items():
                if value is None:
                    self.data.pop((category, key_id), None)
                else:
                    self.data[category, key_id] = value

    async def clear(self) -> None:
        self.data.clear()


class CountingKeys:
    """Our key store, with the client's ``set`` calls counted."""

    def __init__(self, keys: AuthKeys) -> None:
        self.keys = keys
        self.sets = 0

    async def get(self, key_type: str, ids: list[str]) -> dict[str, Any]:
        return await self.keys.get(key_type, ids)

    async def set(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        self.sets += 1
        await self.keys.set(data)

    async def clear(self) -> None:
        await self.keys.clear()


class Ours:
    """Our auth state on a store, with a pyaileys client wired to a recorder."""

    def __init__(self, store: BaseStore, net: Net | None) -> None:
        self.store = store
        self.net = net
        self.auth: PyaileysAuthState | None = None
        self.client: WhatsAppClient | None = None
        self.repo: SignalRepository | None = None

    async def start(self, **options: Any) -> None:
        self.auth = await use_pyaileys_auth_state(self.store, SID, backup_interval=None, **options)
        self.client = WhatsAppClient(auth=self.auth.state)
        self.auth.attach(self.client)
        wire(self.client)
        self.repo = SignalRepository(self.auth.state)

    async def send(self, jids: list[str]) -> None:
        assert self.repo is not None
        assert self.client is not None
        await fan_out(self.repo, jids, "hello group")
        await self.client.socket.send_raw(b"message")  # waits for the barrier

    async def prepare(self, bundles: list[tuple[str, PreKeyBundle]]) -> None:
        """Open sessions to every device, stored by the frame that follows."""
        assert self.repo is not None
        assert self.client is not None
        await open_sessions(self.repo, bundles)
        await self.client.socket.send_raw(b"sessions opened")

    async def stop(self) -> None:
        if self.auth is not None:
            await self.auth.aclose()


def _plain_repo(keys: Any) -> SignalRepository:
    return SignalRepository(AuthenticationState(creds=init_auth_creds(), keys=keys))


async def run(cfg: Config) -> list[Row]:
    return await by_size(cfg, _one_size)


async def by_size(
    cfg: Config, one_size: Callable[[Config, int, int], Awaitable[list[Row]]]
) -> list[Row]:
    """The rows of ``one_size(cfg, devices, reps)`` for 100 and 500 devices."""
    rows: list[Row] = []
    reps = cfg.reps(7, 3)
    for devices in (100, 500):
        rows += await one_size(cfg, devices, reps)
    return rows


async def _one_size(cfg: Config, devices: int, reps: int) -> list[Row]:
    jids = device_jids(devices)
    bundles = make_bundles(jids)
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        scratch_schema(cfg.dsn, f"client{devices}") as schema,
    ):
        folder = Path(tmp) / "pyaileys"
        folder.mkdir()
        floor = _plain_repo(DictKeys())
        files = _plain_repo(MultiFileKeyStore(folder))
        for repo in (floor, files):
            await open_sessions(repo, bundles)
        stores, nets = open_stores(cfg, Path(tmp), schema)
        ours = await start_all(stores, lambda name, store: Ours(store, nets[name]), bundles)

        def plain(repo: SignalRepository) -> Callable[[], Awaitable[object]]:
            return lambda: fan_out(repo, jids, "hello group")

        times, trips = await measure(
            cfg, {"memory": plain(floor), "files": plain(files)}, ours, jids, reps
        )
        rows += fan_out_rows(
            WORKLOAD,
            devices,
            times,
            trips,
            ours,
            baseline=("files", "pyaileys MultiFileKeyStore, local disk"),
        )
        for contender in ours.values():
            await contender.stop()
        rows += await _restart(cfg, devices, jids, stores, nets, reps)
        for store in stores.values():
            await store.close()
    return rows


class Contender(Protocol):
    """Our auth state under one client, on one store: what :func:`measure` times."""

    net: Net | None

    async def start(self, **options: Any) -> None: ...

    async def prepare(self, bundles: Any) -> None: ...

    async def send(self, jids: list[str]) -> None: ...


C = TypeVar("C", bound=Contender)


async def start_all(
    stores: dict[str, BaseStore], make: Callable[[str, BaseStore], C], bundles: Any
) -> dict[str, C]:
    """Open each store and start a contender on it, its sessions opened."""
    ours: dict[str, C] = {}
    for name, store in stores.items():
        await store.open()
        ours[name] = contender = make(name, store)
        await contender.start()
        await contender.prepare(bundles)
    return ours


def open_stores(
    cfg: Config, folder: Path, schema: str
) -> tuple[dict[str, BaseStore], dict[str, Net | None]]:
    """Our stores, not opened yet: SQLite in ``folder``, and PostgreSQL through
    the proxy at each of the run's delays; with the delay each one runs at."""
    stores: dict[str, BaseStore] = {"SQLite": SQLiteStore(folder / "ours.db")}
    nets: dict[str, Net | None] = {"SQLite": None}
    for net in cfg.nets:
        name = f"PostgreSQL, {net.name}"
        stores[name] = PostgresStore(cfg.proxied(net), schema=schema)
        nets[name] = net
    return stores, nets


async def measure(
    cfg: Config,
    plain: dict[str, Callable[[], Awaitable[object]]],
    ours: Mapping[str, Contender],
    jids: list[str],
    reps: int,
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Time ``plain`` fan-outs and our sends side by side (interleaved); count
    the round trips of each of ours that goes through the proxy."""
    trips: dict[str, list[int]] = {name: [] for name in ours}

    def untimed(send: Callable[[], Awaitable[object]]) -> Callable[[int], Awaitable[float]]:
        async def one(rep: int) -> float:
            with Timer() as t:
                await send()
            return t.seconds

        return one

    def timed(name: str) -> Callable[[int], Awaitable[float]]:
        contender = ours[name]

        async def one(rep: int) -> float:
            if contender.net is not None:
                cfg.proxy.delay(contender.net.delay)
            before = cfg.proxy.round_trips()
            with Timer() as t:
                await contender.send(jids)
            if rep >= 0 and contender.net is not None:
                trips[name].append(cfg.proxy.round_trips() - before)
            return t.seconds

        return one

    contenders = {name: untimed(send) for name, send in plain.items()}
    contenders.update({name: timed(name) for name in ours})
    return await interleaved(contenders, reps, warmup=2), trips


def fan_out_rows(
    workload: str,
    devices: int,
    times: dict[str, list[float]],
    trips: dict[str, list[int]],
    ours: Mapping[str, Contender],
    *,
    baseline: tuple[str, str],
    others: Mapping[str, tuple[str, str]] = MappingProxyType(
        {"memory": ("a dict in memory", "the floor: no storage at all")}
    ),
) -> list[Row]:
    """The rows of one size: each of ``others`` (``{name: (setup, note)}``) and
    each of ours against ``baseline`` (``(name, description)``), with round trips."""
    key, description = baseline
    base = times[key]
    base_ms = Stat([v * 1000 for v in base], "ms")
    rows = [
        Row(
            workload,
            f"{setup}, {devices} devices",
            "one fan-out send",
            Stat([v * 1000 for v in times[name]], "ms"),
            base_ms,
            description,
            ratios(times[name], base),
            "",
            None,
            note,
            extra={"kind": "client_fanout", "devices": devices, "contender": name},
        )
        for name, (setup, note) in others.items()
    ]
    for name, contender in ours.items():
        counted = trips[name]
        rt = f"{max(counted)} round trips per send" if counted else "no network"
        ratio = ratios(times[name], base)
        target, ok = "", None
        if contender.net is not None and contender.net.ms == 1:
            target = "<= 0.5x, <= 3 round trips"
            ok = ratio.median <= 0.5 and max(counted) <= 3
        rows.append(
            Row(
                workload,
                f"ours, {name}, {devices} devices",
                "one fan-out send + its barrier",
                Stat([v * 1000 for v in times[name]], "ms"),
                base_ms,
                description,
                ratio,
                target,
                ok,
                rt,
                extra={
                    "kind": "client_fanout",
                    "devices": devices,
                    "contender": name,
                    "round_trips": counted,
                    "net_ms": contender.net.ms if contender.net else None,
                },
            )
        )
    return rows


async def _restart(
    cfg: Config,
    devices: int,
    jids: list[str],
    stores: dict[str, BaseStore],
    nets: dict[str, Net | None],
    reps: int,
) -> list[Row]:
    """The first send after a restart (a new auth state), with and without preload."""
    rows: list[Row] = []
    for name, store in stores.items():
        net = nets[name]
        if net is None or net.ms != 1:
            continue
        figures: dict[str, list[float]] = {"warm": [], "preload": [], "cold": []}
        counted: dict[str, list[int]] = {"warm": [], "preload": [], "cold": []}
        for _ in range(max(2, reps // 2)):
            for kind in ("preload", "cold"):
                cfg.proxy.delay(net.delay)
                contender = Ours(store, net)
                await contender.start(preload=kind == "preload")
                for label in (kind, "warm") if kind == "preload" else (kind,):
                    before = cfg.proxy.round_trips()
                    with Timer() as t:
                        await contender.send(jids)
                    figures[label].append(t.seconds * 1000)
                    counted[label].append(cfg.proxy.round_trips() - before)
                await contender.stop()
        warm = max(counted["warm"])
        for kind in ("preload", "cold"):
            rt = max(counted[kind])
            rows.append(
                Row(
                    WORKLOAD,
                    f"ours, {name}, {devices} devices",
                    f"first send after a restart, {'with' if kind == 'preload' else 'without'}"
                    " preload",
                    Stat(figures[kind], "ms"),
                    Stat(figures["warm"], "ms"),
                    "a warm send of the same auth state",
                    ratios(figures[kind], figures["warm"]),
                    "<= warm + 2 round trips" if kind == "preload" else "",
                    rt <= warm + 2 if kind == "preload" else None,
                    f"{rt} round trips (warm: {warm})",
                    extra={"kind": "client_restart", "devices": devices, "preload": kind},
                )
            )
        rows.append(await _write_through(cfg, store, net, jids[: min(devices, 100)]))
    return rows


async def _write_through(cfg: Config, store: BaseStore, net: Net, jids: list[str]) -> Row:
    """Round trips per ``set`` in write-through mode (the cache still serves reads)."""
    contender = Ours(store, net)
    await contender.start(key_writes="write-through")
    assert contender.auth is not None
    counting = CountingKeys(contender.auth.keys)
    contender.auth.state.keys = counting  # what the client's repository calls
    for _ in range(3):  # past psycopg's prepare threshold
        await contender.send(jids)
    cfg.proxy.delay(net.delay)
    counting.sets = 0
    before = cfg.proxy.round_trips()
    with Timer() as t:
        await contender.send(jids)
    trips = cfg.proxy.round_trips() - before
    sets = counting.sets
    await contender.stop()
    return Row(
        WORKLOAD,
        f"ours, PostgreSQL, {net.name}, write-through, {len(jids)} devices",
        "round trips per keys.set",
        f"{trips / sets:.2f}",
        "",
        "",
        "",
        "1 round trip per set",
        trips == sets,
        f"{trips} round trips for {sets} sets; {t.seconds * 1000:.0f} ms for the send",
        extra={"kind": "client_write_through"},
    )
