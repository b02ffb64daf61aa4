"""Workload 2: message traffic, and round trips per call (PostgreSQL).

Traffic: 100 sessions at once, each running its own sequence of small
``set_keys`` (1-3 session records, ~1 KB each) and ``get_keys`` (1-50 ids,
some absent), half and half, through the store's default pool (max_size 10).
The baseline runs the same operations, values already encoded, as raw psycopg
statements over an ``AsyncConnectionPool`` of the same size and settings.

Metrics overhead: the same traffic on stores with a ``PrometheusMetrics``
exporter (a registry of its own) and an ``OpenTelemetryMetrics`` one (an SDK
provider with an in-memory reader), interleaved with the plain store. Measured
as the client process's CPU time per operation, which other load on a shared
machine disturbs far less than wall-clock throughput. On a shared 2-core
machine even that moves by several percent between repetitions, so the
verdict uses the instrumentation's own cost, measured in the same run: the
CPU time per call of ``MemoryStore.get_keys`` with the exporter minus without
it (interleaved, 20,000 calls a round), divided by the CPU time per operation
of the plain store on PostgreSQL. Target: under 3%.

Round trips: single calls at 5 ms one-way delay; ``elapsed / (2 * delay)``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from psycopg import sql

from wa_session_store import MemoryStore, PostgresStore, use_auth_state
from wa_session_store.metrics import Metrics, OpenTelemetryMetrics, PrometheusMetrics
from wa_session_store.store.codec import DEFAULT_MAX_VALUE_SIZE, decode_value, encode_key_batch

from ._env import Config, Net, make_creds, make_prekeys, make_session_record, scratch_schema
from ._harness import Row, Stat, Timer, interleaved, percentile, ratios

WORKLOAD = "2 Message traffic"
RT_WORKLOAD = "2 Round trips per call"
SESSIONS = 100
METRICS_OVERHEAD = 0.03  # the most throughput an enabled exporter may cost
RECORDS_PER_SESSION = 60  # ids 0..59 exist; reads ask for ids up to 79


@dataclass
class Op:
    """One traffic operation, in library form and pre-encoded raw form."""

    kind: str  # "set" or "get"
    session_id: str
    data: dict[str, Any] | None = None
    ids: list[str] | None = None
    cats: list[str] | None = None
    key_ids: list[str] | None = None
    values: list[bytes | None] | None = None


def make_ops(rng: random.Random, sessions: int, per_session: int) -> list[list[Op]]:
    records = [make_session_record(rng) for _ in range(40)]
    plans: list[list[Op]] = []
    for s in range(sessions):
        sid = f"traffic-{s}"
        ops: list[Op] = []
        for _ in range(per_session):
            if rng.random() < 0.5:
                chosen = rng.sample(range(RECORDS_PER_SESSION), rng.randint(1, 3))
                data = {"session": {f"{5511900000000 + i}.0": rng.choice(records) for i in chosen}}
                rows = encode_key_batch(data, max_size=DEFAULT_MAX_VALUE_SIZE)
                ops.append(
                    Op(
                        "set",
                        sid,
                        data=data,
                        cats=[r[0] for r in rows],
                        key_ids=[r[1] for r in rows],
                        values=[r[2] for r in rows],
                    )
                )
            else:
                chosen = rng.sample(range(RECORDS_PER_SESSION + 20), rng.randint(1, 50))
                ops.append(Op("get", sid, ids=[f"{5511900000000 + i}.0" for i in chosen]))
        plans.append(ops)
    return plans


def raw_statements(schema: str) -> dict[str, sql.Composed]:
    keys = sql.Identifier(schema, "wa_keys")
    return {
        "set": sql.SQL(
            "INSERT INTO {keys} (session_id, category, key_id, value)"
            " SELECT %s, c, k, v FROM unnest(%b::text[], %b::text[], %b::bytea[]) AS b(c, k, v)"
            " ON CONFLICT (session_id, category, key_id)"
            " DO UPDATE SET value = excluded.value, updated_at = now()"
        ).format(keys=keys),
        "get": sql.SQL(
            "SELECT key_id, value FROM {keys}"
            " WHERE session_id = %s AND category = %s AND key_id = ANY(%s)"
        ).format(keys=keys),
    }


async def seed(store: PostgresStore, rng: random.Random) -> None:
    record = make_session_record(rng)
    for s in range(SESSIONS):
        await store.set_keys(
            f"traffic-{s}",
            {"session": {f"{5511900000000 + i}.0": record for i in range(RECORDS_PER_SESSION)}},
        )


async def drive(
    plans: list[list[Op]], run_op: Callable[[Op], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run every session's plan concurrently; return (elapsed, per-op latencies)."""
    latencies: list[float] = []

    async def session(ops: list[Op]) -> None:
        for op in ops:
            t0 = time.perf_counter()
            await run_op(op)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(session(ops) for ops in plans))
    return time.perf_counter() - start, latencies


def traffic_rows(
    workload: str,
    setup: str,
    per_rep: dict[str, list[tuple[float, list[float]]]],
    baselines: list[tuple[str, str, bool]],
    n_ops: int,
    net_ms: float | None,
    wait_note: str,
) -> list[Row]:
    """Rows for ``per_rep["ours"]`` against each ``(key, name, with_latency)`` baseline."""

    def ops_s(name: str) -> Stat:
        return Stat([n_ops / e for e, _ in per_rep[name]], "ops/s")

    def pct(name: str, q: float) -> Stat:
        return Stat([percentile(lat, q) * 1000 for _, lat in per_rep[name]], "ms")

    ours = ops_s("ours")
    rows: list[Row] = []
    for key, name, _ in baselines:
        raw = ops_s(key)
        rows.append(
            Row(
                workload,
                setup,
                f"throughput, {SESSIONS} sessions, {n_ops} ops",
                ours,
                raw,
                name,
                ratios(ours.values, raw.values, "x of raw"),
                "",
                None,
                "ratio = ours / baseline throughput (1.0 = no overhead)",
                extra={"net_ms": net_ms, "kind": "traffic_ops", "baseline": key},
            )
        )
    for key, name, with_latency in baselines:
        if not with_latency:
            continue
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            a, b = pct("ours", q), pct(key, q)
            rows.append(
                Row(
                    workload,
                    setup,
                    f"{label} latency per op",
                    a,
                    b,
                    name,
                    ratios(a.values, b.values),
                    "",
                    None,
                    wait_note,
                    extra={"net_ms": net_ms, "kind": f"traffic_{label}", "baseline": key},
                )
            )
    return rows


async def run(cfg: Config) -> list[Row]:
    rows: list[Row] = []
    per_session = cfg.reps(20, 10)
    plans = make_ops(cfg.rng, SESSIONS, per_session)
    n_ops = SESSIONS * per_session
    reps = cfg.reps(5, 2)
    with scratch_schema(cfg.dsn, "traffic") as schema:
        async with PostgresStore(cfg.dsn, schema=schema) as seeder:
            await seed(seeder, cfg.rng)
        stm = raw_statements(schema)
        for net in cfg.nets:
            if cfg.quick and net.delay > 0.001:
                continue  # the slowest case; the round trips below still use 5 ms
            if net.delay <= 0.001:
                rows += await _traffic_one_net(cfg, net, schema, stm, plans, n_ops, reps)
            else:
                # A repetition takes seconds at 5 ms: half the operations.
                half = [ops[: per_session // 2] for ops in plans]
                rows += await _traffic_one_net(cfg, net, schema, stm, half, n_ops // 2, reps)
    rows += await round_trips(cfg)
    return rows


async def hook_cost(metrics: Metrics, rounds: int = 7, calls: int = 20_000) -> float:
    """CPU seconds the exporter adds to one store call (MemoryStore, interleaved rounds)."""
    plain, metered = MemoryStore(), MemoryStore(metrics=metrics)
    diffs: list[float] = []
    for store in (plain, metered):
        await store.open()
        await store.set_keys("s", {"pre-key": {"1": b"x"}})
    for n in range(rounds):
        spent: dict[int, float] = {}
        for store in (plain, metered) if n % 2 else (metered, plain):
            started = time.process_time()
            for _ in range(calls):
                await store.get_keys("s", "pre-key", ["1"])
            spent[id(store)] = (time.process_time() - started) / calls
        diffs.append(spent[id(metered)] - spent[id(plain)])
    return max(0.0, statistics.median(diffs))


async def _traffic_one_net(
    cfg: Config,
    net: Net,
    schema: str,
    stm: dict[str, sql.Composed],
    plans: list[list[Op]],
    n_ops: int,
    reps: int,
) -> list[Row]:
    dsn = cfg.proxied(net)
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=10,
        kwargs={"autocommit": True, "prepare_threshold": 5, "application_name": "wa_bench_raw"},
        open=False,
    )
    await pool.open(wait=True)
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    otel = OpenTelemetryMetrics(meter_provider=provider)
    try:
        async with (
            PostgresStore(dsn, schema=schema) as store,
            PostgresStore(dsn, schema=schema, metrics=PrometheusMetrics(registry)) as metered,
            PostgresStore(dsn, schema=schema, metrics=otel) as otel_store,
        ):

            def on(target: PostgresStore) -> Callable[[Op], Awaitable[None]]:
                async def run_op(op: Op) -> None:
                    if op.kind == "set":
                        assert op.data is not None
                        await target.set_keys(op.session_id, op.data)
                    else:
                        assert op.ids is not None
                        await target.get_keys(op.session_id, "session", op.ids)

                return run_op

            async def raw_op(op: Op) -> None:
                async with pool.connection() as conn:
                    if op.kind == "set":
                        await conn.execute(
                            stm["set"], (op.session_id, op.cats, op.key_ids, op.values)
                        )
                    else:
                        cur = await conn.execute(
                            stm["get"], (op.session_id, "session", op.ids), binary=True
                        )
                        await cur.fetchall()

            async def codec_op(op: Op) -> None:
                async with pool.connection() as conn:
                    if op.kind == "set":
                        rows = encode_key_batch(op.data, max_size=DEFAULT_MAX_VALUE_SIZE)
                        await conn.execute(
                            stm["set"],
                            (
                                op.session_id,
                                [r[0] for r in rows],
                                [r[1] for r in rows],
                                [r[2] for r in rows],
                            ),
                        )
                    else:
                        assert op.ids is not None
                        cur = await conn.execute(
                            stm["get"], (op.session_id, "session", op.ids), binary=True
                        )
                        found = dict(await cur.fetchall())
                        for key_id in op.ids:
                            if key_id in found:
                                decode_value(found[key_id], what="x")

            results: dict[str, list[tuple[float, list[float]]]] = {
                "ours": [],
                "raw": [],
                "codec": [],
                "metered": [],
                "otel": [],
            }
            cpu: dict[str, list[float]] = {name: [] for name in results}

            def contender(
                name: str, fn: Callable[[Op], Awaitable[None]]
            ) -> Callable[[int], Awaitable[float]]:
                async def go(rep: int) -> float:
                    started = time.process_time()
                    elapsed, lat = await drive(plans, fn)
                    if rep >= 0:
                        results[name].append((elapsed, lat))
                        cpu[name].append(time.process_time() - started)
                    return elapsed

                return go

            await interleaved(
                {
                    "ours": contender("ours", on(store)),
                    "raw": contender("raw", raw_op),
                    "codec": contender("codec", codec_op),
                    "metered": contender("metered", on(metered)),
                    "otel": contender("otel", on(otel_store)),
                },
                reps,
            )
            stats = store.pool.get_stats()
    finally:
        await pool.close()
        provider.shutdown()
    out = traffic_rows(
        WORKLOAD,
        f"PostgreSQL, {net.name}",
        results,
        [
            ("raw", "raw psycopg, same pool size, pre-encoded, not decoded", True),
            ("codec", "raw psycopg, same pool size + the same BufferJSON codec", False),
        ],
        n_ops,
        net.ms,
        "includes waiting for one of the pool's 10 connections",
    )
    out[0].note += f"; pool size reached {stats.get('pool_size', '?')} of 10"
    plain_cpu = Stat([c / n_ops * 1e6 for c in cpu["ours"]], "us/op")
    recorded = registry.get_sample_value(
        "wa_session_store_calls_total",
        {"operation": "get_keys", "backend": "postgresql", "outcome": "ok"},
    )
    exporters = (
        ("metered", "Prometheus", PrometheusMetrics(CollectorRegistry())),
        ("otel", "OpenTelemetry", OpenTelemetryMetrics(MeterProvider([InMemoryMetricReader()]))),
    )
    for key, exporter, fresh in exporters:
        cost = Stat([c / n_ops * 1e6 for c in cpu[key]], "us/op")
        end_to_end = ratios(cost.values, plain_cpu.values, "x")
        per_call = await hook_cost(fresh) * 1e6
        share = per_call / plain_cpu.median
        out.append(
            Row(
                WORKLOAD,
                f"PostgreSQL, {net.name}",
                f"metrics overhead, {exporter} exporter, {SESSIONS} sessions",
                Stat([share * 100], "%"),
                plain_cpu,
                "client CPU per op without metrics",
                f"{per_call:.2f} us per call",
                f"< {METRICS_OVERHEAD:.0%}",
                share < METRICS_OVERHEAD,
                f"instrumentation cost per call / CPU per op; end to end, CPU per op with the "
                f"exporter {cost.fmt()} = {end_to_end.fmt()} of without (noise of the shared "
                "machine included)"
                + (f"; {recorded:,.0f} get_keys calls in the registry" if key == "metered" else ""),
                extra={"net_ms": net.ms, "kind": "metrics_overhead", "exporter": exporter},
            )
        )
    return out


async def round_trips(cfg: Config) -> list[Row]:
    """Single calls at 5 ms one-way delay: elapsed / (2 * delay) round trips."""
    net = Net(0.005)
    dsn = cfg.proxied(net)
    reps = cfg.reps(7, 3)
    rt = 2 * net.delay
    rng = cfg.rng
    creds = make_creds(rng)
    pairing = make_prekeys(rng, 812)
    small = {"session": {"5511900000001.0": make_session_record(rng)}}
    ids50 = [str(i) for i in range(1, 51)]
    rows: list[Row] = []
    with scratch_schema(cfg.dsn, "rtt") as schema:
        async with (
            PostgresStore(dsn, schema=schema) as store,
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw,
        ):
            await store.save_creds("rt", creds)
            await store.set_keys("rt", pairing)
            counter = iter(range(10**9))

            async def fresh_session() -> str:
                sid = f"rt-del-{next(counter)}"
                await store.save_creds(sid, creds)
                await store.set_keys(sid, small)
                return sid

            calls: dict[str, Any] = {
                "raw SELECT 1 (calibration)": lambda: raw.execute("SELECT 1"),
                "load_creds": lambda: store.load_creds("rt"),
                "save_creds": lambda: store.save_creds("rt", creds),
                "get_keys, 1 id": lambda: store.get_keys("rt", "pre-key", ["7"]),
                "get_keys, 50 ids": lambda: store.get_keys("rt", "pre-key", ids50),
                "set_keys, 1 key": lambda: store.set_keys("rt", small),
                "set_keys, 812 keys (pairing)": lambda: store.set_keys(
                    f"rt-pair-{next(counter)}", pairing
                ),
                "clear_keys": lambda: store.clear_keys(f"rt-none-{next(counter)}"),
                "use_auth_state (load)": lambda: use_auth_state(store, "rt", backup_interval=None),
            }

            async def delete() -> None:
                sid = await fresh_session()  # set-up, inside the timing: subtracted below
                await store.delete_session(sid)

            async def fresh_only() -> None:
                await fresh_session()

            calls["delete_session"] = delete
            calls["(delete_session set-up)"] = fresh_only

            async def each_call(delay: float, into: dict[str, list[float]]) -> None:
                cfg.proxy.delay(delay)
                for name, fn in calls.items():
                    with Timer() as t:
                        await fn()
                    into.setdefault(name, []).append(t.seconds)

            # Twelve warm-up rounds: psycopg prepares a statement on its 6th
            # execution on a connection (measured separately below), and the
            # pool holds two connections right after open(), used in turn.
            for _ in range(12):
                await each_call(0.0, {})
            at0: dict[str, list[float]] = {}
            at5: dict[str, list[float]] = {}
            for rep in range(reps):
                for delay in (0.0, net.delay) if rep % 2 == 0 else (net.delay, 0.0):
                    await each_call(delay, at0 if delay == 0.0 else at5)

            # The preparing call: a new store (new connections), load_creds 15 times.
            cfg.proxy.delay(net.delay)
            cold_runs: list[list[float]] = []
            pool_after_open: object = "?"
            for _ in range(cfg.reps(3, 1)):
                async with PostgresStore(dsn, schema=schema) as cold:
                    pool_after_open = cold.pool.get_stats().get("pool_size", "?")
                    seq = []
                    for _ in range(15):
                        with Timer() as t:
                            await cold.load_creds("rt")
                        seq.append(t.seconds / rt)
                    cold_runs.append(seq)
    for key in ("delete_session",):
        # Remove the set-up (save_creds + set_keys, 2 round trips) from the figure.
        setup = "(delete_session set-up)"
        at0[key] = [a - b for a, b in zip(at0[key], at0[setup], strict=True)]
        at5[key] = [a - b for a, b in zip(at5[key], at5[setup], strict=True)]
    del at0["(delete_session set-up)"], at5["(delete_session set-up)"]
    for name in at5:
        naive = Stat([v / rt for v in at5[name]], "RT")
        net_only = Stat([(b - a) / rt for a, b in zip(at0[name], at5[name], strict=True)], "RT")
        calibration = name.startswith("raw")
        rows.append(
            Row(
                RT_WORKLOAD,
                "PostgreSQL, proxy 5 ms",
                name,
                naive,
                net_only,
                "(t@5ms - t@0ms) / 10 ms",
                "",
                "" if calibration else "1.0 (rounds to 1)",
                None if calibration else net_only.median < 1.5,
                f"elapsed {Stat([v * 1000 for v in at5[name]], 'ms').fmt()}; at 0 ms "
                f"{Stat([v * 1000 for v in at0[name]], 'ms').fmt()}",
                extra={"kind": "rtt", "call": name, "naive": naive.median},
            )
        )
    worst = Stat([max(seq) for seq in cold_runs], "RT")
    typical = Stat([sorted(seq)[len(seq) // 2] for seq in cold_runs], "RT")
    slow_calls = sorted({i + 1 for seq in cold_runs for i, v in enumerate(seq) if v >= 1.6})
    rows.append(
        Row(
            RT_WORKLOAD,
            "PostgreSQL, proxy 5 ms",
            "load_creds, first 15 calls on a new store: slowest call",
            worst,
            typical,
            "median of the 15 calls",
            note="psycopg prepares a statement on its 6th execution on a connection"
            " (prepare_threshold=5), in a round trip of its own; calls >= 1.6 RT: "
            f"#{', #'.join(map(str, slow_calls)) or 'none'} (pool size after open():"
            f" {pool_after_open})",
            extra={"kind": "rtt_prepare"},
        )
    )
    return rows
