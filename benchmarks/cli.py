"""The command line of the suite: ``python -m benchmarks [--quick] [--dsn DSN] [--out DIR]``."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from wa_session_store import SessionStoreError

from . import (
    report,
    w1_pairing,
    w2_traffic,
    w3_fanout,
    w4_storm,
    w5_restore,
    w6_memory,
    w7_sqlite,
    w8_client_fanout,
    w8w_waton_fanout,
    w9_copy,
    w10_workers,
    w11_capacity,
    w12_failover,
)
from ._env import DEFAULT_DSN, ROOT, Config, Net, ProxyProcess
from ._harness import Row, fmt

WORKLOADS: dict[str, tuple[str, Callable[[Config], Awaitable[list[Row]]]]] = {
    "1": ("first pairing (PostgreSQL)", w1_pairing.run),
    "2": ("message traffic and round trips (PostgreSQL)", w2_traffic.run),
    "3": ("group fan-out (PostgreSQL)", w3_fanout.run),
    "4": ("credential storm", w4_storm.run),
    "5": ("restore after deploy (PostgreSQL)", w5_restore.run),
    "6": ("memory per AuthState", w6_memory.run),
    "7": ("SQLite default", w7_sqlite.run),
    "8": ("client fan-out through pyaileys", w8_client_fanout.run),
    "8w": ("client fan-out through waton (workload 8's twin)", w8w_waton_fanout.run),
    "9": ("moving to production: copy SQLite to PostgreSQL", w9_copy.run),
    "10": ("one worker, 1,000 sessions: renewals and stop (PostgreSQL)", w10_workers.run),
    "11": ("capacity: 5 million key rows (PostgreSQL)", w11_capacity.run),
    "12": ("failover: primary stopped, standby promoted (real pair)", w12_failover.run),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of wa_session_store against the raw drivers. Every figure is "
        "a median [min-max] over repetitions; every comparison a ratio measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="PostgreSQL DSN, over TCP (default: $WA_SESSION_STORE_TEST_DSN or %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="where results.md, results.json and results.png go (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated workload numbers to run (default: all): "
        + ", ".join(f"{k} {v[0]}" for k, v in WORKLOADS.items()),
    )
    parser.add_argument(
        "--delays",
        default="0,1,5",
        help="one-way proxy delays in ms for workloads 1-3 (default: %(default)s)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size of the capacity workload 11: 1.0 seeds 5,000 sessions of 1,000 keys "
        "(5 million key rows; about 2 GB); --quick uses 0.02 (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile workloads 1-3 (cProfile; pyinstrument call trees if installed)",
    )
    return parser.parse_args(argv)


async def _select_1(dsn: str) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        times = []
        for _ in range(30):
            t = time.perf_counter()
            await conn.execute("SELECT 1")
            times.append(time.perf_counter() - t)
    return statistics.median(times[5:])


async def calibrate(cfg: Config) -> list[str]:
    """The raw ``SELECT 1`` round trip on each path, for the header."""
    out = [f"direct {await _select_1(cfg.dsn) * 1000:.2f} ms"]
    for net in cfg.nets:
        out.append(f"{net.name} {await _select_1(cfg.proxied(net)) * 1000:.2f} ms")
    return out


async def run_workload(
    cfg: Config,
    key: str,
    label: str,
    fn: Callable[[Config], Awaitable[list[Row]]],
    failures: list[str],
) -> list[Row]:
    """Run one workload; if the server went away (a shared server restarting), once more."""
    for attempt in (1, 2):
        try:
            return await fn(cfg)
        except Exception as exc:
            print(f"   workload {key} failed: {exc!r}", file=sys.stderr, flush=True)
            restarted = isinstance(exc, (psycopg.Error, SessionStoreError))
            if attempt == 1 and restarted and await _wait_for_server(cfg.dsn, 60.0):
                print(f"   the server is back: running workload {key} again", file=sys.stderr)
                continue
            failures.append(key)
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            return [
                Row(
                    f"{key} {label}",
                    "-",
                    "the workload failed",
                    f"{type(exc).__name__}: {first_line}",
                    ok=False,
                    note="see stderr; rerun with --only " + key,
                )
            ]
    raise AssertionError("unreachable")


async def _wait_for_server(dsn: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    await asyncio.sleep(1.0)
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_server_version, dsn) is not None:
            await asyncio.sleep(1.0)  # let it settle (recovery, other clients reconnecting)
            return True
        await asyncio.sleep(1.0)
    return False


def _server_version(dsn: str) -> str | None:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except psycopg.Error:
        return None


async def amain(args: argparse.Namespace) -> int:
    only = {w.strip() for w in args.only.split(",") if w.strip()} or None
    if only is not None and not only <= set(WORKLOADS):
        print(f"unknown workload in --only {args.only!r}", file=sys.stderr)
        return 2
    server = _server_version(args.dsn)
    if server is None:
        print(
            f"PostgreSQL is not reachable at {args.dsn.split('@')[-1]}: start it or pass --dsn",
            file=sys.stderr,
        )
        return 2
    out: Path = args.out
    nets = [Net(float(d) / 1000) for d in args.delays.split(",") if d.strip()]
    proxy = ProxyProcess(args.dsn)
    proxy.start()
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Row] = []
    timings: list[str] = []
    failures: list[str] = []
    try:
        cfg = Config(args.dsn, out, args.quick, nets, proxy, only, scale=args.scale)
        rtts = await calibrate(cfg)
        for key, (label, fn) in WORKLOADS.items():
            if not cfg.wants(key):
                continue
            print(f"== workload {key}: {label}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            produced = await run_workload(cfg, key, label, fn, failures)
            timings.append(f"{key}: {time.perf_counter() - t:.0f} s")
            for r in produced:
                print(
                    f"   {r.setup} | {r.metric} | {fmt(r.ours)} | {fmt(r.baseline)} | "
                    f"{fmt(r.ratio)} {r.verdict()}",
                    file=sys.stderr,
                    flush=True,
                )
            rows += produced
    finally:
        proxy.stop()
    total = time.perf_counter() - started
    load_after = os.getloadavg()
    import wa_session_store

    params = conninfo_to_dict(args.dsn)
    where = f"{params.get('host', '?')}:{params.get('port', 5432)}/{params.get('dbname', '?')}"
    meta: dict[str, Any] = {
        "server": where,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "python": platform.python_version(),
        "wa_session_store": wa_session_store.__version__,
        "psycopg": psycopg.__version__,
        "postgresql": server,
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "round_trip_select_1": rtts,
        "duration_s": round(total, 1),
        "workload_seconds": timings,
    }
    header = [
        "# wa_session_store benchmarks",
        "",
        f"`python -m benchmarks{' --quick' if args.quick else ''}`, finished {meta['date']}"
        f" ({meta['mode']} run, {total:.0f} s: {', '.join(timings)}).",
        "",
        f"- Python {meta['python']}, wa_session_store {meta['wa_session_store']}, psycopg "
        f"{meta['psycopg']}, PostgreSQL {server} at {where}, {meta['cpus']} CPUs, load average "
        f"{load_before[0]:.2f} before / {load_after[0]:.2f} after (shared machine).",
        "- Network: the client reaches PostgreSQL (same machine) through `tests/proxy.py`'s "
        "Proxy, run in a child process, adding the given one-way delay each way; "
        "**0 ms means through the proxy with delay 0** (not direct). Measured raw `SELECT 1` "
        f"round trip: {'; '.join(rtts)}.",
        "- SQLite: a file in a temporary directory on the same disk, WAL, synchronous=NORMAL.",
        "- No absolute time is asserted: the targets are ratios measured in the same run.",
    ]
    await asyncio.to_thread(write_outputs, out, rows, meta, header)
    if args.profile:
        from . import profiling

        print("== profiling workloads 1-3", file=sys.stderr, flush=True)
        files = await profiling.profile(args.dsn)
        await asyncio.to_thread(write_files, out, files)
    if failures:
        print(f"workloads that failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def write_outputs(out: Path, rows: list[Row], meta: dict[str, Any], header: list[str]) -> None:
    md = report.markdown(rows, header)
    (out / "results.md").write_text(md)
    report.write_json(rows, meta, out / "results.json")
    skipped = report.chart(
        rows, out / "results.png", f"wa_session_store benchmarks ({meta['mode']}, {meta['date']})"
    )
    print(md)
    print(f"written: {out / 'results.md'}, {out / 'results.json'}", file=sys.stderr)
    if skipped:
        print(skipped, file=sys.stderr)
    else:
        print(f"written: {out / 'results.png'}", file=sys.stderr)


def write_files(out: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (out / name).write_text(text)
        print(f"written: {out / name}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(amain(args))
