"""Workload 9: moving to production, SQLite to PostgreSQL at 1 ms one-way.

A SQLite file holds ``SESSIONS`` sessions, each with a creds document (~2.5 KB)
and ``KEYS`` keys (pre-keys and ~1 KB session records, half and half), as a
bot's laptop store does after some use. They are copied to a fresh PostgreSQL
schema reached through the proxy at 1 ms one way. Contenders, interleaved,
each into a schema of its own per repetition (created and migrated outside
the timer):

* ours: ``copy_sessions(source, target)``, with its verification (every
  session read back and compared);
* folders: what the project offered before, per session ``export`` to a
  Baileys folder and ``import`` of it (``export_baileys_folder`` then
  ``import_baileys_folder``, no verification), in a temporary directory;
* sequential: the same steps without the pipeline, per session
  ``export_session``, ``import_session``, ``export_session`` of the target and
  a comparison;
* writes only: the target's batch writes alone, ``import_session`` of every
  session already read and decoded (held in memory before the timer starts):
  the bound the copy should approach ("bounded by the target's batch writes").

The issue's case is 1,000 sessions of about 1,000 keys (a million rows,
gigabytes on disk and tens of minutes for the folder baseline); the run uses
30 sessions of 1,000 keys (20 of 200 with ``--quick``) and the notes give
the rate in keys per second, which is what scales.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wa_session_store import PostgresStore, SessionExport, SQLiteStore, copy_sessions
from wa_session_store.interop.baileys import export_baileys_folder, import_baileys_folder

from ._env import Config, Net, make_creds, make_prekeys, make_session_record, scratch_schema
from ._harness import Row, Stat, Timer, interleaved, ratios

WORKLOAD = "9 Moving to production"
NET = Net(0.001)
Copier = Callable[[PostgresStore], Awaitable[None]]
Contender = Callable[[int], Awaitable[float]]


def _sizes(cfg: Config) -> tuple[int, int]:
    """(sessions, keys per session)."""
    return (20, 200) if cfg.quick else (30, 1000)


def _session_keys(cfg: Config, keys: int) -> dict[str, dict[str, Any]]:
    half = keys // 2
    record = make_session_record(cfg.rng)
    return {
        **make_prekeys(cfg.rng, keys - half),
        "session": {f"{5511900000000 + i}.0": record for i in range(half)},
    }


async def run(cfg: Config) -> list[Row]:
    sessions, keys = _sizes(cfg)
    reps = cfg.reps(3, 2)
    with tempfile.TemporaryDirectory(prefix="wa_bench_copy_") as tmp:
        source_path = Path(tmp) / "wa_sessions.db"
        async with SQLiteStore(source_path) as source:
            for n in range(sessions):
                await source.import_session(
                    f"bot-{n:04d}", make_creds(cfg.rng, n), _session_keys(cfg, keys)
                )
            ids = [info.session_id for info in await source.list_sessions()]
            held: dict[str, SessionExport] = {}
            for sid in ids:
                exported = await source.export_session(sid)
                assert exported is not None
                held[sid] = exported
            dsn = cfg.proxied(NET)

            async def ours(target: PostgresStore) -> None:
                report = await copy_sessions(source, target)
                assert report.ok, report.summary()
                assert report.count("copied") == sessions, report.summary()

            async def folders(target: PostgresStore) -> None:
                folder = Path(tmp) / "folder"
                for sid in ids:
                    await export_baileys_folder(source, sid, folder)
                    await import_baileys_folder(target, sid, folder)
                    shutil.rmtree(folder)

            async def one_by_one(target: PostgresStore) -> None:
                # The same work without the pipeline: read, write, read back, compare.
                for sid in ids:
                    exported = await source.export_session(sid)
                    assert exported is not None
                    await target.import_session(sid, exported.creds, exported.keys)
                    assert await target.export_session(sid) == exported

            async def writes_only(target: PostgresStore) -> None:
                for sid, exported in held.items():
                    await target.import_session(sid, exported.creds, exported.keys)

            def into_fresh_schema(copy: Copier) -> Contender:
                async def timed(rep: int) -> float:
                    # A schema of its own, created and migrated before the timer starts.
                    with scratch_schema(cfg.dsn, "copy") as schema:
                        async with PostgresStore(dsn, schema=schema) as target:
                            with Timer() as t:
                                await copy(target)
                    return t.seconds

                return timed

            contenders = {
                "ours": ours,
                "folders": folders,
                "sequential": one_by_one,
                "writes": writes_only,
            }
            times = await interleaved(
                {name: into_fresh_schema(copy) for name, copy in contenders.items()},
                reps,
                warmup=0,
            )
    total_keys = sessions * keys
    ours_s = Stat(times["ours"], "s")
    rate = Stat([total_keys / v for v in times["ours"]], "keys/s")
    setup = f"SQLite -> {NET.name}, {sessions} sessions x {keys:,} keys"
    million = 1_000_000 / rate.median
    against = ratios(times["ours"], times["sequential"])
    comparisons = [
        (
            "folders",
            "export + import through Baileys folders",
            ratios(times["folders"], times["ours"], "x faster"),
            ("", None),
            f"ratio = folders / ours; ours {rate.fmt()}, so 1,000 x 1,000 keys in about "
            f"{million / 60:.0f} min",
        ),
        (
            "sequential",
            "the same steps one after another (read, write, read back, compare)",
            against,
            ("< 1x", against.median < 1.0),
            "the pipeline: reading n+1 and verifying n-1 overlap with writing n",
        ),
        (
            "writes",
            "the target's batch writes alone (import_session of sessions held in memory)",
            ratios(times["ours"], times["writes"]),
            ("reported", None),
            "the rest is codec CPU in one process: decoding the source, decoding the "
            "target's copy to verify it",
        ),
    ]
    return [
        Row(
            WORKLOAD,
            setup,
            "copy_sessions (verified)",
            ours_s,
            Stat(times[name], "s"),
            label,
            ratio,
            target,
            ok,
            note,
            extra={"kind": f"copy_{name}"},
        )
        for name, label, ratio, (target, ok), note in comparisons
    ]
