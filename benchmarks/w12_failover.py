"""Workload 12: a PostgreSQL failover under a busy bot, against a real primary and standby.

A bot process (``_failover_bot``) keeps one session busy on
``RetryPolicy.failover()`` and a multi-host URL: acknowledged creds saves,
key batches and barrier-mode fan-outs whose frame leaves only once the
barrier returned, each acknowledgement logged with the machine's monotonic
clock. Meanwhile ``tests/pg_pair.py``'s pair is broken for real:

* failover: the primary is stopped (``pg_ctl stop -m fast`` or ``immediate``)
  and, after a detection delay, the standby promoted (``pg_ctl promote``);
  with synchronous replication, and with asynchronous (immediate stop);
* switchover: fast stop, promotion, and the old primary restarted read-only;
* restart in place: the primary stopped for 45 s (8 s with ``--quick``), then
  started again.

Reported per case: acknowledged writes, and those missing from the server
that took over (goal 0 with synchronous replication; asynchronous reports
its window); the outage as the bot saw it (the longest wait between two
acknowledgements) against the time the servers were not writable (stop to
promoted, or to restarted), and the difference, to compare with one step of
the policy (at most 4 s: 3 s of backoff plus 1 s of jitter); frames that left
before their keys were stored (goal 0).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg_pair import PgPair, PgPairUnavailable, find_bindir

from wa_session_store import RetryPolicy

from ._env import ROOT, Config
from ._failover_bot import SESSION, device_keys
from ._harness import Row, Stat

WORKLOAD = "12 Failover"
#: One step of RetryPolicy.failover(): its largest wait plus its jitter.
STEP = RetryPolicy.failover().max_backoff + RetryPolicy.failover().jitter


@dataclass
class Case:
    name: str
    synchronous: bool
    stop: str  # pg_ctl stop mode
    fault: str  # "failover", "switchover" or "restart"


@dataclass
class Outcome:
    acked: int  # acknowledged rounds (creds saves and key batches)
    lost_keys: int  # acknowledged key batches missing on the server that took over
    creds_behind: int  # rounds between the newest acknowledged creds and the stored one
    frames: int
    early_frames: int  # frames whose keys are not stored
    seen: float  # longest wait between two acknowledgements
    unwritable: float  # stop to promoted (or restarted)
    failures: int  # rounds that raised (a call gave up)


def _cases(quick: bool) -> list[Case]:
    return [
        Case("failover, sync, fast stop", True, "fast", "failover"),
        Case("failover, sync, immediate stop", True, "immediate", "failover"),
        Case("failover, async, immediate stop", False, "immediate", "failover"),
        Case("switchover (old primary restarted read-only)", True, "fast", "switchover"),
        Case(f"restart in place, {8 if quick else 45} s", True, "fast", "restart"),
    ]


def _read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    events: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text().splitlines():
        kind, n, when = line.split()
        events.setdefault(kind, []).append((int(n), float(when)))
    return events


async def _wait_for(path: Path, kind: str, count: int, after: float = 0.0) -> None:
    for _ in range(6000):
        if path.exists():  # noqa: ASYNC240  # a local stat, between sleeps
            events = _read_log(path).get(kind, [])
            if sum(when > after for _, when in events) >= count:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the bot did not log {count} {kind!r} after {after}")


async def _one(pair: PgPair, case: Case, quick: bool, tmp: Path) -> Outcome:
    await asyncio.to_thread(pair.heal, synchronous=case.synchronous)
    schema = f"wa_bench_fo_{os.getpid()}_{int(time.monotonic() * 1000) % 10**6}"
    log = tmp / f"{schema}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    bot = subprocess.Popen(  # noqa: ASYNC220  # started, not waited for, here
        [sys.executable, "-m", "benchmarks._failover_bot", pair.dsn(), schema, str(log)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    detection = 2.0 if quick else 5.0  # a managed service notices, then promotes
    try:
        await _wait_for(log, "frame", 30)
        old = pair.primary
        stopped = time.monotonic()
        await asyncio.to_thread(pair.stop_primary, case.stop)
        if case.fault == "restart":
            await asyncio.sleep(8.0 if quick else 45.0)
            await asyncio.to_thread(pair.start_node, old)
        else:
            await asyncio.sleep(detection)
            await asyncio.to_thread(pair.promote)
            if case.fault == "switchover":
                await asyncio.to_thread(pair.start_read_only, old)
        back = time.monotonic()
        await _wait_for(log, "frame", 30, after=back)
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(60)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait()
    events = _read_log(log)
    creds = events.get("creds", [])
    keys = events.get("keys", [])
    frames = events.get("frame", [])
    stored = {
        str(k)
        for (k,) in pair.query(
            pair.primary, f"SELECT key_id FROM {schema}.wa_keys WHERE session_id = '{SESSION}'"
        )
    }

    def missing(n: int, *, prekey: bool) -> bool:
        wanted = device_keys(n) + ([str(n)] if prekey else [])
        return not set(wanted) <= stored

    rows = pair.query(
        pair.primary,
        f"SELECT convert_from(value, 'UTF8') FROM {schema}.wa_creds WHERE session_id = '{SESSION}'",
    )
    # BufferJSON of {"me": ..., "round": n}: plain JSON for these values.
    stored_round = int(json.loads(str(rows[0][0]))["round"]) if rows else 0
    times = sorted(when for kind in ("creds", "keys") for _, when in events.get(kind, []))
    return Outcome(
        acked=len(creds) + len(keys),
        lost_keys=sum(missing(n, prekey=True) for n, _ in keys),
        creds_behind=max(0, max((n for n, _ in creds), default=0) - stored_round),
        frames=len(frames),
        early_frames=sum(missing(n, prekey=False) for n, _ in frames),
        seen=max((b - a for a, b in itertools.pairwise(times)), default=0.0),
        unwritable=back - stopped,
        failures=len(events.get("fail", [])),
    )


async def run(cfg: Config) -> list[Row]:
    try:
        find_bindir()
        PgPair._server_user()
    except PgPairUnavailable as exc:
        return [Row(WORKLOAD, "primary + standby", "skipped", str(exc))]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="wa_bench_failover_") as folder:
        tmp = Path(folder)
        tmp.chmod(0o755)  # noqa: ASYNC240  # once, before anything runs
        pair = PgPair(tmp / "pair")
        with pair:
            for case in _cases(cfg.quick):
                print(f"   {case.name}", file=sys.stderr, flush=True)
                got = await _one(pair, case, cfg.quick, tmp)
                lost = got.lost_keys + got.creds_behind
                must_keep = case.synchronous or case.stop == "fast"
                over = got.seen - got.unwritable
                rows += [
                    Row(
                        WORKLOAD,
                        case.name,
                        "acknowledged writes lost",
                        f"{lost} of {got.acked}",
                        target="0" if must_keep else "reported (async window)",
                        ok=(lost == 0) if must_keep else None,
                        note=f"{got.failures} rounds gave up; creds behind by {got.creds_behind}",
                        extra={"kind": "failover_lost", "lost": lost, "acked": got.acked},
                    ),
                    Row(
                        WORKLOAD,
                        case.name,
                        "outage seen by the bot",
                        Stat([got.seen], "s"),
                        Stat([got.unwritable], "s"),
                        "not writable (stop to promoted/restarted)",
                        f"+{over:.1f} s",
                        f"<= +{STEP:g} s (one step)",
                        over <= STEP,
                        extra={"kind": "failover_outage", "over": over},
                    ),
                    Row(
                        WORKLOAD,
                        case.name,
                        "frames sent before their keys were stored",
                        f"{got.early_frames} of {got.frames}",
                        target="0",
                        ok=got.early_frames == 0,
                        extra={"kind": "failover_frames"},
                    ),
                ]
    return rows
