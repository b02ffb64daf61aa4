"""A real PostgreSQL primary and streaming standby, from the machine's own binaries.

``PgPair`` builds two clusters in a temporary folder: ``initdb`` for the
primary, ``pg_basebackup -R`` for the standby, each on a free port of
127.0.0.1 and run as the ``postgres`` user when this process is root (the
server refuses to run as root). Starting the pair takes a few seconds;
:meth:`PgPair.heal` rebuilds only the node that is no longer a standby of
the primary, so one pair serves many failovers. The nodes keep their ports
for their whole life, so one multi-host DSN (:meth:`PgPair.dsn`) reaches
whichever of them is the primary.

Replication is asynchronous or synchronous (``synchronous_standby_names``,
``synchronous_commit = on``), switched on the running primary
(:meth:`PgPair.set_synchronous`). Faults are real: :meth:`PgPair.stop_primary`
(``pg_ctl stop -m fast`` or ``immediate``), :meth:`PgPair.promote`
(``pg_ctl promote``), a node restarted read-only. Used by the failover tests
(the ``pg_pair`` fixture, one per session) and by benchmark workload 12.

Without the binaries or the ``postgres`` user, the fixture skips, and fails
under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

__all__ = ["Node", "PgPair", "PgPairUnavailable", "find_bindir", "pg_pair"]

#: The database the pair's DSNs name (created on the first primary).
DBNAME = "failover"
#: Seconds a node may take to start, stop or be promoted before the fixture gives up.
WAIT = 60.0


class PgPairUnavailable(RuntimeError):
    """The machine cannot run a pair (no PostgreSQL binaries, no postgres user)."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``pg_basebackup``.

    ``PG_BINDIR`` overrides it. Raises :class:`PgPairUnavailable` without one.
    """
    chosen = os.environ.get("PG_BINDIR")
    candidates = [Path(chosen)] if chosen else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = [p for p in root.iterdir() if p.name.replace(".", "").isdigit()]
        for version in sorted(versions, key=lambda p: float(p.name), reverse=True):
            candidates.append(version / "bin")
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_basebackup").exists():
            return bindir
    raise PgPairUnavailable(
        "no PostgreSQL server binaries (initdb, pg_basebackup) in /usr/lib/postgresql/*/bin "
        "or PG_BINDIR: install the postgresql package"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One cluster of the pair: its data folder, its port, and whether it runs."""

    name: str
    datadir: Path
    port: int
    running: bool = False
    #: Options the node runs with (``-c name=value`` pairs), besides the port.
    options: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as ``check`` and ``health()`` name a server."""
        return f"127.0.0.1:{self.port}"

    def dsn(self, dbname: str = DBNAME) -> str:
        """A single-host DSN of this node alone."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


class PgPair:
    """A primary and a standby streaming from it; see the module's docstring.

    Args:
        root: an empty folder for both clusters (made readable by ``postgres``).
        bindir: the server binaries (default: :func:`find_bindir`).
    """

    def __init__(self, root: Path, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = root
        self.user = self._server_user()
        self.socket_dir = root / "sockets"
        self.nodes = [
            Node("a", root / "a", _free_port()),
            Node("b", root / "b", _free_port()),
        ]
        self.primary, self.standby = self.nodes
        self.synchronous = False
        self._template: Path | None = None

    # -- set-up ------------------------------------------------------------------

    @staticmethod
    def _server_user() -> str | None:
        """The user the servers run as: ``postgres`` when root, else this user (None)."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PgPairUnavailable(
                "running as root needs a 'postgres' user to run the servers as"
            ) from None
        return "postgres"

    def _run(self, *command: str, timeout: float = WAIT) -> str:
        """Run a server binary (as the server user); its output, or RuntimeError with it."""
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def _own(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        """Build and start the pair: initdb, the primary, the database, the standby."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._own(self.root)
        self.socket_dir.mkdir(exist_ok=True)
        self._own(self.socket_dir)
        primary = self.primary
        self._run(
            "initdb", "-D", str(primary.datadir), "-A", "trust", "-U", "postgres",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        with (primary.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# the failover pair\n"
                "listen_addresses = '127.0.0.1'\n"
                "wal_level = replica\nmax_wal_senders = 6\nwal_keep_size = '128MB'\n"
                "hot_standby = on\nhot_standby_feedback = on\n"
                # Nothing here survives the machine: fsync costs seconds on a busy disk.
                "fsync = off\nfull_page_writes = off\n"
                "shared_buffers = '16MB'\nmax_connections = 60\n"
                "wal_receiver_status_interval = '1s'\nwal_retrieve_retry_interval = '200ms'\n"
                "restart_after_crash = off\nlogging_collector = off\n"
                "log_min_messages = warning\n"
            )
        with (primary.datadir / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self.start_node(primary)
        with psycopg.connect(primary.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DBNAME}")
        self._rebuild(self.standby)

    def start_node(self, node: Node, **options: str) -> None:
        """Start ``node`` with ``options`` (``-c name=value`` settings, kept for restarts)."""
        node.options = dict(options)
        settings = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            "pg_ctl", "start", "-w", "-t", str(int(WAIT)), "-D", str(node.datadir),
            "-l", str(self.root / f"{node.name}.log"),
            "-o", f"-p {node.port} -k {self.socket_dir} {settings}",
        )  # fmt: skip
        node.running = True

    def _rebuild(self, node: Node) -> None:
        """Make ``node`` a fresh standby of the primary (pg_basebackup -R), and start it."""
        if node.running:
            self.stop(node, "immediate")
        if node.datadir.exists():
            shutil.rmtree(node.datadir)
        self._run(
            "pg_basebackup", "-D", str(node.datadir), "-h", "127.0.0.1",
            "-p", str(self.primary.port), "-U", "postgres", "-R", "-X", "stream",
            "-c", "fast", "--no-sync",
        )  # fmt: skip
        # A promoted standby must not wait for a standby of its own (none is
        # there until heal() builds one): it starts asynchronous, as managed
        # services' new primaries do.
        auto = node.datadir / "postgresql.auto.conf"
        lines = auto.read_text().splitlines(keepends=True)
        auto.write_text("".join(x for x in lines if "synchronous_standby_names" not in x))
        self.start_node(node)
        self.standby = node
        if self.synchronous:
            self.set_synchronous(True)
        else:
            self.wait_streaming()

    # -- state ---------------------------------------------------------------------

    def dsn(self, dbname: str = DBNAME, **params: str) -> str:
        """The multi-host URL of both nodes (``target_session_attrs`` and ``params`` added)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@{hosts}/{dbname}" + (f"?{query}" if query else "")

    def query(self, node: Node, statement: str, dbname: str = DBNAME) -> list[tuple[object, ...]]:
        """Run ``statement`` on ``node`` in autocommit; its rows (empty if it returns none)."""
        with psycopg.connect(node.dsn(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)  # type: ignore[arg-type]  # test statements
            return cur.fetchall() if cur.description else []

    def wait_streaming(self, timeout: float = WAIT) -> None:
        """Wait until the standby streams from the primary (and is its sync standby, if set)."""
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(
                self.primary,
                "SELECT state, sync_state FROM pg_stat_replication",
                "postgres",
            )
            if any(state == "streaming" and sync == wanted for state, sync in rows):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is not streaming ({wanted}): {rows}")
            time.sleep(0.05)

    def set_synchronous(self, synchronous: bool) -> None:
        """Switch the primary between synchronous and asynchronous replication.

        Synchronous, a commit returns once the standby has flushed it
        (``synchronous_commit = on``).
        """
        names = "'*'" if synchronous else "''"
        self.query(self.primary, f"ALTER SYSTEM SET synchronous_standby_names = {names}")
        self.query(self.primary, "ALTER SYSTEM SET synchronous_commit = on")
        self.query(self.primary, "SELECT pg_reload_conf()")
        self.synchronous = synchronous
        self.wait_streaming()

    def in_recovery(self, node: Node) -> bool:
        return bool(self.query(node, "SELECT pg_is_in_recovery()", "postgres")[0][0])

    # -- faults --------------------------------------------------------------------

    def stop(self, node: Node, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (``fast`` or ``immediate``)."""
        self._run("pg_ctl", "stop", "-w", "-t", str(int(WAIT)), "-D", str(node.datadir), "-m", mode)
        node.running = False

    def stop_primary(self, mode: str = "fast") -> None:
        """Stop the primary, as a failover starts."""
        self.stop(self.primary, mode)

    def promote(self) -> float:
        """Promote the standby and wait until it accepts writes; the seconds that took.

        The roles swap: :attr:`primary` is the promoted node, :attr:`standby`
        the old primary (stopped, or whatever the test left it as).
        """
        started = time.monotonic()
        self.synchronous = False  # it has no standby of its own yet
        self._run("pg_ctl", "promote", "-w", "-t", str(int(WAIT)), "-D", str(self.standby.datadir))
        took = time.monotonic() - started
        self.primary, self.standby = self.standby, self.primary
        return took

    def start_read_only(self, node: Node) -> None:
        """Start ``node`` (an old primary) refusing writes, as a switchover leaves it."""
        self.start_node(node, default_transaction_read_only="on")

    def restart(self, node: Node, mode: str = "fast") -> None:
        """Stop ``node`` and start it again with the options it had."""
        options = node.options
        self.stop(node, mode)
        self.start_node(node, **options)

    def heal(self, *, synchronous: bool | None = None) -> None:
        """A running primary with a streaming standby again, rebuilding what must be.

        The primary is kept (started if stopped); the other node is rebuilt
        with ``pg_basebackup`` unless it still streams from it.
        """
        if not self.primary.running:
            self.start_node(self.primary)
        elif self.primary.options:
            self.restart(self.primary)
        wanted = self.synchronous if synchronous is None else synchronous
        try:
            if self.standby.running and self.in_recovery(self.standby):
                self.set_synchronous(wanted)
                return
        except (psycopg.Error, RuntimeError):
            pass
        self.synchronous = wanted
        self._rebuild(self.standby)

    def close(self) -> None:
        """Stop both servers (immediate; killing any that does not stop) and remove the folder."""
        for node in self.nodes:
            if not (node.datadir / "postmaster.pid").exists():
                continue
            with contextlib.suppress(Exception):
                self._run(
                    "pg_ctl", "stop", "-w", "-t", "10", "-D", str(node.datadir), "-m", "immediate"
                )
            _kill_straggler(node.datadir)
            node.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgPair:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _kill_straggler(datadir: Path) -> None:
    """SIGKILL the postmaster of ``datadir`` if it still runs (its pid from postmaster.pid)."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_pair() -> Iterator[PgPair]:
    """A started :class:`PgPair` in a fresh temporary folder, closed on exit."""
    with PgPair(Path(tempfile.mkdtemp(prefix="wa-pgpair-"))) as pair:
        yield pair


@pytest.fixture(scope="session")
def pg_pair() -> Iterator[PgPair]:
    """One :class:`PgPair` for the session; tests :meth:`~PgPair.heal` it first.

    A skip without PostgreSQL's binaries, a failure under ``CI=true``.
    """
    try:
        bindir = find_bindir()
        PgPair._server_user()
    except PgPairUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with PgPair(Path(tempfile.mkdtemp(prefix="wa-pgpair-")), bindir) as pair:
        yield pair
