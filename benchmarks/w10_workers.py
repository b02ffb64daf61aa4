"""Workload 10: one worker holding 1,000 sessions: renewals and stop.

A ``SessionWorker`` claims 1,000 stored sessions (idle handlers) through the
proxy at 1 ms one-way, with ttl 3 s (a renewal every second). At capacity it
claims nothing, so every round trip the proxy counts is a renewal statement: the target
is 1 statement per renewal period (one ``Lease.keep_alive`` per lease sent
1,000). Then ``stop()`` is timed, and the statements it sent counted: all
leases are released in one statement, and the stop returns well within its
documented bound (``STOP_TIMEOUT`` for the handlers, as long again for the release).
"""

from __future__ import annotations

import asyncio
import time

import psycopg
from psycopg import sql

from wa_session_store import Lease, PostgresStore, SessionWorker

from ._env import Config, Net, scratch_schema
from ._harness import Row, Stat

WORKLOAD = "10 One worker, 1,000 sessions"
TTL = 3.0
PERIODS = 3


def seed(dsn: str, schema: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (session_id, value, version)"
                " SELECT 'worker-' || lpad(n::text, 5, '0'), '{{}}'::bytea, 1"
                " FROM generate_series(1, %s) AS n"
            ).format(sql.Identifier(schema, "wa_creds")),
            (count,),
        )


async def _one(cfg: Config, dsn: str, schema: str, size: int) -> tuple[float, float, int]:
    """One worker run: (statements per renewal period, seconds of stop(), its statements)."""
    async with PostgresStore(dsn, schema=schema) as store:
        full = asyncio.Event()
        started: set[str] = set()

        async def handler(lease: Lease) -> None:
            started.add(lease.session_id)
            if len(started) == size:
                full.set()
            await asyncio.Event().wait()

        worker = SessionWorker(
            store, "bench-worker", handler, capacity=size, ttl=TTL, claim_batch=size
        )
        task = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(full.wait(), 60)
        await asyncio.sleep(0.2)  # the claim loop settles at capacity
        before = cfg.proxy.round_trips()
        await asyncio.sleep(TTL / 3 * PERIODS)
        period = (cfg.proxy.round_trips() - before) / PERIODS
        before = cfg.proxy.round_trips()
        t0 = time.perf_counter()
        await worker.stop()
        stop_s = time.perf_counter() - t0
        sent = cfg.proxy.round_trips() - before
        await task
    return period, stop_s, sent


async def run(cfg: Config) -> list[Row]:
    size = 200 if cfg.quick else 1_000
    net = Net(0.001)
    rows: list[Row] = []
    per_period: list[float] = []
    stops: list[float] = []
    stop_statements: list[int] = []
    with scratch_schema(cfg.dsn, "workers") as schema:
        async with PostgresStore(cfg.dsn, schema=schema):
            pass  # creates the tables
        await asyncio.to_thread(seed, cfg.dsn, schema, size)
        for _ in range(cfg.reps(3, 1)):
            period, stop_s, sent = await _one(cfg, cfg.proxied(net), schema, size)
            per_period.append(period)
            stops.append(stop_s)
            stop_statements.append(sent)
    periods = Stat(per_period, "statements")
    stop_ms = Stat([s * 1000 for s in stops], "ms")
    rows.append(
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"statements per renewal period, {size:,} sessions",
            periods,
            f"{size:,}",
            "one Lease.keep_alive per lease",
            f"{periods.median / size:.4f} x",
            "1 per period",
            periods.max <= 1.0 + 1e-9,
            f"ttl {TTL:g} s, renewed every {TTL / 3:g} s; counted at the proxy over "
            f"{PERIODS} periods at capacity (no claims)",
            extra={"kind": "renewal_statements", "size": size},
        )
    )
    rows.append(
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"stop() with {size:,} sessions",
            stop_ms,
            "",
            "",
            "",
            "1 release statement; within 2 x STOP_TIMEOUT (5 s)",
            max(stop_statements) == 1 and max(stops) < 2 * SessionWorker.STOP_TIMEOUT,
            f"statements sent by stop(): {stop_statements}; every handler cancelled and "
            "awaited, then one release of every lease",
            extra={"kind": "worker_stop", "size": size},
        )
    )
    return rows
