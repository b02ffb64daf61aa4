"""Workload 6: memory per idle AuthState, measured with tracemalloc.

1,000 auth states from ``use_auth_state`` over a MemoryStore, idle (their
Throttler armed with nothing pending; with the default backups, a
BackupScheduler holding one timer handle each). The creds documents
themselves are not counted: the same 1,000 documents are loaded from the
store on their own (same decoder, same sizes) and that memory is subtracted.
The auth state's own shallow copy of the creds (``_previous``, kept for the
``urgent`` predicate) is counted, as it is per-state overhead.
"""

from __future__ import annotations

import asyncio
import gc
import linecache
import random
import tracemalloc
from pathlib import Path
from typing import Any

from wa_session_store import AuthState, MemoryStore, close_all, use_auth_state

from ._env import Config, make_creds
from ._harness import Row, Stat

WORKLOAD = "6 Memory per AuthState"
N = 1_000


async def _measure(backup_interval: float | None) -> tuple[float, float, dict[str, float]]:
    """(bytes per state beyond creds, bytes per creds document, bytes per state by file)."""
    rng = random.Random(6)
    async with MemoryStore() as store:
        for i in range(N):
            await store.save_creds(f"mem-{i}", make_creds(rng, i))
        gc.collect()
        tracemalloc.start(1)
        try:
            base = tracemalloc.take_snapshot()
            before = tracemalloc.get_traced_memory()[0]
            docs = [await store.load_creds(f"mem-{i}") for i in range(N)]
            gc.collect()
            creds_bytes = tracemalloc.get_traced_memory()[0] - before
            del docs
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            states: list[AuthState] = [
                await use_auth_state(store, f"mem-{i}", backup_interval=backup_interval)
                for i in range(N)
            ]
            gc.collect()
            total = tracemalloc.get_traced_memory()[0] - before
            snap = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        by_file: dict[str, float] = {}
        for stat in snap.compare_to(base, "filename"):
            if stat.size_diff <= 0:
                continue
            name = Path(stat.traceback[0].filename).name
            by_file[name] = by_file.get(name, 0.0) + stat.size_diff / N
        await close_all(states)
        linecache.clearcache()
    return (total - creds_bytes) / N, creds_bytes / N, by_file


async def run(cfg: Config) -> list[Row]:
    reps = cfg.reps(3, 1)
    rows: list[Row] = []
    for label, interval in (
        ("default (throttle + backups)", 300.0),
        ("backup_interval=None", None),
    ):
        per_state: list[float] = []
        per_creds: list[float] = []
        files: dict[str, float] = {}
        for _ in range(reps):
            # Off the benchmark's loop: a fresh loop holds only these states' timers.
            state_b, creds_b, files = await asyncio.to_thread(_run_isolated, interval)
            per_state.append(state_b / 1024)
            per_creds.append(creds_b / 1024)
        top = sorted(files.items(), key=lambda kv: -kv[1])[:4]
        breakdown = ", ".join(f"{name} {size / 1024:.2f}" for name, size in top)
        stat = Stat(per_state, "KiB")
        rows.append(
            Row(
                WORKLOAD,
                f"MemoryStore, {N:,} idle states, {label}",
                "tracemalloc bytes per state, beyond the creds",
                stat,
                Stat(per_creds, "KiB"),
                "the creds document itself (not counted)",
                "",
                "< 20 KiB",
                stat.median < 20,
                f"largest allocators per state, KiB (creds included): {breakdown}",
                extra={"kind": "memory", "label": label},
            )
        )
    return rows


def _run_isolated(interval: float | None) -> tuple[float, float, dict[str, Any]]:
    return asyncio.run(_measure(interval))
