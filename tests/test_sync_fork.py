"""The sync facade across ``os.fork()``, with real forks (``tests/fork_parent.py``).

A child forked while a facade is open gets :class:`InheritedFacadeError` from
every call on what it inherited, can open a store of its own (a fresh loop
thread serves it), and always exits; the parent keeps working. The forks
happen in a subprocess, never in the test runner, and every wait is bounded:
a child that hangs is killed and reported, and the subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wa_session_store.sync import open_sync_store

PARENT = Path(__file__).with_name("fork_parent.py")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def parent_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The parent's store: a SQLite file, or a schema of the test PostgreSQL."""
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path / 'parent.db'}"}
    return {
        "url": request.getfixturevalue("pg_dsn"),
        "schema": request.getfixturevalue("pg_schema"),
    }


def _run_parent(config: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        # Python 3.12+ warns that forking a threaded process may deadlock the
        # child: that hazard is what is tested here.
        [sys.executable, "-W", "ignore::DeprecationWarning", str(PARENT), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=240,  # four children of at most 30 s each, on a loaded machine
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_forked_child_is_refused_exits_and_the_parent_keeps_working(
    parent_store: dict[str, str], tmp_path: Path
) -> None:
    child_db = tmp_path / "child.db"
    results = _run_parent({**parent_store, "child_url": f"sqlite:///{child_db}"})

    # Every call on an inherited facade is refused by type, at once; close()
    # does nothing, and creds_updated() never raises (it logs).
    calls = results["calls"]
    assert calls["exit"] == 0
    message = calls["report"].pop("message")
    assert "forked" in message
    assert "open_sync_store(url)" in message
    assert parent_store["url"] not in message  # never the DSN
    refused = {"load_creds", "open", "use_sync_auth_state", "save_creds", "keys.get"}
    refused |= {"keys.set", "flush"}
    assert calls["report"] == {
        **dict.fromkeys(refused, "InheritedFacadeError"),
        "creds_updated": "ok",
        "auth.close": "ok",
        "store.close": "ok",
    }
    # A child that never touches the facade exits (the exit hook used to hang).
    assert results["untouched"] == {"exit": 0, "report": {}}
    # A child's own store works on a loop thread of its own, and its exit
    # hook saves the update the throttle held back; also when one of the
    # parent's threads held the loop thread's lock at the fork.
    for scenario in ("own_store", "lock_held"):
        assert results[scenario] == {"exit": 0, "report": {"load_creds": {"n": 0}}}, scenario
    with open_sync_store(f"sqlite:///{child_db}") as store:
        assert store.load_creds("child") == {"n": 1}

    # The parent's facade, connections and auth state were not disturbed.
    assert results["parent"] == {
        "load_creds": {"n": 0},  # none of the child's writes landed
        "keys.get": "parent",
        "after_close": {"n": 1},  # the throttled update, saved at close
    }
