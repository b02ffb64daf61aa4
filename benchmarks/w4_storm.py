"""Workload 4: a credential storm, 10,000 ``auth.creds_updated()`` calls in 60 s.

Two runs, both with ``use_auth_state``'s defaults otherwise (backups on):

* simulated time: the real 30 s throttle, 300 s backups (first after 10 s),
  over 60 s of an event-loop clock that jumps to the next timer whenever the
  loop would sleep (``VirtualClockLoop``), against a MemoryStore that records
  when each save lands. Exact and instant.
* real time, scaled down 100x: throttle 0.3 s, backups every 3 s (first after
  0.1 s), 10,000 updates over 0.6 s, against PostgreSQL through the proxy at
  1 ms; the stored document is read back from the database.

Among the updates, three move the pre-key counters (``nextPreKeyId``): those
are saved at once ("urgent") by the default ``urgent`` predicate, so a window
may hold up to 3 throttled writes plus the urgent ones that fell in it.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Mapping
from typing import Any

from tests.support.clock import VirtualClockLoop

from wa_session_store import MemoryStore, PostgresStore, use_auth_state

from ._env import Config, Net, make_creds, scratch_schema
from ._harness import Row

WORKLOAD = "4 Credential storm"
UPDATES = 10_000
URGENT_AT = (2_500, 5_000, 7_500)  # update numbers that move nextPreKeyId


class RecordingMemoryStore(MemoryStore):
    """A MemoryStore noting the loop time of every creds save."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[float] = []

    async def save_creds(
        self, session_id: str, creds: Mapping[str, Any], *args: Any, **kwargs: Any
    ) -> None:
        await super().save_creds(session_id, creds, *args, **kwargs)
        self.saves.append(asyncio.get_running_loop().time())


class RecordingPostgresStore(PostgresStore):
    """A PostgresStore noting the loop time of every creds save."""

    saves: list[float]

    async def save_creds(
        self, session_id: str, creds: Mapping[str, Any], *args: Any, **kwargs: Any
    ) -> None:
        await super().save_creds(session_id, creds, *args, **kwargs)
        self.saves.append(asyncio.get_running_loop().time())


def _update(creds: dict[str, Any], n: int) -> dict[str, Any]:
    new = dict(creds)
    new["accountSyncCounter"] = n
    new["lastAccountSyncTimestamp"] = 1717000000 + n
    new["processedHistoryMessages"] = [*creds["processedHistoryMessages"][-2:], {"n": n}]
    if n in URGENT_AT:
        new["nextPreKeyId"] = creds["nextPreKeyId"] + 30
        new["firstUnuploadedPreKeyId"] = new["nextPreKeyId"]
    return new


async def storm(
    store: Any,
    creds: dict[str, Any],
    *,
    duration: float,
    throttle: float,
    backup_interval: float,
    initial_delay: float,
    ticks: int,
) -> dict[str, Any]:
    """Run the storm; return what the benchmark reports."""
    loop = asyncio.get_running_loop()
    await store.save_creds("storm", creds)
    store.saves.clear()
    auth = await use_auth_state(
        store,
        "storm",
        throttle=throttle,
        backup_interval=backup_interval,
        initial_delay=initial_delay,
    )
    start = loop.time()
    current = copy.deepcopy(creds)
    urgent_times: list[float] = []
    per_tick = UPDATES // ticks
    n = 0
    for tick in range(ticks):
        # Spread evenly: tick k happens at start + k * duration / ticks.
        due = start + tick * duration / ticks
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        for _ in range(per_tick):
            n += 1
            current = _update(current, n)
            if n in URGENT_AT:
                urgent_times.append(loop.time() - start)
            auth.creds_updated(current)
    last_update = loop.time() - start
    # Wait for the trailing save of the last update (no flush: the throttle
    # alone must save it), then read back what the store holds.
    await asyncio.sleep(throttle * 1.2)
    stored = await store.load_creds("storm")
    pending_before_close = auth.pending
    await auth.aclose()
    saves = [t - start for t in store.saves]
    windows = math.ceil(max(saves[-1], duration) / throttle + 1e-9)
    per_window = [0] * windows
    urgent_per_window = [0] * windows
    for t in saves:
        per_window[min(int(t / throttle), windows - 1)] += 1
    for t in urgent_times:
        urgent_per_window[min(int(t / throttle), windows - 1)] += 1
    excess = [w - u for w, u in zip(per_window, urgent_per_window, strict=True)]
    return {
        "updates": n,
        "saves": len(saves),
        "save_times": saves,
        "per_window": per_window,
        "urgent_per_window": urgent_per_window,
        "max_throttled_per_window": max(excess),
        "final_equal": stored == current,
        "pending_before_close": pending_before_close,
        "last_update": last_update,
        "last_save": saves[-1] if saves else None,
    }


def _rows(setup: str, r: dict[str, Any], scale: str, throttle: float) -> list[Row]:
    windows = ", ".join(
        f"{w}" + (f" ({u} urgent)" if u else "")
        for w, u in zip(r["per_window"], r["urgent_per_window"], strict=True)
    )
    unit = throttle
    times = ", ".join(f"{t / unit * 30:.1f}" for t in r["save_times"])
    return [
        Row(
            WORKLOAD,
            setup,
            f"creds writes for {r['updates']:,} updates in 60 s",
            f"{r['saves']} writes; per 30 s window: {windows}",
            "",
            "",
            "",
            "<= 3 per window + urgent",
            r["max_throttled_per_window"] <= 3,
            f"{scale}; writes at t = {times} s (in 30 s-throttle time)",
            extra={"kind": "storm", **{k: v for k, v in r.items() if k != "save_times"}},
        ),
        Row(
            WORKLOAD,
            setup,
            "stored creds == last update",
            "yes" if r["final_equal"] else "no",
            "",
            "",
            "",
            "equal, without flush()",
            bool(r["final_equal"]),
            "read back from the store one throttle interval after the last update",
            extra={"kind": "storm_final"},
        ),
    ]


async def _virtual_run(creds: dict[str, Any]) -> dict[str, Any]:
    store = RecordingMemoryStore()
    async with store:
        return await storm(
            store,
            creds,
            duration=60.0,
            throttle=30.0,
            backup_interval=300.0,
            initial_delay=10.0,
            ticks=10_000,
        )


def run_virtual(creds: dict[str, Any]) -> dict[str, Any]:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(_virtual_run(creds))
    finally:
        loop.close()


async def run(cfg: Config) -> list[Row]:
    creds = make_creds(cfg.rng)
    rows: list[Row] = []
    # The simulated run needs its own loop: run it in a worker thread.
    virtual = await asyncio.to_thread(run_virtual, creds)
    rows += _rows(
        "MemoryStore, simulated clock",
        virtual,
        "real parameters (throttle 30 s, backups 300 s from 10 s), simulated time",
        30.0,
    )
    net = Net(0.001)
    dsn = cfg.proxied(net)
    with scratch_schema(cfg.dsn, "storm") as schema:
        store = RecordingPostgresStore(dsn, schema=schema)
        store.saves = []
        async with store:
            real = await storm(
                store,
                creds,
                duration=0.6,
                throttle=0.3,
                backup_interval=3.0,
                initial_delay=0.1,
                ticks=200,
            )
    rows += _rows(
        f"PostgreSQL, {net.name}, real time / 100",
        real,
        "scaled 1/100: throttle 0.3 s, backups 3 s from 0.1 s, 0.6 s of updates",
        0.3,
    )
    return rows
