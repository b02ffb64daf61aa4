"""Issue 20, class 9: the CLI as an operator meets it. One exit status per
condition whatever the command, valid JSON with ``ok: false`` from every
``--json`` command on every failure, read-only commands that never create a
store, and messages worded for the command line rather than for Python.

Every test runs the real command as a subprocess."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from wa_session_store import AESGCMCipher, SQLiteStore

from .test_cli import cli_environment, run

ROOT = Path(__file__).resolve().parents[1]
KEY_B64 = base64.b64encode(os.urandom(32)).decode()
PASSWORD = "Exit-Pw-s3cr3t"
# Python spelled out to an operator: a keyword argument or a method call.
PYTHONISM = re.compile(r"\b[a-z_]+=(?:True|False)\b|\b[a-z_]+\(\)|AESGCMCipher")

# The table: every condition, one status (docs/cli.md#exit-status).
OK, FAILED, USAGE, NOT_FOUND, UNAVAILABLE, REFUSED, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


def _failure(result: subprocess.CompletedProcess[str], status: int, kind: str) -> dict[str, Any]:
    """The JSON a failed ``--json`` command printed, checked against its exit status."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert document["ok"] is False, document
    assert document["exit_status"] == status, document
    assert document["error"] == kind, document
    assert document["message"], document
    assert "Traceback" not in result.stderr, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert not PYTHONISM.search(result.stdout + result.stderr), result.stdout + result.stderr
    return document


def _one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not PYTHONISM.search(result.stdout + result.stderr), result.stderr
    return result.stderr


async def _seed(path: Path, **options: Any) -> None:
    async with SQLiteStore(path, **options) as store:
        await store.save_creds("bot-1", {"registrationId": 1})
        await store.set_keys("bot-1", {"pre-key": {"1": {"k": 1}}})


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    asyncio.run(_seed(tmp_path / "wa_sessions.db"))
    return f"sqlite:///{tmp_path / 'wa_sessions.db'}"


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- one status per condition, whatever the command ----------------------------------


@pytest.mark.parametrize(
    "argv",
    [["show", "nope"], ["export", "nope", "out"], ["delete", "nope", "--yes"]],
    ids=["show", "export", "delete"],
)
def test_a_missing_session_is_not_found_for_every_command(
    tmp_path: Path, seeded: str, argv: list[str]
) -> None:
    stderr = _one_line(run(*argv, "--dsn", seeded, cwd=tmp_path), NOT_FOUND)
    assert "no session 'nope'" in stderr
    assert not (tmp_path / "out").exists()


def test_refusals_are_refused_for_every_command(tmp_path: Path, seeded: str) -> None:
    folder = tmp_path / "auth"
    folder.mkdir()
    (folder / "creds.json").write_text(json.dumps({"registrationId": 9}))
    exists = run("import", str(folder), "--session", "bot-1", "--dsn", seeded, cwd=tmp_path)
    assert "--overwrite" in _one_line(exists, REFUSED)
    unconfirmed = run("delete", "bot-1", "--dsn", seeded, cwd=tmp_path, input_="")
    assert "--yes" in _one_line(unconfirmed, REFUSED)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    asyncio.run(_conflicting(tmp_path / "other.db"))
    conflict = run("copy", "--from", seeded, "--to", other, cwd=tmp_path)
    assert conflict.returncode == REFUSED, conflict.stderr
    assert "bot-1: conflict:" in conflict.stdout
    assert "pass --overwrite" in conflict.stdout
    assert not PYTHONISM.search(conflict.stdout + conflict.stderr), conflict.stdout
    as_json = run("copy", "--from", seeded, "--to", other, "--json", cwd=tmp_path)
    report = _failure(as_json, REFUSED, "refused")
    assert report["conflict"] == 1
    assert "pass --overwrite" in report["sessions"][0]["detail"]


async def _conflicting(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.save_creds("bot-1", {"registrationId": 2})


def test_import_of_a_missing_folder_is_not_found_and_creates_nothing(tmp_path: Path) -> None:
    result = run("import", str(tmp_path / "nope"), "--session", "x", cwd=tmp_path)
    assert "no folder at" in _one_line(result, NOT_FOUND)
    assert not (tmp_path / "wa_sessions.db").exists()


def test_a_newer_schema_is_unavailable(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "wa_sessions.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    for command in (["list"], ["check"], ["show", "x"]):
        stderr = _one_line(run(*command, cwd=tmp_path), UNAVAILABLE)
        assert "upgrade wa_session_store" in stderr
    as_json = run("status", "--json", cwd=tmp_path)
    assert "upgrade wa_session_store" in _failure(as_json, UNAVAILABLE, "unavailable")["message"]


@pytest.mark.postgres
def test_an_unreachable_store_is_unavailable_with_json(tmp_path: Path, closed_port: int) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed_port}/test"
    # In parallel: each spends its retries (2 s and 4 s of backoff) on the refused port.
    processes = {
        command: subprocess.Popen(
            [sys.executable, "-m", "wa_session_store", command, "--json", "--dsn", url],
            cwd=tmp_path,
            env=cli_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ("status", "list")
    }
    for command, process in processes.items():
        out, err = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        document = _failure(result, UNAVAILABLE, "unavailable")
        assert "failed after 3 attempts" in document["message"], command
        assert document["message"] in err


# -- read-only commands never create a store ---------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--json"],
        ["status"],
        ["status", "--json"],
        ["show", "bot-1"],
        ["export", "bot-1", "out"],
        ["delete", "bot-1", "--yes"],
        ["reencrypt"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_a_mistyped_sqlite_path_is_not_found_and_not_created(
    tmp_path: Path, seeded: str, argv: list[str]
) -> None:
    typo = tmp_path / "wa_session.db"  # the store is wa_sessions.db
    env = {"WA_SESSION_STORE_KEYS": f"k={KEY_B64}"}
    result = run(*argv, "--dsn", f"sqlite:///{typo}", cwd=tmp_path, env=env)
    if "--json" in argv:
        message = _failure(result, NOT_FOUND, "not_found")["message"]
        assert message in result.stderr
    else:
        message = _one_line(result, NOT_FOUND)
        assert result.stdout == ""
    assert f"no SQLite database at '{typo}'" in message
    assert not typo.exists()
    assert not (tmp_path / "out").exists()


def test_the_default_store_missing_says_how_to_name_one(tmp_path: Path) -> None:
    stderr = _one_line(run("list", cwd=tmp_path), NOT_FOUND)
    assert f"no SQLite database at '{tmp_path / 'wa_sessions.db'}'" in stderr
    assert "--dsn" in stderr
    assert "WA_SESSION_STORE_DSN" in stderr
    assert not (tmp_path / "wa_sessions.db").exists()


def test_an_empty_sqlite_file_is_no_store(tmp_path: Path) -> None:
    (tmp_path / "wa_sessions.db").touch()
    result = run("status", "--json", cwd=tmp_path)
    assert "no session store" in _failure(result, NOT_FOUND, "not_found")["message"]


def test_commands_that_create_a_store_still_do(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    folder.mkdir()
    (folder / "creds.json").write_text(json.dumps({"registrationId": 9}))
    for argv, name in (
        (["check"], "a.db"),
        (["migrate"], "b.db"),
        (["import", str(folder), "--session", "bot"], "c.db"),
    ):
        result = run(*argv, "--dsn", f"sqlite:///{tmp_path / name}", cwd=tmp_path)
        assert result.returncode == OK, result.stderr
        assert (tmp_path / name).exists()
    listed = run("list", "--json", "--dsn", f"sqlite:///{tmp_path / 'c.db'}", cwd=tmp_path)
    assert [row["session"] for row in json.loads(listed.stdout)] == ["bot"]


@pytest.mark.postgres
def test_a_database_without_tables_is_not_found_and_left_alone(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    dsn = pg_dsn + ("&" if "?" in pg_dsn else "?") + f"options=-csearch_path%3D{pg_schema}"
    listed = run("list", "--dsn", dsn, cwd=tmp_path)
    assert "wa-session-store migrate" in _one_line(listed, NOT_FOUND)
    status = run("status", "--json", "--dsn", dsn, cwd=tmp_path)
    assert "no session store" in _failure(status, NOT_FOUND, "not_found")["message"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (pg_schema,)
        ).fetchone()
    assert tables == (0,)  # nothing created
    assert run("migrate", "--dsn", dsn, cwd=tmp_path).returncode == OK
    assert json.loads(run("list", "--json", "--dsn", dsn, cwd=tmp_path).stdout) == []


# -- every --json command prints JSON on every failure --------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "status", "kind"),
    [
        (["list", "--json", "--bogus"], {}, USAGE, "usage"),
        (["status", "--json", "extra"], {}, USAGE, "usage"),
        (["copy", "--json", "--from", "sqlite:///a.db"], {}, USAGE, "usage"),
        (["list", "--json", "--dsn", "mysql://x/y"], {}, USAGE, "usage"),
        (["status", "--json", "--dsn", f"postgresql://u:{PASSWORD}@[::1/db"], {}, USAGE, "usage"),
        (["list", "--json"], {"WA_SESSION_STORE_KEYS": "not-a-key-list"}, USAGE, "usage"),
        (
            ["copy", "--json", "--from", "sqlite:///a.db", "--to", "sqlite:///a.db"],
            {},
            USAGE,
            "usage",
        ),
        (
            ["copy", "--json", "--from", "sqlite:///a.db", "--to", "memory://", "bad\x7fid"],
            {},
            USAGE,
            "usage",
        ),
        (
            ["copy", "--json", "--from", "sqlite:///none.db", "--to", "memory://"],
            {},
            NOT_FOUND,
            "not_found",
        ),
    ],
    ids=[
        "unknown option",
        "extra argument",
        "missing --to",
        "unknown scheme",
        "malformed URL",
        "bad key variable",
        "same store",
        "bad session id",
        "missing source",
    ],
)
def test_json_commands_print_json_on_every_failure(
    tmp_path: Path, argv: list[str], env: dict[str, str], status: int, kind: str
) -> None:
    asyncio.run(_seed(tmp_path / "a.db"))
    document = _failure(run(*argv, cwd=tmp_path, env=env), status, kind)
    assert set(document) >= {"ok", "exit_status", "error", "message"}


@pytest.mark.postgres
def test_json_on_a_dsn_the_server_refuses(tmp_path: Path, pg_dsn: str) -> None:
    url = pg_dsn.replace("postgres@", f"no_such_role_20:{PASSWORD}@")
    for command in ("status", "list"):
        document = _failure(run(command, "--json", "--dsn", url, cwd=tmp_path), USAGE, "usage")
        assert 'role "no_such_role_20"' in document["message"]


def test_json_and_exit_status_when_interrupted(tmp_path: Path) -> None:
    # A server that accepts and never answers: the command waits in its connect.
    with socket.socket() as deaf:
        deaf.bind(("127.0.0.1", 0))
        deaf.listen()
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{deaf.getsockname()[1]}/test"
        process = subprocess.Popen(
            [sys.executable, "-m", "wa_session_store", "status", "--json", "--dsn", url],
            cwd=tmp_path,
            env=cli_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deaf.settimeout(30)
            connection, _ = deaf.accept()  # the command is running: its Ctrl-C handler is set
            with connection:
                process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert _failure(result, INTERRUPTED, "interrupted")["message"].startswith("interrupted")


def test_status_json_reports_ok_on_success(tmp_path: Path, seeded: str) -> None:
    result = run("status", "--json", "--dsn", seeded, cwd=tmp_path)
    assert result.returncode == OK, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["health"]["ok"] is True
    assert [row["session"] for row in report["sessions"]] == ["bot-1"]


# -- messages for the command line, not for Python -------------------------------------


async def _seed_sealed(path: Path) -> None:
    key = base64.b64decode(KEY_B64)
    await _seed(path, cipher=AESGCMCipher({"k1": key}, "k1"))


def test_encryption_messages_name_the_variables(tmp_path: Path, seeded: str) -> None:
    keys = {"WA_SESSION_STORE_KEYS": f"k1={KEY_B64}"}
    plaintext = run("show", "bot-1", "--dsn", seeded, cwd=tmp_path, env=keys)
    stderr = _one_line(plaintext, FAILED)
    assert "wa-session-store reencrypt --allow-plaintext" in stderr
    asyncio.run(_seed_sealed(tmp_path / "sealed.db"))
    sealed = f"sqlite:///{tmp_path / 'sealed.db'}"
    stderr = _one_line(run("show", "bot-1", "--dsn", sealed, cwd=tmp_path), FAILED)
    assert "'k1'" in stderr
    assert "WA_SESSION_STORE_KEYS" in stderr
    as_json = run("list", "--json", "--dsn", sealed, cwd=tmp_path)
    assert as_json.returncode == OK  # listing reads metadata only


def test_an_old_schema_says_which_command_upgrades_it(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "wa_sessions.db") as conn:
        conn.execute("CREATE TABLE unrelated (x)")
        conn.execute("PRAGMA user_version = 0")
    stderr = _one_line(run("show", "x", cwd=tmp_path), NOT_FOUND)
    assert "wa-session-store migrate" in stderr


def test_the_library_phrases_the_cli_rewords_still_exist() -> None:
    """Each phrase the CLI translates is still in the library's messages: a
    rewording in the library would otherwise reach operators untranslated."""
    from wa_session_store.cli.exit_codes import FOR_THE_COMMAND_LINE

    source = "\n".join(
        path.read_text()
        for path in (ROOT / "src" / "wa_session_store").rglob("*.py")
        if not path.name.startswith("_cli")
    )
    flat = re.sub(r'"\s*\n\s*f?"', "", source)  # implicit concatenation of string literals
    for python, _ in FOR_THE_COMMAND_LINE:
        assert python in flat, python


# -- documented ------------------------------------------------------------------------


def test_the_table_is_in_help_and_docs(tmp_path: Path) -> None:
    from wa_session_store.cli.exit_codes import ExitStatus

    assert [int(s) for s in ExitStatus] == [
        OK,
        FAILED,
        USAGE,
        NOT_FOUND,
        UNAVAILABLE,
        REFUSED,
        INTERRUPTED,
    ]
    shown = run("--help", cwd=tmp_path).stdout
    cli_md = (ROOT / "docs" / "cli.md").read_text()
    security_md = (ROOT / "docs" / "security.md").read_text()
    for status in ExitStatus:
        assert re.search(rf"\b{int(status)}\s+{status.kind.replace('_', ' ')}\b", shown), status
        assert re.search(rf"^\| {int(status)} \| `{status.kind}` \|", cli_md, re.M), status
        assert f"{int(status)} {status.kind.replace('_', ' ')}" in security_md, status
    assert "ok: false" in cli_md
    assert "ok: false" in security_md
