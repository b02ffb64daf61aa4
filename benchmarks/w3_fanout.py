"""Workload 3: group send fan-out, ``get_keys`` of 500 Signal sessions in one call.

Sending to a group of 500 devices reads 500 session records (about 1 KB of
BufferJSON each). Ours: ``store.get_keys(sid, "session", ids)``, decoding
included. Baseline: the raw ``= ANY(%s)`` query through psycopg (binary),
rows fetched but not decoded.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from wa_session_store import PostgresStore
from wa_session_store.store.codec import decode_value

from ._env import Config, Net, make_session_record, scratch_schema
from ._harness import Row, Stat, Timer, interleaved, ratios

WORKLOAD = "3 Group fan-out"
N_IDS = 500
SID = "fanout"


def ids() -> list[str]:
    return [f"{5511900000000 + i}.{i % 3}" for i in range(N_IDS)]


async def run(cfg: Config) -> list[Row]:
    rows: list[Row] = []
    reps = cfg.reps(15, 5)
    wanted = ids()
    records = {key_id: make_session_record(cfg.rng) for key_id in wanted}
    with scratch_schema(cfg.dsn, "fanout") as schema:
        async with PostgresStore(cfg.dsn, schema=schema) as seeder:
            await seeder.set_keys(SID, {"session": records})
        query = sql.SQL(
            "SELECT key_id, value FROM {keys}"
            " WHERE session_id = %s AND category = %s AND key_id = ANY(%s)"
        ).format(keys=sql.Identifier(schema, "wa_keys"))
        for net in cfg.nets:
            rows += await _one_net(cfg, net, schema, query, wanted, reps)
    return rows


async def _one_net(
    cfg: Config, net: Net, schema: str, query: sql.Composed, wanted: list[str], reps: int
) -> list[Row]:
    dsn = cfg.proxied(net)
    blobs: list[bytes] = []
    async with (
        PostgresStore(dsn, schema=schema) as store,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw,
    ):

        async def ours(rep: int) -> float:
            with Timer() as t:
                got = await store.get_keys(SID, "session", wanted)
            assert len(got) == N_IDS
            assert all(v is not None for v in got.values())
            return t.seconds

        async def baseline(rep: int) -> float:
            with Timer() as t:
                cur = await raw.execute(query, (SID, "session", wanted), binary=True)
                rows = await cur.fetchall()
            assert len(rows) == N_IDS
            blobs[:] = [r[1] for r in rows]
            return t.seconds

        async def same_work(rep: int) -> float:
            with Timer() as t:
                cur = await raw.execute(query, (SID, "session", wanted), binary=True)
                found: dict[str, bytes] = dict(await cur.fetchall())
                got = {k: decode_value(found[k], what="x") if k in found else None for k in wanted}
            assert len(got) == N_IDS
            return t.seconds

        # Enough warm-up for psycopg to prepare the statements on both the
        # store's connections (6th execution) before measuring.
        times = await interleaved(
            {"ours": ours, "raw": baseline, "raw_decode": same_work}, reps, warmup=12
        )

    dec: list[float] = []
    for _ in range(reps):
        with Timer() as t:
            for blob in blobs:
                decode_value(blob, what="x")
        dec.append(t.seconds * 1000)
    decode = Stat(dec, "ms")
    ours_s = Stat([v * 1000 for v in times["ours"]], "ms")
    raw_s = Stat([v * 1000 for v in times["raw"]], "ms")
    ratio = ratios(times["ours"], times["raw"])
    same = ratios(times["ours"], times["raw_decode"])
    without = Stat(
        [
            (o * 1000 - decode.median) / (r * 1000)
            for o, r in zip(times["ours"], times["raw"], strict=True)
        ],
        "x",
    )
    return [
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"get_keys {N_IDS} session records",
            ours_s,
            raw_s,
            "raw psycopg = ANY(%s), binary, not decoded",
            ratio,
            "",
            None,
            f"decoding {decode.fmt()} = {decode.median / ours_s.median:.0%} of ours; "
            f"ours without decoding: {without.fmt()}",
            extra={"net_ms": net.ms, "kind": "fanout", "decode_ms": decode.median},
        ),
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"get_keys {N_IDS} session records",
            ours_s,
            Stat([v * 1000 for v in times["raw_decode"]], "ms"),
            "raw psycopg = ANY(%s) + the same BufferJSON decoding",
            same,
            "<= 1.3x",
            same.median <= 1.3,
            "same work: what the library adds beyond the query and the codec",
            extra={"net_ms": net.ms, "kind": "fanout_same"},
        ),
    ]
