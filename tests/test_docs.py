"""Every ```python block of README.md and docs/*.md runs: one test per block, id ``file:line``.

The convention a block is written to:

- **Alone.** Each block runs by itself, in a fresh namespace and a fresh
  temporary current directory, so it imports what it uses and a relative
  ``sqlite:///wa_sessions.db`` lands in that directory.
- **Top-level ``await``** is allowed, as in ``python -m asyncio``: a block is
  compiled with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` and, if it awaits, run in
  a new event loop; a block that does not is executed as a script (and may
  call ``asyncio.run`` itself).
- **Environment.** ``DATABASE_URL`` is a SQLite file in that directory; for a
  block that uses PostgreSQL (it mentions ``PostgresStore`` or a
  ``postgresql://`` URL) it is the test server, in a schema of the block's
  own (dropped afterwards). ``WA_STORE_KEY`` is a fresh base64 AES-256 key.
- **The example host.** A ``postgresql://`` URL whose host is ``db.internal``
  (``postgresql://bot:secret@db.internal:5432/bots``) is replaced by the test
  server's URL, in that schema. Other literal URLs are left alone.
- **Stand-ins** for what is outside the project are in the namespace:
  ``make_client(creds=None, keys=None, **options)`` returns a
  :class:`FakeClient` (``.on(event, handler)`` registers, ``.emit(event,
  *args)`` calls the handlers, ``.disconnect()``), ``pair_with_qr_code()``
  returns fresh creds as a client would after pairing, and ``start_bot(auth)``
  makes a client with the auth state's creds and keys and subscribes
  ``auth.creds_updated``.
- **SIGTERM.** ``install_shutdown_handler`` is the real one; a real SIGTERM is
  raised on the block's loop 0.2 s after a block installs it, so
  ``await stopped.wait()`` returns once the auth states are saved and closed.
- **Clean-up.** Auth states, stores and sync stores a block leaves open are
  closed after it; a block that runs for more than 60 s fails.

Other fences must name their language (```text, ```sh, ```sql, ...) and are
not run; ```py, ```python3 and ```pycon are refused, so that no Python block
escapes the test by its spelling.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import inspect
import os
import re
import signal
import textwrap
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

import wa_session_store
import wa_session_store.auth.restore
from wa_session_store import close_all
from wa_session_store.store.base import BaseStore
from wa_session_store.sync import SyncStore

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

BLOCK_TIMEOUT = 60.0
SIGTERM_AFTER = 0.2
EXAMPLE_URL = re.compile(r"postgres(?:ql)?://[^\s\"'@/]*@db\.internal(?::\d+)?(?:/[^\s\"'?]*)?")
USES_POSTGRES = re.compile(r"PostgresStore|postgres(?:ql)?://")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
MISSPELLED_PYTHON = {"py", "py3", "python3", "pycon", "ipython"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    source: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        language = opening["info"].split()[0].lower() if opening["info"].strip() else ""
        blocks.append(Block(path, i + 1, language, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in _blocks(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]


# -- the stand-ins ------------------------------------------------------------------


class FakeClient:
    """What ``make_client()`` returns: a WhatsApp client that never connects."""

    def __init__(self, creds: Any = None, keys: Any = None, **options: Any) -> None:
        self.creds = creds
        self.keys = keys
        self.options = options
        self.handlers: dict[str, list[Callable[..., Any]]] = {}

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    def disconnect(self) -> None:
        self.handlers.clear()


def make_client(creds: Any = None, keys: Any = None, **options: Any) -> FakeClient:
    return FakeClient(creds, keys, **options)


def pair_with_qr_code() -> dict[str, Any]:
    """Fresh creds, shaped as Baileys' after a QR code was scanned."""

    def pair() -> dict[str, bytes]:
        return {"private": os.urandom(32), "public": os.urandom(32)}

    return {
        "noiseKey": pair(),
        "pairingEphemeralKeyPair": pair(),
        "signedIdentityKey": pair(),
        "signedPreKey": {"keyPair": pair(), "signature": os.urandom(64), "keyId": 1},
        "registrationId": int.from_bytes(os.urandom(2), "big") & 0x3FFF,
        "advSecretKey": base64.b64encode(os.urandom(32)).decode(),
        "nextPreKeyId": 31,
        "firstUnuploadedPreKeyId": 31,
        "accountSyncCounter": 0,
        "registered": True,
        "me": {"id": "15551234567:1@s.whatsapp.net", "name": "Docs bot"},
        "platform": "android",
        "processedHistoryMessages": [],
    }


def start_bot(auth: Any) -> FakeClient:
    client = make_client(creds=auth.creds, keys=auth.keys)
    client.on("creds.update", auth.creds_updated)
    return client


STAND_INS: dict[str, Any] = {
    "make_client": make_client,
    "pair_with_qr_code": pair_with_qr_code,
    "start_bot": start_bot,
}


# -- running a block ------------------------------------------------------------------


@pytest.fixture
def sigterm_after_shutdown_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """install_shutdown_handler() as it is, then a real SIGTERM a moment later."""
    real = wa_session_store.auth.restore.install_shutdown_handler

    def install_then_terminate(*args: Any, **kwargs: Any) -> asyncio.Event:
        stopped = real(*args, **kwargs)
        # On the block's loop: never delivered once the loop (and its handler) is gone.
        asyncio.get_running_loop().call_later(SIGTERM_AFTER, signal.raise_signal, signal.SIGTERM)
        return stopped

    for module in (wa_session_store, wa_session_store.auth.restore):
        monkeypatch.setattr(module, "install_shutdown_handler", install_then_terminate)


@pytest.fixture
def block_guard() -> Iterator[None]:
    """Signal handlers as they were; a SIGALRM that fails a block that hangs."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the block ran for more than {BLOCK_TIMEOUT:.0f} s")

    previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, BLOCK_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _postgres_url(request: pytest.FixtureRequest) -> str:
    """The test server, with a schema of this block's own first on the search_path."""
    dsn: str = request.getfixturevalue("pg_dsn")
    schema = f"wa_docs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    request.addfinalizer(drop)
    params = {**conninfo_to_dict(dsn), "options": f"-c search_path={schema}"}
    return "postgresql://?" + urlencode(params, quote_via=quote)


async def _close_leftovers(namespace: dict[str, Any]) -> None:
    await close_all()  # every auth state of the process not closed yet
    for value in list(namespace.values()):
        if isinstance(value, SyncStore):
            await asyncio.to_thread(value.close)
        elif isinstance(value, BaseStore) and value.is_open:
            await value.close()


async def _await_block(code: Any, namespace: dict[str, Any]) -> None:
    try:
        await eval(code, namespace)
    finally:
        await _close_leftovers(namespace)


def _exec_block(code: Any, namespace: dict[str, Any]) -> None:
    try:
        exec(code, namespace)
    finally:
        for value in list(namespace.values()):
            if isinstance(value, SyncStore):
                value.close()


@pytest.fixture
def run_block(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    sigterm_after_shutdown_handler: None,
    block_guard: None,
) -> Callable[[Block], dict[str, Any]]:
    """Runs a block by the convention above; returns its namespace, or fails the test."""

    def run(block: Block) -> dict[str, Any]:
        monkeypatch.chdir(tmp_path)
        source = block.source
        database_url = f"sqlite:///{tmp_path / 'wa_sessions.db'}"
        if USES_POSTGRES.search(source):
            database_url = _postgres_url(request)
            source = EXAMPLE_URL.sub(lambda _: database_url, source)
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("WA_STORE_KEY", base64.b64encode(os.urandom(32)).decode())
        # Line numbers in tracebacks are the page's: the block starts after its fence.
        code = compile(
            "\n" * block.line + source,
            str(block.path),
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        namespace: dict[str, Any] = {"__name__": "__main__", **STAND_INS}
        failure = None
        try:
            if code.co_flags & inspect.CO_COROUTINE:
                asyncio.run(_await_block(code, namespace))
            else:
                _exec_block(code, namespace)
        except Exception as exc:
            failure = _failure(block, exc)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        capsys.readouterr()  # what an example prints is not a figure of the test summary
        return namespace

    return run


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            b, id=b.id, marks=[pytest.mark.postgres] if USES_POSTGRES.search(b.source) else []
        )
        for b in PYTHON_BLOCKS
    ],
)
def test_python_block_runs(block: Block, run_block: Callable[[Block], dict[str, Any]]) -> None:
    run_block(block)


def _failure(block: Block, exc: BaseException) -> str:
    """The traceback from the block's own frames on, with the page's lines."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != str(block.path):
        tb = tb.tb_next
    trace = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    return f"the example at {block.id} failed:\n{trace}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_fence_names_its_language(page: Path) -> None:
    unnamed = [f"line {b.line}" for b in _blocks(page) if not b.language]
    misspelled = [
        f"line {b.line} ({b.language})" for b in _blocks(page) if b.language in MISSPELLED_PYTHON
    ]
    assert not unnamed, f"fences without a language (use text, sh, sql, ...): {unnamed}"
    assert not misspelled, f"Python fences must say python to be run: {misspelled}"


def test_the_blocks_are_found() -> None:
    assert len(PYTHON_BLOCKS) >= 10
    assert any(b.path.name == "README.md" for b in PYTHON_BLOCKS)


# -- the convention itself ------------------------------------------------------------


def _example(source: str) -> Block:
    return Block(ROOT / "docs" / "example.md", 1, "python", textwrap.dedent(source))


def test_top_level_await_and_scripts_both_run(
    run_block: Callable[[Block], dict[str, Any]],
) -> None:
    awaited = run_block(_example("import asyncio\nawait asyncio.sleep(0)\nx = 1\n"))
    assert awaited["x"] == 1
    script = run_block(
        _example("""
            import asyncio, os
            async def main():
                return os.environ["DATABASE_URL"]
            url = asyncio.run(main())
        """)
    )
    assert script["url"].startswith("sqlite:///")
    assert Path.cwd().name in script["url"]


def test_a_wait_for_sigterm_gets_a_real_one(run_block: Callable[[Block], dict[str, Any]]) -> None:
    namespace = run_block(
        _example("""
            from wa_session_store import install_shutdown_handler, open_store, use_auth_state
            async with open_store("sqlite:///wa_sessions.db") as store:
                auth = await use_auth_state(store, "bot", throttle=60)
                await auth.save_creds(pair_with_qr_code())
                auth.creds_updated({**auth.creds, "accountSyncCounter": 5})  # throttled
                await install_shutdown_handler().wait()
                saved = await store.load_creds("bot")
        """)
    )
    assert namespace["auth"].closed
    assert namespace["saved"]["accountSyncCounter"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.postgres
def test_the_example_host_is_the_test_server(run_block: Callable[[Block], dict[str, Any]]) -> None:
    namespace = run_block(
        _example("""
            from wa_session_store import open_store
            async with open_store("postgresql://bot:secret@db.internal:5432/bots") as store:
                await store.save_creds("s1", {"registrationId": 1})
                sessions = await store.list_sessions()
        """)
    )
    assert [s.session_id for s in namespace["sessions"]] == ["s1"]


def test_a_failure_names_the_page_and_line(run_block: Callable[[Block], dict[str, Any]]) -> None:
    block = Block(ROOT / "docs" / "example.md", 40, "python", "x = 1\nundefined_name\n")
    with pytest.raises(pytest.fail.Exception, match=r"example\.md\", line 42") as failed:
        run_block(block)
    assert "NameError" in str(failed.value)
