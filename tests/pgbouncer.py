"""A real PgBouncer in transaction pooling mode, in front of the test server.

Hosted PostgreSQL services put one in front of the database; in transaction
mode a client's consecutive transactions may run on different server
connections, so nothing may rely on session state (session advisory locks,
LISTEN, server-side prepared statements before PgBouncer 1.21).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .proxy import target_dsn

__all__ = ["pgbouncer_dsn", "running_pgbouncer"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pgbouncer_dsn() -> Iterator[str]:
    """The test DSN routed through a PgBouncer (transaction mode) of the test's own.

    One per test: a test that breaks the server (a restart, terminated
    backends) or leaves clients behind cannot leave a later test a PgBouncer
    whose pools are stuck; starting one takes a few milliseconds.
    """
    with running_pgbouncer(target_dsn()) as dsn:
        yield dsn


@contextmanager
def running_pgbouncer(dsn: str) -> Iterator[str]:
    """``dsn`` routed through a PgBouncer (transaction mode) started for it,
    stopped on exit (a failure under CI=true, a skip elsewhere, without pgbouncer)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    server = conninfo_to_dict(dsn)
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="wa-pgbouncer-"))
    folder.chmod(0o777)  # PgBouncer runs as the postgres user when we are root
    dbname = server.get("dbname", "test")
    backend = (
        f"host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)} "
        f"dbname={dbname} user={server.get('user', 'postgres')}"
    )
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n{dbname} = {backend}\n\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        "auth_type = any\npool_mode = transaction\n"
        "max_client_conn = 500\ndefault_pool_size = 20\n"
        # The fault tests restart the server under this session-wide PgBouncer:
        # check a server connection before reusing it, so dead ones are replaced.
        "server_check_delay = 0\nserver_check_query = select 1\nserver_login_retry = 1\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
        f"unix_socket_dir = {folder}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    config.chmod(0o644)
    command = [binary, str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"pgbouncer did not start: {error[-500:]}")
                time.sleep(0.05)
        params = dict(server)
        params.update(host="127.0.0.1", port=str(port))
        yield make_conninfo("", **params)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)
