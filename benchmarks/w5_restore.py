"""Workload 5: restore after a deploy, ``restore_all(store, backup_interval=None)``.

100, 1,000 and 10,000 sessions (10,000 only in a full run), each with a creds
document (~2.5 KB of BufferJSON) and 50 pre-keys, seeded by binary COPY. The
store is opened first (schema check), then ``restore_all`` is timed: the creds
in bulk, one statement per page of 1,000 sessions with the next page read
while the current one is decoded (``iter_creds_pages``), over a pool of
max_size 10, starting with the connections a fresh process has. Target: at
most 2x one raw ``SELECT`` of the same rows.

Baselines, on a raw psycopg connection through the same proxy: one ``SELECT``
of every creds row (bytes only), and the same plus decoding every document
with the garbage collector paused, as ``restore_all`` decodes (the floor of a
bulk-load design: building the documents in CPython costs a few times the
``SELECT`` by itself). While restoring, a monitor samples
``pg_stat_activity`` and the pool's
``get_stats()`` every 10 ms. The store gets an application_name of its own
(``wa_session_store-bench-<random>``, one per repetition): other clients of a
shared server use the default ``wa_session_store`` and must not be counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from wa_session_store import PostgresStore, close_all, restore_all
from wa_session_store.store.codec import (
    DEFAULT_MAX_VALUE_SIZE,
    decode_value,
    encode_creds,
    encode_key_batch,
)
from wa_session_store.store.rows import collector_paused

from ._env import Config, Net, make_creds, make_prekeys, scratch_schema
from ._harness import Row, Stat, Timer, ratios

WORKLOAD = "5 Restore after deploy"
KEYS_PER_SESSION = 50
MAX_SIZE = 10
TARGET = 2.0  # restore_all at most this many times one raw SELECT of the creds rows + decoding


def seed(dsn: str, schema: str, first: int, last: int, cfg: Config) -> None:
    """Add sessions ``first..last-1`` (creds + 50 pre-keys each) by binary COPY."""
    keys = make_prekeys(cfg.rng, KEYS_PER_SESSION)["pre-key"]
    encoded = encode_key_batch({"pre-key": keys}, max_size=DEFAULT_MAX_VALUE_SIZE)
    creds_t = sql.Identifier(schema, "wa_creds")
    keys_t = sql.Identifier(schema, "wa_keys")
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                sql.SQL("COPY {} (session_id, value, version) FROM STDIN (FORMAT BINARY)").format(
                    creds_t
                )
            ) as cp:
                cp.set_types(["text", "bytea", "int8"])
                for i in range(first, last):
                    sid = f"restore-{i:05d}"
                    blob = encode_creds(
                        make_creds(cfg.rng, i), session_id=sid, max_size=DEFAULT_MAX_VALUE_SIZE
                    )
                    cp.write_row((sid, blob, time.time_ns()))
            with cur.copy(
                sql.SQL(
                    "COPY {} (session_id, category, key_id, value) FROM STDIN (FORMAT BINARY)"
                ).format(keys_t)
            ) as cp:
                cp.set_types(["text", "text", "text", "bytea"])
                for i in range(first, last):
                    sid = f"restore-{i:05d}"
                    for category, key_id, value in encoded:
                        cp.write_row((sid, category, key_id, value))
        conn.commit()
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(creds_t))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(keys_t))


class Monitor:
    """Samples the store's connections while a restore runs."""

    def __init__(self, dsn: str, store: PostgresStore, application_name: str) -> None:
        self.dsn = dsn
        self.store = store
        self.application_name = application_name
        self.max_backends = 0
        self.max_pool = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name="wa_bench_monitor"
        )
        self._task = asyncio.create_task(self._sample(conn))
        return self

    async def _sample(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            while True:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    (self.application_name,),
                )
                row = await cur.fetchone()
                self.max_backends = max(self.max_backends, int(row[0]) if row else 0)
                stats = self.store.pool.get_stats()
                self.max_pool = max(self.max_pool, stats.get("pool_size", 0))
                self.samples += 1
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def run(cfg: Config) -> list[Row]:
    sizes = [100, 1_000] if cfg.quick else [100, 1_000, 10_000]
    nets = [Net(0.001)] if cfg.quick else [Net(0.0), Net(0.001)]
    reps = {100: cfg.reps(5, 3), 1_000: cfg.reps(3, 2), 10_000: 3}
    rows: list[Row] = []
    with scratch_schema(cfg.dsn, "restore") as schema:
        async with PostgresStore(cfg.dsn, schema=schema):
            pass  # creates the tables
        seeded = 0
        for size in sizes:
            with Timer() as t:
                await asyncio.to_thread(seed, cfg.dsn, schema, seeded, size, cfg)
            seeded = size
            seed_s = t.seconds
            for net in nets:
                rows += await _measure(cfg, net, schema, size, reps[size], seed_s)
    return rows


async def _measure(
    cfg: Config, net: Net, schema: str, size: int, reps: int, seed_s: float
) -> list[Row]:
    dsn = cfg.proxied(net)
    select_all = sql.SQL("SELECT session_id, value, version FROM {}").format(
        sql.Identifier(schema, "wa_creds")
    )
    ours_t: list[float] = []
    raw_t: list[float] = []
    raw_dec_t: list[float] = []
    leased_t: list[float] = []
    close_t: list[float] = []
    leased = 0
    list_t: list[float] = []
    max_backends = max_pool = 0
    failed = restored = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw:
        for rep in range(reps + 1):  # the first is a warm-up (server caches)
            # Each timed part starts from the same heap, as a restore after a
            # deploy does (a fresh process): what the previous part built is
            # dropped and collected first, so no part pays for another's garbage.
            result = fetched = fetched_rows = docs = None
            gc.collect()
            # A name of its own: other clients of this server (a test suite, say)
            # use the default 'wa_session_store' and must not be counted.
            app = f"wa_session_store-bench-{uuid.uuid4().hex[:8]}"
            async with PostgresStore(
                dsn, schema=schema, max_size=MAX_SIZE, application_name=app
            ) as store:
                async with Monitor(cfg.dsn, store, app) as mon:
                    with Timer() as t:
                        result = await restore_all(store, backup_interval=None)
                gc.collect()
                with Timer() as cl:  # what a shutdown handler would then do
                    await close_all(result.states.values())
                restored, failed = len(result.states), len(result.failed)
                result = None
                with Timer() as ls:
                    await store.list_sessions()
                gc.collect()
                with Timer() as lt:  # under leases: a grant and a read per page
                    result = await restore_all(store, backup_interval=None, owner=app)
                await close_all(result.states.values())  # releases them: the next rep's are free
                leased = len(result.states)
                result = None
            gc.collect()
            with Timer() as r:
                cur = await raw.execute(select_all, binary=True)
                fetched = await cur.fetchall()
            assert len(fetched) == size
            fetched = None
            gc.collect()
            with Timer() as rd:
                cur = await raw.execute(select_all, binary=True)
                fetched_rows = await cur.fetchall()
                with collector_paused():  # as restore_all decodes: the fair floor
                    docs = {sid: decode_value(v, what="x") for sid, v, _ in fetched_rows}
            assert len(docs) == size
            if rep == 0:
                continue
            ours_t.append(t.seconds)
            leased_t.append(lt.seconds)
            raw_t.append(r.seconds)
            raw_dec_t.append(rd.seconds)
            list_t.append(ls.seconds)
            close_t.append(cl.seconds)
            max_backends = max(max_backends, mon.max_backends)
            max_pool = max(max_pool, mon.max_pool)
    ours = Stat(ours_t, "s")
    setup = f"PostgreSQL, {net.name}"
    ok = (
        restored == size
        and failed == 0
        and max(max_backends, max_pool) <= MAX_SIZE
        and ratios(ours_t, raw_dec_t).median <= TARGET
    )
    decoding = Stat([(rd - r) / r for rd, r in zip(raw_dec_t, raw_t, strict=True)], "x")
    return [
        Row(
            WORKLOAD,
            setup,
            f"restore_all, {size:,} sessions",
            ours,
            Stat([v * 1000 for v in raw_dec_t], "ms"),
            "one raw SELECT + decoding every creds document",
            ratios(ours_t, raw_dec_t),
            f"<= {TARGET:g}x; connections <= max_size {MAX_SIZE}",
            ok,
            "the floor of any restore that hands back decoded creds (one query, then "
            f"decode); {restored:,} restored, {failed} failed; connections seen: pg_stat_activity "
            f"max {max_backends}, pool_size max {max_pool}; "
            f"{size / ours.median:,.0f} sessions/s; close_all() of them afterwards "
            f"{Stat([v * 1000 for v in close_t], 'ms').fmt()}; list_sessions() alone "
            f"(the old restore's first step) {Stat([v * 1000 for v in list_t], 'ms').fmt()}; "
            f"seeding took {seed_s:.1f} s",
            extra={
                "net_ms": net.ms,
                "kind": "restore",
                "size": size,
                "max_backends": max_backends,
                "max_pool": max_pool,
            },
        ),
        Row(
            WORKLOAD,
            setup,
            f"restore_all(owner=...), {size:,} sessions",
            Stat(leased_t, "s"),
            Stat([v * 1000 for v in raw_dec_t], "ms"),
            "one raw SELECT + decoding every creds document",
            ratios(leased_t, raw_dec_t),
            "",
            None,
            f"every session leased: one grant and one read of the creds a page, the next "
            f"page granted and read while one decodes; {leased:,} restored; "
            f"{ratios(leased_t, ours_t).fmt()} restore_all without leases",
            extra={"net_ms": net.ms, "kind": "restore_leased", "size": size},
        ),
        Row(
            WORKLOAD,
            setup,
            f"restore_all, {size:,} sessions",
            ours,
            Stat([v * 1000 for v in raw_t], "ms"),
            "one raw SELECT of all creds rows",
            ratios(ours_t, raw_t),
            "",
            None,
            f"bytes only; decoding the documents alone takes {decoding.fmt()} the SELECT, "
            "so no restore that decodes them can come within 2x of it",
            extra={"net_ms": net.ms, "kind": "restore_select", "size": size},
        ),
    ]
