"""Workload 7: the SQLite default, first pairing and message traffic.

The file lives in a temporary directory on the same disk as /tmp; both the
store and the baselines use WAL and ``synchronous=NORMAL`` (the store's
settings). Baselines use the stdlib ``sqlite3`` directly, values already
encoded:

* pairing: ``executemany`` of the same upsert in one ``BEGIN IMMEDIATE``
  transaction, called synchronously on the loop thread (the driver's best);
* traffic: the same operations (writes in a ``BEGIN IMMEDIATE`` transaction,
  reads with ``json_each``), called synchronously, and once more through a
  one-thread executor as the store does (so that the event loop never blocks
  on disk): the difference between the two is the thread hop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wa_session_store import SQLiteStore
from wa_session_store.store.codec import DEFAULT_MAX_VALUE_SIZE, decode_value, encode_key_batch

from . import w2_traffic
from ._env import Config, make_prekeys, make_session_record
from ._harness import Row, Stat, Timer, interleaved, ratios

WORKLOAD = "7 SQLite default"
OpRunner = Callable[[w2_traffic.Op], Awaitable[None]]
Contender = Callable[[int], Awaitable[float]]
N_KEYS = 812

UPSERT = (
    "INSERT INTO wa_keys (session_id, category, key_id, value, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, category, key_id)"
    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
SELECT = (
    "SELECT key_id, value FROM wa_keys WHERE session_id = ? AND category = ?"
    " AND key_id IN (SELECT value FROM json_each(?))"
)


def _raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _write(conn: sqlite3.Connection, rows: list[tuple[str, str, str, bytes | None, float]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(UPSERT, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


async def run(cfg: Config) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="wa_bench_sqlite_") as tmp:
        path = Path(tmp) / "wa_sessions.db"
        async with SQLiteStore(path) as store:
            raw = _raw_connect(path)
            try:
                rows = await _pairing(cfg, store, raw)
                rows += await _traffic(cfg, store, raw)
            finally:
                raw.close()
    return rows


async def _pairing(cfg: Config, store: SQLiteStore, raw: sqlite3.Connection) -> list[Row]:
    data = make_prekeys(cfg.rng, N_KEYS)
    encoded = encode_key_batch(data, max_size=DEFAULT_MAX_VALUE_SIZE)
    counter = iter(range(10**9))

    async def ours(rep: int) -> float:
        sid = f"pair-ours-{next(counter)}"
        with Timer() as t:
            await store.set_keys(sid, data)
        return t.seconds

    async def executemany(rep: int) -> float:
        sid = f"pair-raw-{next(counter)}"
        with Timer() as t:
            now = time.time()
            _write(raw, [(sid, c, k, v, now) for c, k, v in encoded])
        return t.seconds

    async def loop(rep: int) -> float:
        sid = f"pair-loop-{next(counter)}"
        with Timer() as t:
            for c, k, v in encoded:
                raw.execute(UPSERT, (sid, c, k, v, time.time()))
        return t.seconds

    reps = cfg.reps(15, 5)
    times = await interleaved({"ours": ours, "raw": executemany, "loop": loop}, reps)
    ours_s = Stat([v * 1000 for v in times["ours"]], "ms")
    ratio = ratios(times["ours"], times["raw"])
    enc: list[float] = []
    for _ in range(reps):
        with Timer() as t:
            encode_key_batch(data, max_size=DEFAULT_MAX_VALUE_SIZE)
        enc.append(t.seconds * 1000)
    enc_s = Stat(enc, "ms")
    return [
        Row(
            WORKLOAD,
            "SQLite file (WAL)",
            f"set_keys {N_KEYS} pre-keys",
            ours_s,
            Stat([v * 1000 for v in times["raw"]], "ms"),
            "raw sqlite3 executemany, 1 transaction",
            ratio,
            "",
            None,
            f"encoding {enc_s.fmt()} = {enc_s.median / ours_s.median:.0%} of ours",
            extra={"kind": "sqlite_pairing"},
        ),
        Row(
            WORKLOAD,
            "SQLite file (WAL)",
            f"set_keys {N_KEYS} pre-keys",
            ours_s,
            Stat([v * 1000 for v in times["loop"]], "ms"),
            "per-key autocommit upsert loop",
            ratios(times["loop"], times["ours"], "x faster"),
            "",
            None,
            "ratio = loop / ours",
            extra={"kind": "sqlite_pairing_loop"},
        ),
    ]


async def _traffic(cfg: Config, store: SQLiteStore, raw: sqlite3.Connection) -> list[Row]:
    per_session = cfg.reps(20, 10)
    plans = w2_traffic.make_ops(cfg.rng, w2_traffic.SESSIONS, per_session)
    n_ops = w2_traffic.SESSIONS * per_session
    record = make_session_record(cfg.rng)
    for s in range(w2_traffic.SESSIONS):
        await store.set_keys(
            f"traffic-{s}",
            {
                "session": {
                    f"{5511900000000 + i}.0": record for i in range(w2_traffic.RECORDS_PER_SESSION)
                }
            },
        )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-sqlite")

    def raw_sync(op: w2_traffic.Op) -> None:
        if op.kind == "set":
            assert op.cats is not None
            assert op.key_ids is not None
            assert op.values is not None
            now = time.time()
            _write(
                raw,
                [
                    (op.session_id, c, k, v, now)
                    for c, k, v in zip(op.cats, op.key_ids, op.values, strict=True)
                ],
            )
        else:
            raw.execute(SELECT, (op.session_id, "session", json.dumps(op.ids))).fetchall()

    async def ours_op(op: w2_traffic.Op) -> None:
        if op.kind == "set":
            assert op.data is not None
            await store.set_keys(op.session_id, op.data)
        else:
            assert op.ids is not None
            await store.get_keys(op.session_id, "session", op.ids)

    async def sync_op(op: w2_traffic.Op) -> None:
        raw_sync(op)

    def raw_codec(op: w2_traffic.Op) -> None:
        if op.kind == "set":
            now = time.time()
            rows = encode_key_batch(op.data, max_size=DEFAULT_MAX_VALUE_SIZE)
            _write(raw, [(op.session_id, c, k, v, now) for c, k, v in rows])
        else:
            found = dict(
                raw.execute(SELECT, (op.session_id, "session", json.dumps(op.ids))).fetchall()
            )
            for key_id in op.ids or ():
                if key_id in found:
                    decode_value(found[key_id], what="x")

    loop = asyncio.get_running_loop()

    async def codec_op(op: w2_traffic.Op) -> None:
        await loop.run_in_executor(executor, raw_codec, op)

    async def thread_op(op: w2_traffic.Op) -> None:
        await loop.run_in_executor(executor, raw_sync, op)

    results: dict[str, list[tuple[float, list[float]]]] = {
        "ours": [],
        "sync": [],
        "thread": [],
        "codec": [],
    }

    def contender(name: str, fn: OpRunner) -> Contender:
        async def go(rep: int) -> float:
            elapsed, lat = await w2_traffic.drive(plans, fn)
            if rep >= 0:
                results[name].append((elapsed, lat))
            return elapsed

        return go

    try:
        await interleaved(
            {
                "ours": contender("ours", ours_op),
                "sync": contender("sync", sync_op),
                "thread": contender("thread", thread_op),
                "codec": contender("codec", codec_op),
            },
            cfg.reps(5, 2),
        )
    finally:
        executor.shutdown(wait=True)
    return w2_traffic.traffic_rows(
        WORKLOAD,
        "SQLite file (WAL)",
        results,
        [
            ("thread", "raw sqlite3 through a 1-thread executor (as the store)", True),
            ("sync", "raw sqlite3, synchronous on the loop thread (blocks it)", False),
            ("codec", "raw sqlite3 in the executor + the same BufferJSON codec", False),
        ],
        n_ops,
        None,
        "same op mix as workload 2; calls queue on the store's single thread",
    )
