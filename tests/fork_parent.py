"""A program that forks while its sync facade is open: ``python tests/fork_parent.py CONFIG_JSON``.

CONFIG_JSON holds ``url`` and ``schema`` (the parent's store; ``schema`` only
for PostgreSQL) and ``child_url`` (a SQLite store of the child's own). The
parent opens a SyncStore and an auth state, then forks once per scenario:

- ``calls``: the child calls every kind of facade it inherited, records what
  each call raised, closes them and exits;
- ``untouched``: the child never touches the facade and exits;
- ``own_store``: the child opens a store of its own, reports a creds update
  and exits without closing it (the exit hook saves it);
- ``lock_held``: as ``own_store``, forked while another thread of the parent
  holds the loop thread's lock.

Every child exits through ``sys.exit``, so the interpreter's exit hooks run.
The parent waits for each child within a bound (a child still running then is
killed and reported as ``"hung"``), keeps using its facade, and prints one
JSON line: each scenario's exit status and report, and what the parent read.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wa_session_store import open_store  # noqa: E402
from wa_session_store.sync import (  # noqa: E402
    SyncAuthState,
    SyncStore,
    open_sync_store,
    use_sync_auth_state,
)
from wa_session_store.sync import loop as _sync_loop  # noqa: E402

#: How long a child may take before it counts as hung.
CHILD_BOUND = 30.0


def _outcome(call: Any) -> str:
    """``"ok"`` or the name of the exception ``call()`` raised."""
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def _calls(store: SyncStore, auth: SyncAuthState) -> dict[str, Any]:
    try:
        store.load_creds("bot")
    except Exception as exc:
        message = str(exc)
    return {
        "message": message,
        "load_creds": _outcome(lambda: store.load_creds("bot")),
        "open": _outcome(store.open),
        "use_sync_auth_state": _outcome(lambda: use_sync_auth_state(store, "other")),
        "save_creds": _outcome(lambda: auth.save_creds({"n": "child"})),
        "keys.get": _outcome(lambda: auth.keys.get("pre-key", ["1"])),
        "keys.set": _outcome(lambda: auth.keys.set({"pre-key": {"1": b"child"}})),
        "flush": _outcome(auth.flush),
        "creds_updated": _outcome(lambda: auth.creds_updated({"n": "child"})),
        "auth.close": _outcome(auth.close),
        "store.close": _outcome(store.close),
    }


def _own_store(child_url: str) -> dict[str, Any]:
    own = open_sync_store(child_url)
    own.open()
    mine = use_sync_auth_state(own, "child", throttle=60, backup_interval=None, urgent=None)
    mine.save_creds({"n": 0})
    mine.creds_updated({"n": 1})  # held back by the throttle: saved by the exit hook
    return {"load_creds": own.load_creds("child")}


def _child(scenario: str, store: SyncStore, auth: SyncAuthState, config: dict[str, str]) -> None:
    """Run ``scenario`` in the child, write its report to fd 1's JSON line, exit."""
    report: dict[str, Any] = {}
    try:
        if scenario == "calls":
            report = _calls(store, auth)
        elif scenario in ("own_store", "lock_held"):
            report = _own_store(config["child_url"])
    except Exception as exc:  # reported, then the exit is still the normal one
        report = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report), flush=True)
    sys.exit(0)  # through the exit hooks, which must not hang


def _wait(pid: int) -> int | str:
    deadline = time.monotonic() + CHILD_BOUND
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


def _fork(scenario: str, store: SyncStore, auth: SyncAuthState, config: dict[str, str]) -> Any:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(write, 1)
        _child(scenario, store, auth, config)
    os.close(write)
    status = _wait(pid)
    with os.fdopen(read) as lines:
        report = lines.read().strip()
    return {"exit": status, "report": json.loads(report) if report else None}


def main(config: dict[str, str]) -> None:
    options = {"schema": config["schema"]} if config.get("schema") else {}
    store = SyncStore(open_store(config["url"], **options))
    store.open()
    auth = use_sync_auth_state(store, "bot", throttle=60, backup_interval=None, urgent=None)
    auth.save_creds({"n": 0})
    auth.keys.set({"pre-key": {"1": b"parent"}})

    results: dict[str, Any] = {}
    for scenario in ("calls", "untouched", "own_store"):
        results[scenario] = _fork(scenario, store, auth, config)

    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with _sync_loop._lock:
            holding.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait()
    results["lock_held"] = _fork("lock_held", store, auth, config)
    release.set()
    holder.join()

    # The parent keeps working: calls, a throttled update saved at close.
    results["parent"] = {
        "load_creds": store.load_creds("bot"),
        "keys.get": auth.keys.get("pre-key", ["1"])["1"].decode(),
    }
    auth.creds_updated({"n": 1})
    store.close()
    with SyncStore(open_store(config["url"], **options)) as again:
        results["parent"]["after_close"] = again.load_creds("bot")
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
