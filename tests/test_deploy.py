"""Deploys with real processes: a rolling hand-over on SIGTERM, a SIGKILLed owner,
a paused owner whose late writes must not land, and scale-out over workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from wa_session_store import PostgresStore, SessionWorker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOT = str(Path(__file__).with_name("deploy_bot.py"))


class Proc:
    """A bot subprocess whose JSON event lines are collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, mode: str, config: dict[str, Any]) -> Proc:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, BOT, mode, json.dumps(config), stdout=asyncio.subprocess.PIPE, env=env
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))

    async def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for item in self.events:
                if item["event"] == event:
                    return item
            assert self.process.returncode is None or not self._reader.done(), (
                f"process exited ({self.process.returncode}) before {event!r}: {self.events[-3:]}"
            )
            assert time.monotonic() < deadline, f"no {event!r} within {timeout}s"
            await asyncio.sleep(0.01)

    async def finish(self, timeout: float = 20.0) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def procs() -> Any:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()
        await proc.process.wait()


def _bot_config(dsn: str, schema: str, owner: str, ttl: float = 2.0) -> dict[str, Any]:
    return {"dsn": dsn, "schema": schema, "owner": owner, "session": "bot-1", "ttl": ttl}


async def _prepare(dsn: str, schema: str) -> PostgresStore:
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    return store


async def test_rolling_deploy_hands_over_on_sigterm(
    pg_dsn: str, pg_schema: str, procs: list[Proc]
) -> None:
    store = await _prepare(pg_dsn, pg_schema)
    try:
        old = await Proc.start("bot", _bot_config(pg_dsn, pg_schema, "old"))
        procs.append(old)
        await old.wait_for("acquired")
        await old.wait_for("ack")
        new = await Proc.start("bot", _bot_config(pg_dsn, pg_schema, "new"))
        procs.append(new)
        await asyncio.sleep(1.0)  # the new one waits: the old one renews
        assert not any(e["event"] == "acquired" for e in new.events)
        sigterm_at = time.time()
        old.process.send_signal(signal.SIGTERM)
        released = await old.wait_for("released")
        acquired = await new.wait_for("acquired")
        assert await old.finish() == 0
        await new.wait_for("ack")
        handover = acquired["t"] - released["t"]
        # Ownership intervals from both processes' own clocks never overlap.
        assert acquired["t"] >= released["t"]
        assert acquired["token"] > 1
        # The old owner's last creds landed before the hand-over; then the new owner's writes.
        new.process.send_signal(signal.SIGTERM)
        final = await new.wait_for("released")
        assert await new.finish() == 0
        assert await store.load_creds("bot-1") == {"owner": "new", "n": final["n"]}
        peer = await store.get_keys("bot-1", "session", ["peer"])
        assert peer == {"peer": {"owner": "new", "n": final["n"]}}
        print(
            f"\nrolling deploy: SIGTERM to new owner {1000 * (acquired['t'] - sigterm_at):.0f} ms, "
            f"release to acquire {1000 * handover:.0f} ms, double ownership observed: 0"
        )
    finally:
        await store.close()


async def test_a_killed_owner_is_replaced_after_its_lease_expires(
    pg_dsn: str, pg_schema: str, procs: list[Proc]
) -> None:
    ttl = 2.0
    store = await _prepare(pg_dsn, pg_schema)
    try:
        old = await Proc.start("bot", _bot_config(pg_dsn, pg_schema, "old", ttl))
        procs.append(old)
        await old.wait_for("ack")
        new = await Proc.start("bot", _bot_config(pg_dsn, pg_schema, "new", ttl))
        procs.append(new)
        await asyncio.sleep(0.5)
        killed_at = time.time()
        old.kill()
        await old.finish()
        acquired = await new.wait_for("acquired")
        took = acquired["t"] - killed_at
        assert took <= ttl + 0.5, took
        await new.wait_for("ack")
        print(f"\nSIGKILL: new owner after {took * 1000:.0f} ms (ttl {ttl * 1000:.0f} ms)")
    finally:
        await store.close()


async def test_a_paused_owners_late_writes_never_land(
    pg_dsn: str, pg_schema: str, procs: list[Proc]
) -> None:
    ttl = 1.5
    store = await _prepare(pg_dsn, pg_schema)
    try:
        old = await Proc.start("bot", _bot_config(pg_dsn, pg_schema, "old", ttl))
        procs.append(old)
        await old.wait_for("ack")
        old.process.send_signal(signal.SIGSTOP)  # a frozen container: no renewals, no writes
        new = await Proc.start("bot", _bot_config(pg_dsn, pg_schema, "new", ttl))
        procs.append(new)
        acquired = await new.wait_for("acquired")
        await new.wait_for("ack")
        old.process.send_signal(signal.SIGCONT)  # it wakes up believing it still owns the session
        lost = await old.wait_for("lost")
        assert await old.finish() == 3
        await asyncio.sleep(0.2)
        new.process.send_signal(signal.SIGTERM)
        final = await new.wait_for("released")
        assert await new.finish() == 0
        stored = await store.load_creds("bot-1")
        peer = await store.get_keys("bot-1", "session", ["peer"])
        stale = [v for v in (stored, peer["peer"]) if v is None or v["owner"] != "new"]
        assert stale == []
        assert stored == {"owner": "new", "n": final["n"]}
        print(
            f"\npaused owner: resumed after the new grant, its writes refused and the loss "
            f"noticed {1000 * (lost['t'] - acquired['t']):.0f} ms after that grant; "
            f"stale writes landed: {len(stale)}"
        )
    finally:
        await store.close()


async def test_scale_out_over_three_workers(pg_dsn: str, pg_schema: str, procs: list[Proc]) -> None:
    ttl, claim_every = 2.0, 0.2
    store = await _prepare(pg_dsn, pg_schema)
    try:
        await asyncio.gather(*(store.save_creds(f"bot-{n:03d}", {"n": n}) for n in range(300)))
        config = {
            "dsn": pg_dsn,
            "schema": pg_schema,
            "ttl": ttl,
            "capacity": 200,
            "claim_every": claim_every,
            "claim_batch": 20,
        }
        workers = [await Proc.start("worker", {**config, "owner": f"w{i}"}) for i in range(3)]
        procs.extend(workers)

        def owners_at(t: float, killed: dict[str, float]) -> dict[str, list[str]]:
            """Who ran each session at time t, from the workers' own start/end lines."""
            spans: dict[str, list[str]] = {}
            for worker in workers:
                open_: dict[str, float] = {}
                for e in worker.events:
                    if e["event"] == "start":
                        open_[e["session"]] = e["t"]
                    elif e["event"] == "end":
                        begun = open_.pop(e["session"], None)
                        if begun is not None and begun <= t < e["t"]:
                            spans.setdefault(e["session"], []).append(e["owner"])
                end = killed.get(worker_owner(worker), float("inf"))
                for session, begun in open_.items():
                    if begun <= t < end:
                        spans.setdefault(session, []).append(worker_owner(worker))
            return spans

        def worker_owner(worker: Proc) -> str:
            return f"w{workers.index(worker)}"

        deadline = time.monotonic() + 20
        while len(owners_at(time.time(), {})) < 300:
            assert time.monotonic() < deadline, "the workers did not take every session"
            await asyncio.sleep(0.1)
        counts = {worker_owner(w): sum(e["event"] == "start" for e in w.events) for w in workers}
        assert all(count > 0 for count in counts.values()), counts
        await asyncio.sleep(0.5)
        victim = workers[0]
        killed_at = time.time()
        victim.kill()
        await victim.finish()
        orphans = set(owners_at(killed_at - 0.001, {}).keys()) & {
            e["session"] for e in victim.events if e["event"] == "start"
        }
        deadline = time.monotonic() + ttl + 10
        while True:
            now = time.time()
            taken = owners_at(now, {"w0": killed_at})
            if len(taken) == 300:
                break
            assert time.monotonic() < deadline, f"{300 - len(taken)} sessions not taken over"
            await asyncio.sleep(0.05)
        recovered = now - killed_at
        assert recovered <= ttl + ttl / 3 + claim_every + 1.0, recovered
        # Sampled over the whole run: never two owners of one session at once.
        start = min(e["t"] for w in workers for e in w.events)
        samples = 0
        t = start
        while t < time.time():
            for session, who in owners_at(t, {"w0": killed_at}).items():
                assert len(who) == 1, (session, who, t)
            t += 0.05
            samples += 1
        # A worker told to stop exits within SessionWorker.STOP_TIMEOUT plus the
        # time to end its process, however loaded the machine (issue 13, class 9).
        stops = []
        for worker in workers[1:]:
            told = time.monotonic()
            worker.process.send_signal(signal.SIGTERM)
            assert await worker.finish() == 0
            stopped = await worker.wait_for("stopped")
            assert stopped["took"] <= SessionWorker.STOP_TIMEOUT + 1.0, stopped
            stops.append(
                f"{stopped['sessions']} sessions: stop() {stopped['took']:.2f} s, "
                f"SIGTERM to exit {time.monotonic() - told:.2f} s"
            )
        print(f"\nworker stops: {'; '.join(stops)}")
        print(
            f"\nscale-out: 300 sessions over 3 workers {sorted(counts.values())}, "
            f"{len(orphans)} orphaned by SIGKILL owned again after {recovered * 1000:.0f} ms "
            f"(ttl {ttl * 1000:.0f} ms), {samples} samples, double ownership observed: 0"
        )
    finally:
        await store.close()
