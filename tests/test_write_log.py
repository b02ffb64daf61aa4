"""The key store's write log against a reference model (hypothesis' stateful testing).

A :class:`RuleBasedStateMachine` drives :class:`AuthKeys` over a real memory
or SQLite store, in both key modes, and a plain dict side by side: set,
delete, clear, transactions (with a task that outlives its block),
preload, reads, flushes, failed flushes (the store failing before or after
it commits), writes racing an in-flight flush, and close with writes racing
the drain. After every step it checks the invariants of ``keys.py``:

* a read never returns a value older than the newest acknowledged write,
  and nothing the cache or the log would serve is older either;
* once nothing is pending, the store holds exactly the acknowledged writes
  (so does it after every close: closing drains the log).

Failures are injected at the store's boundary (the network is outside the
project): a write that fails before it commits is not stored; one that
fails after, is. The model knows which, so it stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from wa_session_store import AuthKeys, MemoryStore, SQLiteStore, StoreUnavailableError
from wa_session_store.store.base import BaseStore

from .support.faulty import Faulty

SID = "log-bot"
KEYS = [(category, key_id) for category in ("session", "pre-key") for key_id in ("1", "2", "3")]
VALUES = st.one_of(st.none(), st.binary(min_size=1, max_size=8))
Key = tuple[str, str]


class StepKeys(AuthKeys):
    """No flush on a timer: the machine's steps decide when one runs."""

    FLUSH_DELAY = 3600.0
    RETRY_DELAY = 3600.0


def grouped(writes: dict[Key, bytes | None]) -> dict[str, dict[str, bytes | None]]:
    data: dict[str, dict[str, bytes | None]] = {}
    for (category, key_id), value in writes.items():
        data.setdefault(category, {})[key_id] = value
    return data


class WriteLogMachine(RuleBasedStateMachine):
    backend = "memory"
    mode = "barrier"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        real: BaseStore = (
            MemoryStore()
            if self.backend == "memory"
            else SQLiteStore(Path(self.tmp.name) / "keys.db")
        )
        self.run(real.open())
        self.store = Faulty(real)
        self.model: dict[Key, bytes | None] = dict.fromkeys(KEYS)
        self.keys = self.new_keys()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def new_keys(self) -> AuthKeys:
        return StepKeys(self.store, SID, key_writes=self.mode)  # type: ignore[arg-type]  # a real store behind a fault switch

    def teardown(self) -> None:
        self.store.fail = None
        self.store.gate = None
        with contextlib.suppress(StoreUnavailableError):
            self.run(self.keys._close())
        self.run(self.store.store.close())
        self.loop.close()
        self.tmp.cleanup()

    @initialize(
        stored=st.dictionaries(st.sampled_from(KEYS), st.binary(min_size=1, max_size=8), max_size=4)
    )
    def seed(self, stored: dict[Key, bytes]) -> None:
        if stored:
            self.run(self.store.store.set_keys(SID, grouped(dict(stored))))
        self.model.update(stored)

    # -- writes ------------------------------------------------------------------

    async def _write(self, writes: dict[Key, bytes | None]) -> None:
        """A write, failing or not as armed, with the model told what it did."""
        fail = self.store.fail
        try:
            await self.keys.set(grouped(writes))
        except StoreUnavailableError:
            assert self.keys.mode == "write-through"
            assert fail is not None
            if fail == "after":
                self.model.update(writes)  # it committed: the store has it
            return
        if self.keys.mode == "write-through":
            assert fail is None  # an armed failure is reported
        self.model.update(writes)

    @rule(writes=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3))
    def set(self, writes: dict[Key, bytes | None]) -> None:
        self.run(self._write(writes))

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: Key) -> None:
        self.run(self._write({key: None}))

    @rule()
    def clear(self) -> None:
        fail = self.store.fail
        try:
            self.run(self.keys.clear())
        except StoreUnavailableError:
            assert fail is not None
            # Barrier mode keeps it for the next barrier; write-through drops it.
            if fail == "before" and self.keys.mode == "write-through":
                return
        self.model = dict.fromkeys(KEYS)

    @rule(
        writes=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3),
        late=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=2),
        fails=st.booleans(),
    )
    def transaction(
        self, writes: dict[Key, bytes | None], late: dict[Key, bytes | None], fails: bool
    ) -> None:
        """A block, and a task it starts that writes after the block has ended."""

        async def block() -> None:
            go = asyncio.Event()

            async def outliving() -> None:
                await go.wait()
                await self._write(late)

            task: asyncio.Task[None] | None = None
            try:
                async with self.keys.transaction():
                    task = asyncio.get_running_loop().create_task(outliving())
                    await self.keys.set(grouped(writes))
                    for key, value in writes.items():
                        assert (await self.keys.get(key[0], [key[1]]))[key[1]] == value
                    if fails:
                        raise LookupError("the block fails")
            except LookupError:
                pass
            except StoreUnavailableError:
                assert armed is not None
                if self.keys.mode == "barrier" or armed == "after":
                    self.model.update(writes)  # kept for the next barrier, or landed
            else:
                self.model.update(writes)
            go.set()
            assert task is not None
            await task

        armed = self.store.fail
        self.run(block())

    @rule()
    def preload(self) -> None:
        self.run(self.keys.preload(["session", "pre-key"]))

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: Key) -> None:
        got = self.run(self.keys.get(key[0], [key[1]]))
        assert got[key[1]] == self.model[key], f"{key}: read {got} after {self.model[key]!r}"

    @rule()
    def flush(self) -> None:
        armed = self.store.fail
        try:
            self.run(self.keys.flush())
        except StoreUnavailableError:
            assert armed is not None
            assert self.keys.pending  # kept for the next barrier
        else:
            assert self.keys.pending == 0

    @rule(when=st.sampled_from(["before", "after"]))
    def arm_failure(self, when: str) -> None:
        self.store.fail = when

    @precondition(lambda self: self.keys.mode == "barrier")
    @rule(when=st.sampled_from(["before", "after"]))
    def failed_flush(self, when: str) -> None:
        pending = self.keys.pending
        self.store.fail = when
        try:
            self.run(self.keys.flush())
        except StoreUnavailableError:
            assert pending
            assert self.keys.pending >= pending  # kept, under anything newer
        else:
            assert not pending
        self.store.fail = None

    @precondition(lambda self: self.keys.mode == "barrier")
    @rule(
        during=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3),
        read=st.booleans(),
    )
    def write_during_flush(self, during: dict[Key, bytes | None], read: bool) -> None:
        """Writes, and a preload, while a flush is in flight."""

        async def race() -> None:
            armed = self.store.fail
            self.store.gate = gate = asyncio.Event()
            self.store.arrived.clear()
            flushing = asyncio.get_running_loop().create_task(self.keys.flush())
            if self.keys.pending:
                await self.store.arrived.wait()
            await self._write(during)
            if read:
                await self.keys.preload(["session", "pre-key"])
            self.store.gate = None
            gate.set()
            try:
                await flushing
            except StoreUnavailableError:
                assert armed is not None
                assert self.keys.pending  # kept for the next barrier

        self.run(race())

    @rule(
        during=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3),
        hold=st.booleans(),
    )
    def close_and_restart(self, during: dict[Key, bytes | None], hold: bool) -> None:
        """Close while a write races the drain; every accepted write is stored."""

        async def close() -> None:
            self.store.fail = None
            if hold and self.keys.pending:
                self.store.gate = gate = asyncio.Event()
                self.store.arrived.clear()
                closing = asyncio.get_running_loop().create_task(self.keys._close())
                await self.store.arrived.wait()
                writing = asyncio.get_running_loop().create_task(self._write(during))
                await asyncio.sleep(0)
                self.store.gate = None
                gate.set()
                await closing
                await writing
            else:
                await self.keys._close()
                await self._write(during)  # after close: stored as it is made
            assert self.keys.pending == 0, self.keys
            await self.check_stored()

        self.run(close())
        self.keys = self.new_keys()  # a new process on the same database

    # -- invariants --------------------------------------------------------------

    async def check_stored(self) -> None:
        for category in ("session", "pre-key"):
            ids = [key_id for c, key_id in KEYS if c == category]
            stored = await self.store.store.get_keys(SID, category, ids)
            for key_id in ids:
                assert stored[key_id] == self.model[category, key_id], (
                    f"{category}/{key_id}: stored {stored[key_id]!r}, "
                    f"newest write {self.model[category, key_id]!r}"
                )

    @invariant()
    def nothing_served_is_older_than_the_newest_write(self) -> None:
        for key in KEYS:
            entry = self.keys._known(key, None)
            if entry is not None:
                assert entry.read() == self.model[key], f"{key}: would serve a stale value"

    @invariant()
    def nothing_pending_means_stored(self) -> None:
        if self.keys.pending == 0 and self.store.fail is None:
            self.run(self.check_stored())


def machine(backend: str, mode: str) -> type[WriteLogMachine]:
    return type(
        f"WriteLog_{backend}_{mode.replace('-', '_')}",
        (WriteLogMachine,),
        {"backend": backend, "mode": mode},
    )


@pytest.mark.parametrize("mode", ["barrier", "write-through"])
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_the_write_log_keeps_every_acknowledged_write(backend: str, mode: str) -> None:
    case = machine(backend, mode).TestCase
    case.settings = settings(
        max_examples=int(os.environ.get("WRITE_LOG_EXAMPLES", 60 if backend == "memory" else 25)),
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    case().runTest()
