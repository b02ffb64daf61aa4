"""Workload 1: first pairing, 812 pre-keys written by one ``set_keys`` call (PostgreSQL).

Contenders, each writing the same 812 rows for a fresh session id (inserts):

* ours: ``store.set_keys(sid, {"pre-key": {...}})``, validation and BufferJSON
  encoding included;
* raw unnest: psycopg alone, the rows already encoded, one autocommit
  ``INSERT ... SELECT FROM unnest(%b::text[], %b::text[], %b::bytea[]) ON
  CONFLICT DO UPDATE``;
* raw COPY: binary COPY into a temp table, then ``INSERT ... SELECT``, in one
  transaction (BEGIN, COPY, INSERT, COMMIT);
* per-key loop: one autocommit upsert per key (the design of most community
  stores), rows already encoded, on a dedicated connection: its most
  favourable form.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from wa_session_store import PostgresStore
from wa_session_store.store.codec import DEFAULT_MAX_VALUE_SIZE, encode_key_batch

from ._env import Config, Net, make_prekeys, scratch_schema
from ._harness import Row, Stat, Timer, interleaved, ratios

N_KEYS = 812
WORKLOAD = "1 First pairing"


def statements(schema: str) -> dict[str, sql.Composed]:
    keys = sql.Identifier(schema, "wa_keys")
    upsert_tail = (
        " ON CONFLICT (session_id, category, key_id)"
        " DO UPDATE SET value = excluded.value, updated_at = now()"
    )
    return {
        "unnest": sql.SQL(
            "INSERT INTO {keys} (session_id, category, key_id, value)"
            " SELECT %s, c, k, v FROM unnest(%b::text[], %b::text[], %b::bytea[]) AS b(c, k, v)"
            + upsert_tail
        ).format(keys=keys),
        "copy_insert": sql.SQL(
            "INSERT INTO {keys} (session_id, category, key_id, value)"
            " SELECT %s, category, key_id, value FROM bench_stage" + upsert_tail
        ).format(keys=keys),
        "single": sql.SQL(
            "INSERT INTO {keys} (session_id, category, key_id, value) VALUES (%s, %s, %s, %b)"
            + upsert_tail
        ).format(keys=keys),
        "truncate": sql.SQL("TRUNCATE {keys}").format(keys=keys),
    }


async def run(cfg: Config) -> list[Row]:
    rows_out: list[Row] = []
    data = make_prekeys(cfg.rng, N_KEYS)
    encoded = encode_key_batch(data, max_size=DEFAULT_MAX_VALUE_SIZE)
    cats = [r[0] for r in encoded]
    ids = [r[1] for r in encoded]
    vals = [r[2] for r in encoded]
    reps = cfg.reps(15, 5)

    # Encoding alone (validation + BufferJSON), measured in the same run.
    enc_times: list[float] = []
    for _ in range(reps * 2):
        with Timer() as t:
            encode_key_batch(data, max_size=DEFAULT_MAX_VALUE_SIZE)
        enc_times.append(t.seconds)
    enc = Stat([s * 1000 for s in enc_times], "ms")

    with scratch_schema(cfg.dsn, "pairing") as schema:
        stm = statements(schema)
        for net in cfg.nets:
            rows_out += await _one_net(cfg, net, schema, stm, data, cats, ids, vals, enc, reps)
    return rows_out


async def _one_net(
    cfg: Config,
    net: Net,
    schema: str,
    stm: dict[str, sql.Composed],
    data: dict[str, Any],
    cats: list[str],
    ids: list[str],
    vals: list[bytes | None],
    enc: Stat,
    reps: int,
) -> list[Row]:
    dsn = cfg.proxied(net)
    counter = iter(range(10**9))

    def sid(kind: str) -> str:
        return f"pair-{kind}-{net.ms:g}-{next(counter)}"

    async with (
        PostgresStore(dsn, schema=schema) as store,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw_copy,
    ):
        await raw_copy.execute(
            "CREATE TEMP TABLE bench_stage (category text, key_id text, value bytea)"
            " ON COMMIT DELETE ROWS"
        )

        async def ours(rep: int) -> float:
            s = sid("ours")
            with Timer() as t:
                await store.set_keys(s, data)
            return t.seconds

        async def unnest(rep: int) -> float:
            s = sid("unnest")
            with Timer() as t:
                await raw.execute(stm["unnest"], (s, cats, ids, vals))
            return t.seconds

        async def same_work(rep: int) -> float:
            s = sid("enc")
            with Timer() as t:
                rows = encode_key_batch(data, max_size=DEFAULT_MAX_VALUE_SIZE)
                await raw.execute(
                    stm["unnest"],
                    (s, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
                )
            return t.seconds

        async def copy(rep: int) -> float:
            s = sid("copy")
            with Timer() as t:
                async with raw_copy.transaction():
                    cur = raw_copy.cursor()
                    async with cur.copy(
                        "COPY bench_stage (category, key_id, value) FROM STDIN (FORMAT BINARY)"
                    ) as cp:
                        cp.set_types(["text", "text", "bytea"])
                        for row in zip(cats, ids, vals, strict=True):
                            await cp.write_row(row)
                    await raw_copy.execute(stm["copy_insert"], (s,))
            return t.seconds

        async def loop(rep: int) -> float:
            s = sid("loop")
            with Timer() as t:
                for c, k, v in zip(cats, ids, vals, strict=True):
                    await raw.execute(stm["single"], (s, c, k, v))
            return t.seconds

        times = await interleaved(
            {"ours": ours, "unnest": unnest, "copy": copy, "same": same_work}, reps
        )
        # The per-key loop costs 812 round trips: fewer repetitions, and none
        # warm-up beyond the first statement preparation it does itself.
        loop_reps = {0.0: cfg.reps(5, 2), 0.001: cfg.reps(3, 1)}.get(net.delay, cfg.reps(2, 1))
        if cfg.quick and net.delay > 0.001:
            loop_reps = 0
        loop_times = (
            await interleaved({"loop": loop, "ours": ours}, loop_reps, warmup=0)
            if loop_reps
            else {}
        )
        await raw.execute(stm["truncate"])

    ms = 1000.0
    ours_s = Stat([v * ms for v in times["ours"]], "ms")
    unnest_s = Stat([v * ms for v in times["unnest"]], "ms")
    copy_s = Stat([v * ms for v in times["copy"]], "ms")
    best = [min(u, c) for u, c in zip(times["unnest"], times["copy"], strict=True)]
    vs_unnest = ratios(times["ours"], times["unnest"])
    vs_best = ratios(times["ours"], best)
    share = enc.median / ours_s.median
    without = Stat(
        [
            (o * ms - enc.median) / (u * ms)
            for o, u in zip(times["ours"], times["unnest"], strict=True)
        ],
        "x",
    )
    rows = [
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"set_keys {N_KEYS} pre-keys",
            ours_s,
            unnest_s,
            "raw psycopg unnest, 1 statement",
            vs_unnest,
            "",
            None,
            f"rows already encoded; encoding {enc.fmt()} = {share:.0%} of ours; ours without "
            f"encoding: {without.fmt()}",
            extra={"net_ms": net.ms, "encode_ms": enc.median, "kind": "pairing"},
        ),
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"set_keys {N_KEYS} pre-keys",
            ours_s,
            copy_s,
            "raw psycopg COPY + INSERT, 1 transaction",
            ratios(times["ours"], times["copy"]),
            "",
            None,
            f"vs best of unnest/COPY per repetition: {vs_best.fmt()}",
            extra={"net_ms": net.ms, "kind": "pairing_copy"},
        ),
    ]
    vs_same = ratios(times["ours"], times["same"])
    rows.append(
        Row(
            WORKLOAD,
            f"PostgreSQL, {net.name}",
            f"set_keys {N_KEYS} pre-keys",
            ours_s,
            Stat([v * ms for v in times["same"]], "ms"),
            "raw unnest + the same BufferJSON encoding",
            vs_same,
            "<= 1.3x",
            vs_same.median <= 1.3,
            "same work: what the library adds beyond the statement and the codec",
            extra={"net_ms": net.ms, "kind": "pairing_same"},
        )
    )
    if loop_times:
        speedup = ratios(loop_times["loop"], loop_times["ours"], "x faster")
        rows.append(
            Row(
                WORKLOAD,
                f"PostgreSQL, {net.name}",
                f"set_keys {N_KEYS} pre-keys",
                Stat([v * ms for v in loop_times["ours"]], "ms"),
                Stat([v * ms for v in loop_times["loop"]], "ms"),
                f"per-key autocommit upsert loop ({N_KEYS} round trips)",
                speedup,
                ">= 50x faster at 1 ms" if net.delay == 0.001 else "",
                speedup.median >= 50 if net.delay == 0.001 else None,
                "ratio = loop / ours",
                extra={"net_ms": net.ms, "kind": "pairing_loop"},
            )
        )
    return rows
