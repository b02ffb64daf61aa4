"""Workload 11: capacity, on a database of 5 million key rows.

``--scale 1.0`` (the default) seeds 5,000 sessions of 1,000 keys each (800
pre-keys of ~130 B and 200 Signal session records of ~1 KB, as a bot has
after a few weeks), about 2 GB with indexes; ``--quick`` uses 0.02. Rows are
generated on the server (``INSERT ... SELECT``) with the primary key dropped
and rebuilt afterwards, so seeding costs minutes, not an hour. On it:

- per-call latency (``get_keys`` of 20 ids, ``set_keys`` of 2 records,
  ``load_creds``) of random sessions, interleaved with the same calls on an
  otherwise empty schema holding 20 sessions of the same shape; the ratio is
  the degradation with size (limit: 1.5x);
- ``restore_all`` of every session;
- claim throughput of 4 worker processes (``claim_sessions``, 10 at a time),
  started together, until every session is leased;
- table and index size per session, and WAL bytes per ``set_keys`` of two
  records (the server is shared: WAL of other clients inflates it).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from wa_session_store import PostgresStore, close_all, restore_all
from wa_session_store.store.codec import DEFAULT_MAX_VALUE_SIZE, encode_creds, encode_key_batch

from ._env import Config, Net, make_creds, make_prekeys, make_session_record, scratch_schema
from ._harness import Row, Stat, Timer, ratios

WORKLOAD = "11 Capacity"
FULL_SESSIONS = 5_000
PREKEYS = 800
RECORDS = 200
SMALL_SESSIONS = 20
CALLS = 300
WORKERS = 4
DEGRADATION_LIMIT = 1.5


def _blobs(cfg: Config) -> tuple[bytes, bytes, bytes]:
    prekey = encode_key_batch(make_prekeys(cfg.rng, 1), max_size=DEFAULT_MAX_VALUE_SIZE)[0][2]
    record = encode_key_batch(
        {"session": {"x": make_session_record(cfg.rng)}}, max_size=DEFAULT_MAX_VALUE_SIZE
    )[0][2]
    creds = encode_creds(make_creds(cfg.rng), session_id="x", max_size=DEFAULT_MAX_VALUE_SIZE)
    assert prekey is not None
    assert record is not None
    return prekey, record, creds


def seed(dsn: str, schema: str, sessions: int, blobs: tuple[bytes, bytes, bytes]) -> float:
    """``sessions`` sessions of PREKEYS + RECORDS keys, generated on the server; seconds."""
    prekey, record, creds = blobs
    creds_t = sql.Identifier(schema, "wa_creds")
    keys_t = sql.Identifier(schema, "wa_keys")
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                keys_t, sql.Identifier("wa_keys_pkey")
            )
        )
        sid = "'cap-' || lpad(s::text, 6, '0')"
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (session_id, value, version)"
                " SELECT " + sid + ", %s, 1 FROM generate_series(1, %s::int) AS s"
            ).format(creds_t),
            (creds, sessions),
        )
        step = 250
        for first in range(1, sessions + 1, step):
            last = min(sessions, first + step - 1)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (session_id, category, key_id, value)"
                    " SELECT " + sid + ", 'pre-key', k::text, %s"
                    " FROM generate_series(%s::int, %s::int) AS s, generate_series(1, %s::int) AS k"
                    " UNION ALL SELECT " + sid + ", 'session', '55119' || k || '.0', %s"
                    " FROM generate_series(%s::int, %s::int) AS s, generate_series(1, %s::int) AS k"
                ).format(keys_t),
                (prekey, first, last, PREKEYS, record, first, last, RECORDS),
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (session_id, category, key_id)").format(keys_t)
        )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(keys_t))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(creds_t))
    return time.perf_counter() - started


def _claim_worker(dsn: str, schema: str, owner: str, ready: Any, go: Any, out: Any) -> None:
    async def claim() -> tuple[int, float]:
        async with PostgresStore(dsn, schema=schema, max_size=2) as store:
            await store.schema_version()  # connected
            ready.put(owner)
            go.wait()
            started = time.perf_counter()
            claimed = 0
            while True:
                leases = await store.claim_sessions(owner, limit=10, ttl=600)
                if not leases:
                    return claimed, time.perf_counter() - started
                claimed += len(leases)

    out.put(asyncio.run(claim()))


def claim_with_processes(dsn: str, schema: str) -> tuple[list[int], float]:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    ready = ctx.Queue()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_worker, args=(dsn, schema, f"capacity-{n}", ready, go, out))
        for n in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:  # every process imported the library and connected
        ready.get(timeout=120)
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    return [count for count, _ in results], max(elapsed for _, elapsed in results)


async def _latencies(
    store: PostgresStore, sessions: list[str], rng: random.Random, record: dict[str, Any]
) -> dict[str, float]:
    """One of each call on a random session; seconds per call."""
    sid = rng.choice(sessions)
    ids = [f"55119{rng.randint(1, RECORDS)}.0" for _ in range(20)]
    out: dict[str, float] = {}
    t = time.perf_counter()
    await store.get_keys(sid, "session", ids)
    out["get_keys (20 ids)"] = time.perf_counter() - t
    t = time.perf_counter()
    await store.set_keys(sid, {"session": {ids[0]: record, ids[1]: record}})
    out["set_keys (2 records)"] = time.perf_counter() - t
    t = time.perf_counter()
    await store.load_creds(sid)
    out["load_creds"] = time.perf_counter() - t
    return out


def sizes(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_table_size(%s), pg_indexes_size(%s), pg_table_size(%s), pg_indexes_size(%s)",
            (f"{schema}.wa_keys",) * 2 + (f"{schema}.wa_creds",) * 2,
        ).fetchone()
        assert row is not None
    return dict(zip(("keys_table", "keys_index", "creds_table", "creds_index"), row, strict=True))


async def wal_per_write(store: PostgresStore, dsn: str, sessions: list[str], record: Any) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        writes = 500
        for n in range(writes):
            sid = sessions[n % len(sessions)]
            await store.set_keys(sid, {"session": {"551191.0": record, "551192.0": record}})
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (before,))
        diff = row.fetchone()[0]  # type: ignore[index]
    return float(diff) / writes


async def run(cfg: Config) -> list[Row]:
    scale = 0.02 if cfg.quick else cfg.scale
    count = max(SMALL_SESSIONS * 2, int(FULL_SESSIONS * scale))
    blobs = _blobs(cfg)
    record = make_session_record(cfg.rng)
    net = Net(0.0)
    rows: list[Row] = []
    setup = f"PostgreSQL, {net.name}, {count:,} sessions x {PREKEYS + RECORDS:,} keys"
    with scratch_schema(cfg.dsn, "capacity") as big, scratch_schema(cfg.dsn, "empty") as small:
        for schema in (big, small):
            async with PostgresStore(cfg.dsn, schema=schema):
                pass  # creates the tables
        seed_s = await asyncio.to_thread(seed, cfg.dsn, big, count, blobs)
        await asyncio.to_thread(seed, cfg.dsn, small, SMALL_SESSIONS, blobs)
        big_ids = [f"cap-{n:06d}" for n in range(1, count + 1)]
        small_ids = big_ids[:SMALL_SESSIONS]
        size = await asyncio.to_thread(sizes, cfg.dsn, big)
        dsn = cfg.proxied(net)
        rng = random.Random(7)
        per_op: dict[str, tuple[list[float], list[float]]] = {}
        async with (
            PostgresStore(dsn, schema=big) as big_store,
            PostgresStore(dsn, schema=small) as small_store,
        ):
            for n in range(CALLS + 20):  # the first 20 warm the pools up
                pair = (
                    (big_store, big_ids, 0),
                    (small_store, small_ids, 1),
                )
                for store, ids, side in pair if n % 2 else pair[::-1]:
                    measured = await _latencies(store, ids, rng, record)
                    if n >= 20:
                        for op, seconds in measured.items():
                            per_op.setdefault(op, ([], []))[side].append(seconds * 1000)
            degraded = False
            for op, (on_big, on_small) in per_op.items():
                ratio = statistics.median(on_big) / statistics.median(on_small)
                degraded |= ratio > DEGRADATION_LIMIT
                rows.append(
                    Row(
                        WORKLOAD,
                        setup,
                        f"{op} latency, median of {CALLS}",
                        Stat([statistics.median(on_big)], "ms"),
                        Stat([statistics.median(on_small)], "ms"),
                        f"the same call on {SMALL_SESSIONS} sessions (empty database)",
                        f"{ratio:.2f} x",
                        f"<= {DEGRADATION_LIMIT:g}x",
                        ratio <= DEGRADATION_LIMIT,
                        f"p99 {sorted(on_big)[int(len(on_big) * 0.99)]:.2f} ms vs "
                        f"{sorted(on_small)[int(len(on_small) * 0.99)]:.2f} ms",
                        extra={"kind": "capacity_latency", "op": op, "ratio": ratio},
                    )
                )
            wal = await wal_per_write(big_store, cfg.dsn, big_ids, record)
        restore_t: list[float] = []
        raw_t: list[float] = []
        for _ in range(cfg.reps(2, 1)):
            async with PostgresStore(dsn, schema=big) as store:
                with Timer() as t:
                    result = await restore_all(store, backup_interval=None)
                await close_all(result.states.values())
            assert len(result.states) == count
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw:
                with Timer() as r:
                    cur = await raw.execute(
                        sql.SQL("SELECT session_id, value, version FROM {}").format(
                            sql.Identifier(big, "wa_creds")
                        ),
                        binary=True,
                    )
                    await cur.fetchall()
            restore_t.append(t.seconds)
            raw_t.append(r.seconds)
        claimed, claim_s = await asyncio.to_thread(claim_with_processes, cfg.dsn, big)
    rows.append(
        Row(
            WORKLOAD,
            setup,
            f"restore_all, {count:,} sessions",
            Stat(restore_t, "s"),
            Stat([v * 1000 for v in raw_t], "ms"),
            "one raw SELECT of all creds rows",
            ratios(restore_t, raw_t),
            "",
            None,
            f"{count / statistics.median(restore_t):,.0f} sessions/s",
            extra={"kind": "capacity_restore"},
        )
    )
    rows.append(
        Row(
            WORKLOAD,
            setup,
            f"claim throughput, {WORKERS} worker processes",
            Stat([sum(claimed) / claim_s], "sessions/s"),
            "",
            "",
            "",
            "every session leased once",
            sum(claimed) == count,
            f"claimed per process {claimed} in {claim_s:.2f} s (claim_sessions, 10 at a time)",
            extra={"kind": "capacity_claims", "claimed": claimed, "seconds": claim_s},
        )
    )
    per_session = {k: v / count for k, v in size.items()}
    rows.append(
        Row(
            WORKLOAD,
            setup,
            "stored bytes per session",
            Stat([sum(per_session.values()) / 1024], "KiB"),
            "",
            "",
            "",
            "",
            None,
            f"keys table {per_session['keys_table'] / 1024:,.0f} KiB + index "
            f"{per_session['keys_index'] / 1024:,.0f} KiB, creds {per_session['creds_table']:,.0f}"
            f" B + index {per_session['creds_index']:,.0f} B; whole database "
            f"{sum(size.values()) / 2**30:.2f} GiB; WAL {wal / 1024:.1f} KiB per set_keys of "
            f"2 records; seeding took {seed_s:.0f} s; latency degradation over "
            f"{DEGRADATION_LIMIT:g}x: {'yes' if degraded else 'no'}",
            extra={"kind": "capacity_size", "bytes": size, "wal_per_write": wal, "count": count},
        )
    )
    return rows
