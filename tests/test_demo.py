"""The ``demo`` command: a simulated bot, a redeploy in a new process, the verdict.

Short storms (well under a second) keep the file fast; one test runs the real
command line in a fresh directory with the figures a user would type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from wa_session_store import InvalidInputError, SQLiteStore, open_store
from wa_session_store.backends.open import redact_url
from wa_session_store.cli import demo, main
from wa_session_store.cli.demo import PREKEY_COUNT, SESSION_ID, DemoReport, run_demo

SMALL: dict[str, Any] = {"updates": 1000, "key_writes": 100, "throttle": 0.2, "duration": 0.6}


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...


def _check_report(report: DemoReport, lines: list[str], *, updates: int, key_writes: int) -> None:
    assert report.nothing_lost, lines
    assert report.session_found
    assert report.creds_match
    assert report.updates == updates
    assert report.key_writes == key_writes
    assert report.prekeys_uploaded == PREKEY_COUNT
    # One write in ten consumes a pre-key; every other key is as last written.
    assert report.consumed == report.consumed_gone == key_writes // 10
    assert report.keys_ok == report.keys_expected == report.stored_keys
    assert report.keys_expected >= PREKEY_COUNT - report.consumed
    assert report.keys_missing == report.keys_stale == 0
    assert lines[-1].startswith("nothing lost: creds match the last update; ")
    assert f"{report.keys_ok:,}/{report.keys_expected:,} keys as last written" in lines[-1]


async def test_sqlite_run_then_rerun_replaces_the_demo_session(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    url = _sqlite_url(db)
    # A real session next to the demo one: read by the restore, never written.
    async with SQLiteStore(db) as store:
        await store.save_creds("real-bot", {"registrationId": 7, "noiseKey": {"public": b"k"}})
        await store.set_keys("real-bot", {"pre-key": {"1": {"public": b"p"}}})

    lines: list[str] = []
    first = await run_demo(url, out=lines.append, **SMALL)
    _check_report(first, lines, updates=1000, key_writes=100)
    assert not first.replaced_previous
    assert first.restored_sessions == 2
    assert first.failed_sessions == 0
    # The throttle coalesces: about one write per interval, not one per update.
    assert 1 <= first.creds_writes <= first.storm_seconds / 0.2 + 2
    assert first.url == url
    assert lines[0] == f"wa_session_store demo — {url}"
    assert lines[1] == f"paired: new session {SESSION_ID} (a QR code would be scanned here)"
    assert lines[2].startswith(f"uploaded {PREKEY_COUNT} pre-keys in 1 write (")
    assert re.fullmatch(
        r"storm: 1,000 creds updates -> \d creds writes? \(throttle 0\.2 s\), "
        r"100 key writes in \d+\.\d s",
        lines[3],
    )
    assert lines[4].startswith("stopped: ")
    assert re.fullmatch(
        r"redeploy: a new process restored 2 sessions in \d+\.\d ms without a QR code "
        r"\(store opened in \d+\.\d ms\)",
        lines[5],
    )
    assert len(lines) == 7
    # Figures only: no creds field, no key material.
    assert not any(word in "\n".join(lines) for word in ("noiseKey", "advSecretKey", "private"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.updates = 0  # type: ignore[misc]

    lines.clear()
    second = await run_demo(url, out=lines.append, **SMALL)
    _check_report(second, lines, updates=1000, key_writes=100)
    assert second.replaced_previous
    assert "replacing the previous demo run" in lines[1]
    async with SQLiteStore(db) as store:
        assert await store.load_creds("real-bot") == {
            "registrationId": 7,
            "noiseKey": {"public": b"k"},
        }
        assert await store.get_keys("real-bot", "pre-key", ["1"]) == {"1": {"public": b"p"}}
        assert [info.session_id for info in await store.list_sessions()] == [
            SESSION_ID,
            "real-bot",
        ]


async def test_postgres_with_schema_and_a_password_that_is_never_shown(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-demo-pw"
    url = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}password={secret}"
    spawned: list[tuple[object, ...]] = []
    real_exec = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        spawned.append(args)
        return await real_exec(*args, **kwargs)

    monkeypatch.setattr(demo.asyncio, "create_subprocess_exec", spy)
    lines: list[str] = []
    report = await run_demo(
        url, out=lines.append, store_options={"schema": pg_schema, "max_size": 2}, **SMALL
    )
    _check_report(report, lines, updates=1000, key_writes=100)
    # The schema reached the new process too: it found the session there.
    assert report.restored_sessions == 1
    assert len(spawned) == 1
    assert secret not in " ".join(map(str, spawned[0]))
    assert secret not in "\n".join(lines)
    assert secret not in report.url
    assert "password=***" in lines[0]
    async with open_store(pg_dsn, schema=pg_schema) as store:
        assert await store.load_creds(SESSION_ID) is not None


class LossyStore(SQLiteStore):
    """Drops the creds saves after pairing, or every sender-key write, without a word."""

    def __init__(self, path: Path, drop: str) -> None:
        super().__init__(path)
        self.drop = drop
        self.creds_saves = 0

    async def save_creds(self, session_id: str, creds: Mapping[str, Any]) -> None:
        self.creds_saves += 1
        if self.drop == "creds" and self.creds_saves > 2:  # pairing, pre-key counters
            return
        await super().save_creds(session_id, creds)

    async def set_keys(self, session_id: str, data: Mapping[str, Mapping[Any, Any]]) -> None:
        if self.drop == "keys" and "sender-key" in data:
            return
        await super().set_keys(session_id, data)


@pytest.mark.parametrize(
    ("drop", "problem"),
    [("creds", "LOST: creds differ from the last update"), ("keys", "keys missing")],
)
async def test_a_loss_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop: str, problem: str
) -> None:
    db = tmp_path / "x.db"
    monkeypatch.setattr(demo, "open_store", lambda url, **options: LossyStore(db, drop))
    lines: list[str] = []
    report = await run_demo(_sqlite_url(db), out=lines.append, **SMALL)
    assert not report.nothing_lost
    assert report.session_found
    assert report.creds_match is (drop != "creds")
    assert (report.keys_missing > 0) is (drop == "keys")
    assert lines[-1].startswith("LOST: ")
    assert problem in lines[-1]


def test_the_command_exits_1_on_a_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "x.db"
    monkeypatch.setattr(demo, "open_store", lambda url, **options: LossyStore(db, "creds"))
    argv = ["demo", "--dsn", _sqlite_url(db), "--updates", "300", "--duration", "0.3"]
    assert main([*argv, "--throttle", "0.1"]) == 1
    assert "LOST: creds differ" in capsys.readouterr().out


async def test_the_check_tells_each_kind_of_loss(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with SQLiteStore(db) as store:
        await store.save_creds(SESSION_ID, {"n": 1})
        await store.set_keys(
            SESSION_ID,
            {
                "pre-key": {"1": {"k": b"a"}, "2": {"k": b"b"}, "3": {"k": b"c"}},
                "session": {"x.0": {"k": b"old"}, "stray.0": {"k": b"s"}},
            },
        )
    digest = demo._digest
    expectation = {
        "url": _sqlite_url(db),
        "store_options": {},
        "session_id": SESSION_ID,
        "throttle": 1.0,
        "creds": digest({"n": 2}),
        "keys": {
            "pre-key": {"1": digest({"k": b"a"}), "2": None, "4": digest({"k": b"d"})},
            "session": {"x.0": digest({"k": b"new"})},
        },
    }
    result = await demo._verify(expectation)
    assert result == {
        "restored": 1,
        "failed": 0,
        "open_ms": result["open_ms"],
        "restore_ms": result["restore_ms"],
        "found": True,
        "creds_match": False,
        "keys_expected": 3,
        "keys_ok": 1,
        "keys_missing": 1,
        "keys_stale": 1,
        "consumed": 1,
        "consumed_gone": 0,
        "stored_keys": 5,
    }
    expectation["creds"] = digest({"n": 1})
    expectation["keys"] = {"pre-key": {"1": digest({"k": b"a"})}}
    result = await demo._verify(expectation)
    assert result["creds_match"]
    assert result["keys_ok"] == result["keys_expected"] == 1
    assert result["stored_keys"] == 5  # more stored than expected: not "nothing lost"


async def test_memory_is_refused_before_anything_happens() -> None:
    lines: list[str] = []
    with pytest.raises(InvalidInputError, match=r"new process.*memory://.*sqlite:///"):
        await run_demo("memory://", out=lines.append)
    assert lines == []


def test_the_command_refuses_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dsn", "memory://"]) == 2  # usage: a --dsn the demo cannot use
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: the demo restores the session in a new process")


@pytest.mark.parametrize(
    "bad",
    [
        {"updates": -1},
        {"key_writes": 1.5},
        {"duration": float("nan")},
        {"throttle": -0.1},
        {"throttle": True},
        {"store_options": {"retry": object()}},
        {"store_options": ["schema"]},
    ],
)
async def test_bad_arguments_touch_nothing(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        await run_demo(_sqlite_url(tmp_path / "x.db"), out=lambda line: None, **bad)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///wa_sessions.db", "sqlite:///wa_sessions.db"),
        ("postgresql://bot@db/bots", "postgresql://bot@db/bots"),
        ("postgresql://bot:pw@db:5432/bots", "postgresql://bot:***@db:5432/bots"),
        (
            "postgres://bot:p@ss@db/bots?sslmode=require",
            "postgres://bot:***@db/bots?sslmode=require",
        ),
        ("postgresql://db/bots?user=bot&password=pw", "postgresql://db/bots?user=bot&password=***"),
        ("postgresql://bot:pw@db?PASSWORD=pw2", "postgresql://bot:***@db?PASSWORD=***"),
    ],
)
def test_the_header_never_shows_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 5000)", "(default: 3.0)", "(default: 1.0)", "--dsn URL"):
        assert default in text


def test_python_m_wa_session_store_demo_in_a_fresh_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WA_SESSION_STORE_DSN"}
    command = [sys.executable, "-m", "wa_session_store", "demo", "--updates", "2000"]
    done = subprocess.run(
        [*command, "--duration", "1.5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "wa_sessions.db").is_file()
    lines = done.stdout.splitlines()
    assert lines[0] == "wa_session_store demo — sqlite:///wa_sessions.db"
    storm = re.fullmatch(
        r"storm: 2,000 creds updates -> (\d+) creds writes? \(throttle 1\.0 s\), "
        r"500 key writes in (\d+\.\d) s",
        lines[3],
    )
    assert storm is not None, lines
    # 2,000 updates over 1.5 s: about one write a second, and one on close.
    assert 1 <= int(storm.group(1)) <= float(storm.group(2)) + 2
    assert "without a QR code" in lines[5]
    assert re.fullmatch(
        r"nothing lost: creds match the last update; (\d+)/\1 keys as last written; "
        r"50/50 consumed pre-keys gone",
        lines[6],
    )
    assert done.stderr == ""
