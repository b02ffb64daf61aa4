"""Issue 13, the CLI side: no secret and no traceback in its output, ever, and
consistent exit codes (see test_cli_exit_codes for the whole table). Every test runs the
real command as a subprocess; a pseudo-terminal where a prompt is involved."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from wa_session_store import PostgresStore, SQLiteStore

from .test_cli import cli_environment, run

KEY = os.urandom(32)
KEY_B64 = base64.b64encode(KEY).decode()
# A key whose base64 holds no '+', '/' or '=': it passes for a key id.
ALNUM_KEY_B64 = next(
    b64
    for b64 in (base64.b64encode(os.urandom(30)).decode() for _ in range(10_000))
    if b64.isalnum()
)


def _start(args: list[str], cwd: Path, **streams: Any) -> subprocess.Popen[str]:
    """The CLI as a running process; ``streams`` default to pipes (text)."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    options.update(streams)
    return subprocess.Popen(
        [sys.executable, "-m", "wa_session_store", *args],
        cwd=cwd,
        env=cli_environment(),
        **options,
    )


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


# -- class 1: secrets ------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "active", "secret"),
    [
        (KEY_B64, None, KEY_B64),  # a bare key, no id=
        (ALNUM_KEY_B64, None, ALNUM_KEY_B64),
        (f"k1={KEY_B64}", KEY_B64, KEY_B64),  # the key where its id belongs
        (f"{ALNUM_KEY_B64}=k1", None, ALNUM_KEY_B64),  # id and key swapped
        (f"k1={KEY_B64},{ALNUM_KEY_B64}", None, ALNUM_KEY_B64),
    ],
    ids=["bare key", "bare alnum key", "key as active", "swapped", "second entry bare"],
)
def test_key_variables_never_print_a_key(
    tmp_path: Path, keys: str, active: str | None, secret: str
) -> None:
    env = {"WA_SESSION_STORE_KEYS": keys}
    if active is not None:
        env["WA_SESSION_STORE_ACTIVE_KEY"] = active
    for command in ("list", "reencrypt"):
        result = run(command, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: "), result.stderr
        assert "WA_SESSION_STORE_" in result.stderr
        for form in (secret, secret[:24], secret[-24:]):
            assert form not in result.stdout + result.stderr
        _no_traceback(result)


@pytest.mark.parametrize(
    "argv",
    [
        ["--dsn", "host=127.0.0.1", "password=Cli-Secret-13", "dbname=test", "list"],
        ["list", "--dsn", "host=127.0.0.1", "password=Cli-Secret-13", "dbname=test"],
        ["list", "--dsn", "host=127.0.0.1", "sslpassword=Cli-Secret-13"],
        ["list", "--json", "--dsn", "user=x", "password=Cli-Secret-13", "--bogus"],
    ],
)
def test_argparse_never_echoes_a_secret(tmp_path: Path, argv: list[str]) -> None:
    result = run(*argv, cwd=tmp_path)
    assert result.returncode == 2
    assert "Cli-Secret-13" not in result.stdout + result.stderr
    assert "usage:" in result.stderr
    _no_traceback(result)


@pytest.mark.postgres
def test_dsn_secrets_are_never_printed(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    joiner = "&" if "?" in pg_dsn else "?"
    dsn = f"{pg_dsn}{joiner}options=-csearch_path%3D{pg_schema}&sslpassword=Ssl-Secret-13"
    check = run("check", "--dsn", dsn, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "sslpassword=***" in check.stdout
    assert "Ssl-Secret-13" not in check.stdout + check.stderr
    at_sign = pg_dsn.replace("postgres@", "postgres:Pw@Fragment-13@")
    refused = run("list", "--dsn", at_sign, cwd=tmp_path)
    assert refused.returncode == 2
    assert "%40" in refused.stderr
    assert "Fragment-13" not in refused.stdout + refused.stderr
    _no_traceback(refused)


# -- class 2: permanent failures look permanent ------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.replace("postgres@", "no_such_role_13@"), 'role "no_such_role_13"'),
        (lambda d: d.rsplit("/", 1)[0] + "/no_such_db_13", 'database "no_such_db_13"'),
        (lambda d: d.replace(":5432", ":70000"), "invalid port"),
        (lambda d: d + ("&" if "?" in d else "?") + "sslmode=sometimes", "sslmode"),
        (lambda d: d.replace("127.0.0.1", "no-such-host-13.invalid"), "no-such-host-13"),
    ],
)
def test_a_bad_dsn_fails_at_once_in_one_line(
    tmp_path: Path, pg_dsn: str, change: Any, reason: str
) -> None:
    started = time.monotonic()
    result = run("list", "--dsn", change(pg_dsn), cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no psycopg-pool warnings
    assert lines[0].startswith("error: cannot connect to PostgreSQL")
    assert reason in lines[0]
    assert took < 10, took  # a process start and one attempt (was 36 s)
    print(f"\nCLI on a bad DSN ({reason}): exit 2 after {took:.2f} s, 1 line")


# -- class 3: no traceback, consistent exit codes ------------------------------------


async def _seed(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.save_creds("bot-1", {"registrationId": 1})
        await store.set_keys("bot-1", {"pre-key": {"1": {"k": 1}}})


def test_delete_with_stdin_closed(tmp_path: Path) -> None:
    asyncio.run(_seed(tmp_path / "wa_sessions.db"))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.close(0); sys.argv[1:] = ['delete', 'bot-1'];"
            " from wa_session_store.cli import main; sys.exit(main())",
        ],
        cwd=tmp_path,
        env=cli_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 5, result.stderr  # refused
    assert "pass --yes" in result.stderr
    _no_traceback(result)


def test_a_nul_in_a_sqlite_path(tmp_path: Path) -> None:
    result = run("list", "--dsn", "sqlite:///a%00b.db", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --dsn: path contains a NUL")
    _no_traceback(result)


def _take_terminal() -> None:
    # In the child: a session of its own, with the pty as its controlling
    # terminal, so that Ctrl-C typed into it is a SIGINT, as in a shell.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The CLI on a pseudo-terminal: what it writes, and keys typed into it."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.process = _start(
            args,
            cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            text=False,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.output = ""

    def read_until(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process ended and closed the terminal
                    chunk = b""
                if not chunk:
                    assert text in self.output, f"no {text!r} in {self.output!r}"
                self.output += chunk.decode("utf-8", "replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 20.0) -> int:
        code = self.process.wait(timeout)
        try:
            while chunk := os.read(self.master, 4096):
                self.output += chunk.decode("utf-8", "replace")
        except OSError:
            pass
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def terminals() -> Any:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.kill()


@pytest.mark.parametrize(
    ("keys", "code", "message"),
    [
        (b"\x04", 5, "no answer (end of input): nothing deleted"),  # Ctrl-D: refused
        (b"\x03", 130, "interrupted: nothing deleted"),  # Ctrl-C, no Enter
        (b"n\r", 5, "nothing deleted"),
    ],
    ids=["EOF", "Ctrl-C", "no"],
)
def test_the_delete_prompt(
    tmp_path: Path, terminals: list[Terminal], keys: bytes, code: int, message: str
) -> None:
    asyncio.run(_seed(tmp_path / "wa_sessions.db"))
    terminal = Terminal(["delete", "bot-1"], tmp_path)
    terminals.append(terminal)
    terminal.read_until("[y/N] ")
    typed = time.monotonic()
    terminal.type(keys)
    assert terminal.finish() == code, terminal.output
    took = time.monotonic() - typed
    assert message in terminal.output
    assert "Traceback" not in terminal.output
    assert took < 10, took  # no waiting for an Enter that never comes
    assert asyncio.run(_sessions(tmp_path / "wa_sessions.db")) == ["bot-1"]


async def _sessions(path: Path) -> list[str]:
    async with SQLiteStore(path) as store:
        return [info.session_id for info in await store.list_sessions()]


def test_yes_at_the_prompt_deletes(tmp_path: Path, terminals: list[Terminal]) -> None:
    asyncio.run(_seed(tmp_path / "wa_sessions.db"))
    terminal = Terminal(["delete", "bot-1"], tmp_path)
    terminals.append(terminal)
    terminal.read_until("[y/N] ")
    terminal.type(b"y\r")
    assert terminal.finish() == 0, terminal.output
    assert "deleted session 'bot-1'" in terminal.output


# -- class 6: interrupted exports and imports ---------------------------------------


async def _seed_big(path: Path, keys: int = 3000) -> None:
    async with SQLiteStore(path) as store:
        await store.import_session(
            "bot-1",
            {"registrationId": 1},
            {"pre-key": {str(n): {"private": os.urandom(32)} for n in range(keys)}},
        )


def test_ctrl_c_during_an_export_leaves_no_folder(tmp_path: Path) -> None:
    asyncio.run(_seed_big(tmp_path / "wa_sessions.db"))
    target = tmp_path / "out"
    process = _start(["export", "bot-1", str(target)], tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not target.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)  # a file system has no event to wait for
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert not target.exists(), sorted(p.name for p in target.iterdir())[:5]


def _baileys_folder(root: Path, keys: int = 50) -> Path:
    folder = root / "auth"
    folder.mkdir()
    (folder / "creds.json").write_text(json.dumps({"registrationId": 9}))
    for n in range(keys):
        (folder / f"pre-key-{n}.json").write_text(json.dumps({"n": n}))
    return folder


async def _landed(pg_dsn: str, pg_schema: str) -> bool:
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:  # creates the schema too
        return await store.load_creds(_held_session(pg_schema)) is not None


def _held_session(pg_schema: str) -> str:
    # Its own per test: the session lock is server-wide, and other test runs
    # on this server take it for sessions of their own.
    return f"bot-{pg_schema[-12:]}"


def _read_until(process: subprocess.Popen[str], text: str, seen: list[str]) -> None:
    assert process.stderr is not None
    fd = process.stderr.fileno()
    deadline = time.monotonic() + 30
    while text not in "".join(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in {''.join(seen)!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"no {text!r} in {''.join(seen)!r}"
            seen.append(chunk.decode("utf-8", "replace"))


def _import_held_at_its_lock(
    tmp_path: Path, pg_dsn: str, pg_schema: str, interrupts: int
) -> tuple[int, str, bool]:
    """Start an import whose transaction waits for a lock the test holds, send
    ``interrupts`` SIGINTs, then release the lock; (exit status, stderr, landed)."""
    asyncio.run(_landed(pg_dsn, pg_schema))  # the schema exists before the CLI runs
    folder = _baileys_folder(tmp_path)
    joiner = "&" if "?" in pg_dsn else "?"
    dsn = f"{pg_dsn}{joiner}options=-csearch_path%3D{pg_schema}"
    holder = psycopg.connect(pg_dsn)
    session = _held_session(pg_schema)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('wa_session:' || %s))", (session,))
    process = _start(["import", str(folder), "--session", session, "--dsn", dsn], tmp_path)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            # Someone waits for this session's lock: the import, nobody else's.
            while not watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objid = (hashtext('wa_session:' || %s)::bigint & 4294967295)::oid",
                (session,),
            ).fetchone()[0]:  # type: ignore[index]
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the import never reached its lock"
                time.sleep(0.02)  # polled: the server has no event for a lock wait
        seen: list[str] = []
        process.send_signal(signal.SIGINT)
        _read_until(process, "letting the write finish", seen)
        if interrupts > 1:
            process.send_signal(signal.SIGINT)
            _read_until(process, "interrupted:", seen)
        holder.rollback()  # the import's transaction may go on now
        _, rest = process.communicate(timeout=30)
        err = "".join(seen) + rest
    finally:
        holder.close()
        if process.poll() is None:
            process.kill()
    return process.returncode, err, asyncio.run(_landed(pg_dsn, pg_schema))


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("interrupts", "landed", "message"),
    [
        (1, True, "interrupted: the import had landed: imported"),
        # Abandoned while it waited for the lock: rolled back.
        (2, False, "may or may not have been imported"),
    ],
    ids=["one Ctrl-C: the write lands", "two: abandoned"],
)
def test_ctrl_c_during_an_imports_write_says_what_happened(
    tmp_path: Path, pg_dsn: str, pg_schema: str, interrupts: int, landed: bool, message: str
) -> None:
    code, err, stored = _import_held_at_its_lock(tmp_path, pg_dsn, pg_schema, interrupts)
    assert code == 130, err
    assert stored is landed
    assert "letting the write finish" in err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["reencrypt", "--batch-size", "-3"],
        ["reencrypt", "--batch-size", "1" + "0" * 5000],
        ["demo", "--duration", "nan", "--dsn", "sqlite:///x.db"],
        ["demo", "--updates", "-1", "--dsn", "sqlite:///x.db"],
        ["show", ""],
        ["show", "bad\x7fid"],
        ["export", "a\udcffb", "out"],
    ],
    ids=[
        "batch -3",
        "batch 10**5000",
        "duration nan",
        "updates -1",
        "empty id",
        "DEL",
        "surrogate",
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    env = {"WA_SESSION_STORE_KEYS": f"k1={KEY_B64}"}
    result = run(*argv, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    _no_traceback(result)
    assert not (tmp_path / "x.db").exists()
