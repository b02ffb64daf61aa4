"""The wa-session-store command, run as a real subprocess."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wa_session_store import AESGCMCipher, SQLiteStore
from wa_session_store.store.crypto import sealed_key_id

SECRET = b"CLI-SECRET-BYTES-0123456789abcde"
COMMANDS = [
    "check",
    "migrate",
    "list",
    "status",
    "show",
    "import",
    "export",
    "delete",
    "reencrypt",
    "demo",
]


def cli_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without WA_SESSION_STORE_* variables, plus ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WA_SESSION_STORE_")}
    environment.update(env or {})
    return environment


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, input_: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wa_session_store", *args],
        cwd=cwd,
        env=cli_environment(env),
        input=input_,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _seed(path: Path, **options: Any) -> None:
    async with SQLiteStore(path, **options) as store:
        await store.save_creds(
            "bot-1",
            {"me": {"id": "15551234567:3@s.whatsapp.net"}, "nextPreKeyId": 31, "noise": SECRET},
        )
        await store.set_keys(
            "bot-1",
            {"pre-key": {str(i): {"private": SECRET} for i in range(30)}, "session": {"p": SECRET}},
        )
        await store.set_keys("unpaired", {"pre-key": {"1": SECRET}})


def _fields(output: str) -> dict[str, str]:
    """``label: value`` lines as a dict (later labels win), whatever the alignment."""
    pairs = (line.strip().partition(":") for line in output.splitlines())
    return {label: value.strip() for label, _, value in pairs}


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(tmp_path: Path, command: str | None) -> None:
    result = run(*([command] if command else []), "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--dsn URL" in result.stdout
    assert not list(tmp_path.iterdir())  # --help touches nothing


def test_check_on_the_embedded_default(tmp_path: Path) -> None:
    result = run("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _fields(result.stdout)["schema"] == "version 1"
    assert "ok: wrote and read back creds and 3 keys" in result.stdout
    assert (tmp_path / "wa_sessions.db").exists()


@pytest.mark.postgres
def test_check_and_migrate_on_postgres(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    dsn = pg_dsn + ("&" if "?" in pg_dsn else "?") + f"options=-csearch_path%3D{pg_schema}"
    with_password = dsn.replace("postgres@", "postgres:cli-pw-s3cr3t@")
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
    migrate = run("migrate", "--dsn", with_password, cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert "is at version 2" in migrate.stdout
    assert "cli-pw-s3cr3t" not in migrate.stdout + migrate.stderr
    check = run("check", cwd=tmp_path, env={"WA_SESSION_STORE_DSN": with_password})
    assert check.returncode == 0, check.stderr
    assert _fields(check.stdout)["pool"].startswith("min 1, max 10")
    assert _fields(check.stdout)["schema"] == "version 2"
    assert "cli-pw-s3cr3t" not in check.stdout + check.stderr


async def test_list_show_and_delete(tmp_path: Path) -> None:
    await _seed(tmp_path / "wa_sessions.db")
    listing = run("list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "UPDATED", "(UTC)", "KEYS", "SIZE"]
    assert lines[1].split()[0] == "bot-1"
    assert lines[1].split()[3] == "31"
    assert lines[2].split()[0] == "unpaired"
    assert lines[2].endswith("(no creds: not paired)")
    assert lines[-1] == "2 sessions"
    as_json = json.loads(run("list", "--json", cwd=tmp_path).stdout)
    assert [(row["session"], row["keys"], row["creds"]) for row in as_json] == [
        ("bot-1", 31, True),
        ("unpaired", 1, False),
    ]
    show = run("show", "bot-1", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    shown = _fields(show.stdout)
    assert shown["account"] == "15551234567:3@s.whatsapp.net"
    assert shown["nextPreKeyId"] == "31"
    assert shown["pre-key"] == "30"
    assert shown["session"] == "1"  # the key category; the session line comes first
    for form in (SECRET.decode(), base64.b64encode(SECRET).decode(), SECRET.hex()):
        assert form not in show.stdout + listing.stdout + json.dumps(as_json)
    refused = run("delete", "bot-1", cwd=tmp_path, input_="")
    assert refused.returncode == 5  # refused: no terminal to confirm on
    assert "pass --yes" in refused.stderr
    assert "bot-1" in run("list", cwd=tmp_path).stdout
    deleted = run("delete", "bot-1", "--yes", cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert "bot-1" not in run("list", cwd=tmp_path).stdout


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    assert run("migrate", cwd=tmp_path).returncode == 0
    for args, code, message in (
        (["show", "nope"], 3, "no session 'nope'"),
        (["list", "--dsn", "mysql://x/y"], 2, "unknown store URL scheme"),
        (["list", "--dsn", "postgresql://u:pw-secret@[::1/db"], 2, "malformed PostgreSQL"),
        (["list", "--dsn", "sqlite:////no/such/folder/x.db"], 3, "no SQLite database at"),
        (["check", "--dsn", "sqlite:////no/such/folder/x.db"], 1, "cannot open SQLite database"),
        (["delete", "nope", "--yes"], 3, "no session 'nope'"),
        (["reencrypt"], 2, "WA_SESSION_STORE_KEYS"),
    ):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "pw-secret" not in result.stderr
    bad_usage = run("show", cwd=tmp_path)
    assert bad_usage.returncode == 2
    assert "usage:" in bad_usage.stderr


async def test_dsn_after_the_arguments_and_from_the_environment(tmp_path: Path) -> None:
    await _seed(tmp_path / "elsewhere.db")
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    for args, env in (
        (["show", "bot-1", "--dsn", url], {}),
        (["--dsn", url, "show", "bot-1"], {}),
        (["show", "bot-1"], {"WA_SESSION_STORE_DSN": url}),
    ):
        result = run(*args, cwd=tmp_path, env=env)
        assert result.returncode == 0, (args, result.stderr)
        assert "account:" in result.stdout
    assert not (tmp_path / "wa_sessions.db").exists()


async def test_reencrypt_from_plaintext_then_rotate(tmp_path: Path) -> None:
    db = tmp_path / "wa_sessions.db"
    await _seed(db)
    old, new = os.urandom(32), os.urandom(32)
    keys = {"WA_SESSION_STORE_KEYS": f"old={base64.b64encode(old).decode()}"}
    sealed = run("reencrypt", "--allow-plaintext", cwd=tmp_path, env=keys)
    assert sealed.returncode == 0, sealed.stderr
    assert "checked 33 rows, sealed 33 with the active key" in sealed.stdout
    assert sealed.stderr == ""  # no progress output when stderr is not a terminal
    both = {
        "WA_SESSION_STORE_KEYS": f"old={base64.b64encode(old).decode()},"
        f"new={base64.b64encode(new).decode()}",
        "WA_SESSION_STORE_ACTIVE_KEY": "new",
    }
    rotated = run("reencrypt", "--batch-size", "7", cwd=tmp_path, env=both)
    assert rotated.returncode == 0, rotated.stderr
    assert "sealed 33 with the active key" in rotated.stdout
    async with SQLiteStore(db, cipher=AESGCMCipher({"new": new}, "new")) as store:
        assert {sealed_key_id(bytes(b)) for _, b in await store._scan("keys", None, 100, 5)} == {
            "new"
        }
        assert (await store.load_creds("bot-1") or {})["noise"] == SECRET
    show = run(
        "show",
        "bot-1",
        cwd=tmp_path,
        env={"WA_SESSION_STORE_KEYS": both["WA_SESSION_STORE_KEYS"].split(",")[1]},
    )
    assert show.returncode == 0, show.stderr
    no_key = run("show", "bot-1", cwd=tmp_path)
    assert no_key.returncode == 1
    assert "encrypted" in no_key.stderr


def test_import_and_export_a_baileys_folder(tmp_path: Path) -> None:
    folder = tmp_path / "auth_info_baileys"
    folder.mkdir()
    buffer = {"type": "Buffer", "data": base64.b64encode(SECRET).decode()}
    files = {
        "creds.json": {"noiseKey": {"private": buffer, "public": buffer}, "registrationId": 9},
        "pre-key-1.json": {"private": buffer, "public": buffer},
        "session-15551234567.0.json": {"_sessions": {}},
        "sender-key-120363040000000000@g.us--15551234567--0.json": [1, 2],
        "app-state-sync-key-AAAAAJ__b.json": {"keyData": buffer},
    }
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value))
    (folder / "notes.txt").write_text("not Baileys")
    imported = run("import", str(folder), "--session", "bot-9", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "notes.txt" in imported.stdout + imported.stderr
    assert imported.stderr.count("\r") == 0  # no progress drawn into a pipe
    again = run("import", str(folder), "--session", "bot-9", cwd=tmp_path)
    assert again.returncode == 5  # refused
    assert "pass --overwrite" in again.stderr
    assert (
        run("import", str(folder), "--session", "bot-9", "--overwrite", cwd=tmp_path).returncode
        == 0
    )
    out = tmp_path / "exported"
    exported = run("export", "bot-9", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert {p.name for p in out.iterdir()} == set(files)
    assert json.loads((out / "pre-key-1.json").read_text()) == files["pre-key-1.json"]
    missing = run("import", str(tmp_path / "nope"), "--session", "x", cwd=tmp_path)
    assert missing.returncode == 3  # not found
    assert missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.stderr
