"""Profiles of the hot paths of workloads 1-3: ``python -m benchmarks --profile``.

Each scenario runs against PostgreSQL directly (no proxy: a CPU view) under
cProfile, and once more under pyinstrument when it is installed. Written to
``<out>/profile.md`` (the summary: exclusive CPU time grouped by component,
and the inclusive time of the library's own steps) and
``<out>/profile-<scenario>.txt`` (pyinstrument's call tree).
"""

from __future__ import annotations

import base64
import cProfile
import gc
import json
import pstats
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from wa_session_store import PostgresStore

from . import w2_traffic
from ._env import make_prekeys, make_session_record, scratch_schema
from ._harness import Stat
from .w3_fanout import N_IDS, SID
from .w3_fanout import ids as fanout_ids

Scenario = Callable[[], Awaitable[None]]

# (label, test on "file:function" or the built-in's name); first match wins.
GROUPS: list[tuple[str, Callable[[str, str], bool]]] = [
    ("idle: waiting in epoll (network, server)", lambda f, n: "poll" in n and "select" in n),
    ("codec: json, base64 (C and Python)", lambda f, n: "/json/" in f or "json" in n),
    ("codec: json, base64 (C and Python)", lambda f, n: "base64" in f or "binascii" in n),
    (
        "codec: wa_session_store.store.codec, .ids",
        lambda f, n: f.endswith(("store/codec.py", "store/ids.py")),
    ),
    (
        "wa_session_store: store/base.py, sessions.py, rows.py, crypto.py",
        lambda f, n: f.endswith(("store/base.py", "store/sessions.py", "rows.py", "crypto.py")),
    ),
    (
        "wa_session_store: retry.py, retry_report.py",
        lambda f, n: f.endswith(("retry.py", "retry_report.py")),
    ),
    ("wa_session_store: backends", lambda f, n: "/backends/" in f),
    ("tenacity", lambda f, n: "/tenacity/" in f),
    ("psycopg_pool", lambda f, n: "/psycopg_pool/" in f),
    ("psycopg (Python)", lambda f, n: "/psycopg/" in f),
    ("psycopg / libpq (C)", lambda f, n: "psycopg" in n or "pq" in n or "PGconn" in n),
    ("asyncio event loop", lambda f, n: "/asyncio/" in f or "selectors" in f),
    ("contextlib, inspect, logging", lambda f, n: any(m in f for m in ("contextlib", "inspect"))),
    ("contextlib, inspect, logging", lambda f, n: "/logging/" in f),
    ("sqlite3", lambda f, n: "sqlite3" in n or "sqlite" in f),
]

STEPS = [
    ("store/base.py", "set_keys"),
    ("store/base.py", "get_keys"),
    ("store/codec.py", "encode_key_batch"),
    ("store/codec.py", "decode_value"),
    ("store/ids.py", "check_key_ids"),
    ("rows.py", "key"),
    ("crypto.py", "associated_data"),
    ("retry.py", "call"),
    ("postgres_attempts.py", "_on_connection"),
    ("postgres_attempts.py", "_checkout"),
    ("postgres_connections.py", "closed_by_server"),
    ("base_pool.py", "getconn"),
    ("pool_async.py", "getconn"),
    ("pool_async.py", "putconn"),
    ("cursor_async.py", "execute"),
    ("connection_async.py", "execute"),
]


def _group(stats: pstats.Stats, wall: float) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        label = "other Python"
        for group, test in GROUPS:
            if test(filename, name):
                label = group
                break
        totals[label] = totals.get(label, 0.0) + tottime
    return sorted(((k, v / wall) for k, v in totals.items()), key=lambda kv: -kv[1])


def _steps(stats: pstats.Stats, wall: float, ops: int) -> list[tuple[str, int, float, float]]:
    out = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for file_suffix, func in STEPS:
        calls = 0
        cum = 0.0
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in raw.items():
            if filename.endswith(file_suffix) and name == func:
                calls += nc
                cum += ct
        if calls:
            out.append((f"{file_suffix}:{func}", calls, cum / wall, cum / ops * 1e6))
    return out


async def _scenarios(dsn: str, schema: str) -> dict[str, tuple[Scenario, int, str]]:
    rng = random.Random(11)
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    pairing = make_prekeys(rng, 812)
    counter = iter(range(10**9))

    async def pair() -> None:
        for _ in range(30):
            await store.set_keys(f"prof-pair-{next(counter)}", pairing)

    records = {key_id: make_session_record(rng) for key_id in fanout_ids()}
    await store.set_keys(SID, {"session": records})
    wanted = fanout_ids()

    async def fanout() -> None:
        for _ in range(30):
            await store.get_keys(SID, "session", wanted)

    await w2_traffic.seed(store, rng)
    plans = w2_traffic.make_ops(rng, w2_traffic.SESSIONS, 20)

    async def op(o: w2_traffic.Op) -> None:
        if o.kind == "set":
            assert o.data is not None
            await store.set_keys(o.session_id, o.data)
        else:
            assert o.ids is not None
            await store.get_keys(o.session_id, "session", o.ids)

    async def traffic() -> None:
        await w2_traffic.drive(plans, op)

    # Warm up each (prepared statements, pool at full size).
    await pair()
    await fanout()
    await traffic()
    return {
        "pairing": (pair, 30, "30 x set_keys of 812 pre-keys"),
        "fanout": (fanout, 30, f"30 x get_keys of {N_IDS} session records"),
        "traffic": (traffic, 2000, "2,000 traffic ops, 100 sessions at once"),
        "_store": (store.close, 0, ""),
    }


def _pair(
    a: Callable[[], object], b: Callable[[], object], number: int, batches: int = 9
) -> tuple[Stat, Stat]:
    """Microseconds per call of ``a`` and ``b``, batches alternating."""
    out: tuple[list[float], list[float]] = ([], [])
    for i in range(batches):
        for j, fn in ((0, a), (1, b)) if i % 2 == 0 else ((1, b), (0, a)):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            out[j].append((time.perf_counter() - start) / number * 1e6)
    return Stat(out[0], "us"), Stat(out[1], "us")


async def _async_pair(
    a: Callable[[], Awaitable[object]],
    b: Callable[[], Awaitable[object]],
    number: int,
    batches: int = 9,
) -> tuple[Stat, Stat]:
    out: tuple[list[float], list[float]] = ([], [])
    for i in range(batches):
        for j, fn in ((0, a), (1, b)) if i % 2 == 0 else ((1, b), (0, a)):
            start = time.perf_counter()
            for _ in range(number):
                await fn()
            out[j].append((time.perf_counter() - start) / number * 1e6)
    return Stat(out[0], "us"), Stat(out[1], "us")


def _faster_decoder() -> Callable[[bytes], Any]:
    """The decoding suggested in the report: one reused decoder, C base64 checks."""
    import binascii
    import sys

    def hook(obj: dict[str, Any]) -> Any:
        if len(obj) == 2 and obj.get("type") == "Buffer":
            data = obj["data"]
            if isinstance(data, str):
                if sys.version_info >= (3, 11):
                    return binascii.a2b_base64(data, strict_mode=True)
                return base64.b64decode(data, validate=True)
            if isinstance(data, list):
                return bytes(data)
        return obj

    decoder = json.JSONDecoder(object_hook=hook)
    return lambda blob: decoder.decode(bytes(blob).decode("utf-8"))


def _faster_encoder() -> Callable[[object], bytes]:
    """The encoding suggested in the report: one reused C encoder, binascii."""
    import binascii
    import json.encoder as enc

    def default(obj: object) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return {"type": "Buffer", "data": binascii.b2a_base64(obj, newline=False).decode()}
        raise TypeError(type(obj).__name__)

    make = getattr(enc, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return lambda value: json.dumps(value, default=default).encode()
    encoder = make(None, default, enc.encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(encoder(value, 0)).encode("utf-8")


async def _transient_bytes(fn: Callable[[], Awaitable[object]]) -> int:
    """Peak bytes allocated (tracemalloc) while one call runs, after warming up."""
    for _ in range(20):
        await fn()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        gc.enable()


async def micro_costs() -> list[str]:
    """Per-call costs without a profiler, and what the suggested changes would save."""
    from wa_session_store import MemoryStore, RetryPolicy
    from wa_session_store.store.codec import decode_value, encode_value

    rng = random.Random(5)
    policy = RetryPolicy()

    async def attempt(timeout: float) -> int:
        return 1

    def never(exc: BaseException) -> bool:
        return False

    async def attempt_noop() -> None:
        return None

    bare, retried = await _async_pair(
        lambda: attempt(10.0),
        lambda: policy.call("get_keys", "s", attempt, is_transient=never),
        3_000,
    )
    async with MemoryStore() as mem:
        await mem.set_keys("s", {"session": {"1": {"a": 1}}})
        try:  # a private primitive: its signature may change
            await mem._read_keys("s", "session", ["1"], 10.0)
            primitive: Callable[[], Awaitable[object]] = lambda: mem._read_keys(  # noqa: E731
                "s", "session", ["1"], 10.0
            )
        except TypeError:
            primitive = attempt_noop
        mem_get, mem_prim = await _async_pair(
            lambda: mem.get_keys("s", "session", ["1"]), primitive, 3_000
        )
        transient = {
            "an attempt awaited bare": await _transient_bytes(lambda: attempt(10.0)),
            "the same through `RetryPolicy.call`": await _transient_bytes(
                lambda: policy.call("get_keys", "s", attempt, is_transient=never)
            ),
            "`MemoryStore.get_keys` of 1 small key": await _transient_bytes(
                lambda: mem.get_keys("s", "session", ["1"])
            ),
        }
    record = make_session_record(rng)
    blob = encode_value(record, what="x")
    prekey = {"private": rng.randbytes(32), "public": rng.randbytes(33)}
    fast_dec = _faster_decoder()
    fast_enc = _faster_encoder()
    assert fast_dec(blob) == decode_value(blob, what="x")
    assert fast_enc(prekey) == encode_value(prekey, what="x")
    dec, dec_fast = _pair(lambda: decode_value(blob, what="x"), lambda: fast_dec(blob), 1_000)
    enc, enc_fast = _pair(lambda: encode_value(prekey, what="x"), lambda: fast_enc(prekey), 10_000)
    return [
        "## Micro-costs (no profiler)",
        "",
        "Microseconds per call, median [min-max] of 9 batches, the two lines of a pair"
        " alternating.",
        "",
        "| what | us per call |",
        "| --- | ---: |",
        f"| an attempt awaited bare | {bare.fmt()} |",
        f"| the same through `RetryPolicy.call` (tenacity), succeeding at once | {retried.fmt()} |",
        f"| `MemoryStore.get_keys` of 1 small key (all of BaseStore, no I/O) | {mem_get.fmt()} |",
        f"| its primitive `_read_keys` alone | {mem_prim.fmt()} |",
        f"| `decode_value` of one session record ({len(blob)} B) | {dec.fmt()} |",
        f"| the same, reused JSONDecoder + C base64 check (suggested) | {dec_fast.fmt()} |",
        f"| `encode_value` of one pre-key (2 x bytes) | {enc.fmt()} |",
        f"| the same, reused C encoder + binascii (suggested) | {enc_fast.fmt()} |",
        "",
        "Transient memory of one call (tracemalloc peak, bytes): "
        + "; ".join(f"{k}: {v:,}" for k, v in transient.items())
        + ".",
        "",
    ]


async def profile(dsn: str) -> dict[str, str]:
    """Run the scenarios; return ``{file name: text}`` to write."""
    files: dict[str, str] = {}
    try:
        from pyinstrument import Profiler
    except ImportError:  # pragma: no cover - optional
        Profiler = None  # type: ignore[assignment,misc]
    lines = [
        "# Profiles of the hot paths",
        "",
        "PostgreSQL reached directly (no proxy), so the figures show CPU, not the network.",
        "Exclusive time (cProfile `tottime`) grouped by component, as a share of the",
        "scenario's wall time; then the inclusive time of the library's steps.",
        "",
    ]
    with scratch_schema(dsn, "profile") as schema:
        scenarios = await _scenarios(dsn, schema)
        close = scenarios.pop("_store")[0]
        try:
            for name, (fn, ops, what) in scenarios.items():
                prof = cProfile.Profile()
                start = time.perf_counter()
                prof.enable()
                await fn()
                prof.disable()
                wall = time.perf_counter() - start
                stats = pstats.Stats(prof)
                lines += [
                    f"## {name}: {what}",
                    "",
                    f"Wall time under cProfile: {wall * 1000:.0f} ms "
                    f"({wall / ops * 1e6:.0f} us per op; cProfile itself inflates Python time).",
                    "",
                    "| component (exclusive time) | share of wall time |",
                    "| --- | ---: |",
                ]
                lines += [f"| {label} | {share:.1%} |" for label, share in _group(stats, wall)]
                lines += [
                    "",
                    "| step (inclusive; coroutines: CPU time only) | calls | share | us/op |",
                    "| --- | ---: | ---: | ---: |",
                ]
                lines += [
                    f"| `{step}` | {calls:,} | {share:.1%} | {per_op:.0f} |"
                    for step, calls, share, per_op in _steps(stats, wall, ops)
                ]
                lines.append("")
                if Profiler is not None:
                    p = Profiler(interval=0.0005)
                    p.start()
                    await fn()
                    p.stop()
                    text = p.output_text(unicode=False, color=False, short_mode=False)
                    files[f"profile-{name}.txt"] = text
                    lines += [f"pyinstrument call tree: `profile-{name}.txt`", ""]
        finally:
            await close()
    lines += await micro_costs()
    if Profiler is None:
        lines.append("(pyinstrument is not installed: no call trees; `pip install pyinstrument`)")
    files["profile.md"] = "\n".join(lines) + "\n"
    return files
