"""The benchmark environment: the delaying proxy, scratch schemas, test data."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DSN = os.environ.get(
    "WA_SESSION_STORE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)

__all__ = [
    "DEFAULT_DSN",
    "ROOT",
    "Config",
    "Net",
    "ProxyProcess",
    "make_creds",
    "make_prekeys",
    "make_session_record",
    "scratch_schema",
]


@dataclass(frozen=True)
class Net:
    """A network path to PostgreSQL: through the proxy with ``delay`` seconds one way."""

    delay: float

    @property
    def name(self) -> str:
        return f"proxy {self.delay * 1000:g} ms"

    @property
    def ms(self) -> float:
        return self.delay * 1000


@dataclass
class Config:
    """What the command line asked for, and the live environment."""

    dsn: str
    out: Path
    quick: bool
    nets: list[Net]
    proxy: ProxyProcess
    only: set[str] | None = None
    scale: float = 1.0
    rng: random.Random = field(default_factory=lambda: random.Random(20240607))

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def proxied(self, net: Net) -> str:
        """The DSN through the proxy, with its delay set to ``net``'s."""
        self.proxy.delay(net.delay)
        return self.proxy.dsn(self.dsn)

    def wants(self, workload: str) -> bool:
        return self.only is None or workload in self.only


class ProxyProcess:
    """``tests.proxy.Proxy`` in a child process (see ``_proxy_server``)."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("hostaddr") or params.get("host") or "127.0.0.1").split(",")[0]
        if host.startswith("/"):
            raise SystemExit("the benchmarks need a TCP PostgreSQL DSN, not a Unix socket path")
        self.target_host = host
        self.target_port = int(str(params.get("port") or 5432).split(",")[0])
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._delay: float | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks._proxy_server",
                self.target_host,
                str(self.target_port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the proxy did not start (said {line!r})")
        self.port = int(line)

    def delay(self, seconds: float) -> None:
        if seconds == self._delay:
            return
        self._send(f"delay {seconds!r}")
        self._delay = seconds

    def round_trips(self) -> int:
        """Round trips forwarded so far (``tests.proxy.Proxy.round_trips``)."""
        return int(self._send("count"))

    def _send(self, command: str) -> str:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("proxy not running")
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        answer = proc.stdout.readline().strip()
        status, _, rest = answer.partition(" ")
        if status != "ok":
            raise RuntimeError(f"proxy answered {answer!r} to {command!r}")
        return rest

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.write("stop\n")
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)

    def dsn(self, base: str) -> str:
        params = conninfo_to_dict(base)
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo("", **params)


@contextmanager
def scratch_schema(dsn: str, label: str) -> Iterator[str]:
    """A fresh PostgreSQL schema name, dropped (with everything in it) afterwards."""
    name = f"wa_bench_{label}_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        # The server may be restarting (a shared machine): try for a while.
        for attempt in range(20):
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                    )
                break
            except psycopg.OperationalError:
                if attempt == 19:
                    print(f"could not drop schema {name}; drop it by hand", file=sys.stderr)
                else:
                    time.sleep(0.5)


# -- test data ---------------------------------------------------------------------


def make_prekeys(rng: random.Random, count: int, first: int = 1) -> dict[str, dict[str, Any]]:
    """``{"pre-key": {id: {"private": 32 B, "public": 33 B}}}`` as a client uploads on pairing."""
    return {
        "pre-key": {
            str(first + i): {"private": rng.randbytes(32), "public": rng.randbytes(33)}
            for i in range(count)
        }
    }


def make_session_record(rng: random.Random) -> dict[str, Any]:
    """A libsignal session record as Baileys keeps it (about 1 KB of BufferJSON)."""
    base = rng.randbytes(33)
    return {
        "_sessions": {
            base.hex()[:44]: {
                "registrationId": rng.randrange(1, 16380),
                "currentRatchet": {
                    "ephemeralKeyPair": {
                        "pubKey": rng.randbytes(33),
                        "privKey": rng.randbytes(32),
                    },
                    "lastRemoteEphemeralKey": rng.randbytes(33),
                    "previousCounter": rng.randrange(0, 50),
                    "rootKey": rng.randbytes(32),
                },
                "indexInfo": {
                    "baseKey": base,
                    "baseKeyType": 1,
                    "closed": -1,
                    "used": 1717000000000,
                    "created": 1717000000000,
                    "remoteIdentityKey": rng.randbytes(33),
                },
                "_chains": {
                    rng.randbytes(33).hex()[:44]: {
                        "chainKey": {"counter": rng.randrange(0, 99), "key": rng.randbytes(32)},
                        "chainType": 1,
                        "messageKeys": {},
                    },
                },
            }
        },
        "version": "v1",
    }


def make_creds(rng: random.Random, n: int = 0) -> dict[str, Any]:
    """A creds document shaped like Baileys' ``AuthenticationCreds`` (about 2.5 KB)."""

    def pair() -> dict[str, bytes]:
        return {"private": rng.randbytes(32), "public": rng.randbytes(32)}

    phone = f"{5511900000000 + n}"
    return {
        "noiseKey": pair(),
        "pairingEphemeralKeyPair": pair(),
        "signedIdentityKey": pair(),
        "signedPreKey": {"keyPair": pair(), "signature": rng.randbytes(64), "keyId": 1},
        "registrationId": rng.randrange(1, 16380),
        "advSecretKey": rng.randbytes(32).hex(),
        "processedHistoryMessages": [
            {"key": {"remoteJid": f"{phone}@s.whatsapp.net", "id": rng.randbytes(10).hex()}}
            for _ in range(3)
        ],
        "nextPreKeyId": 813,
        "firstUnuploadedPreKeyId": 813,
        "accountSyncCounter": 1,
        "accountSettings": {"unarchiveChats": False},
        "registered": True,
        "pairingCode": None,
        "lastPropHash": rng.randbytes(8).hex(),
        "routingInfo": rng.randbytes(24),
        "me": {"id": f"{phone}:12@s.whatsapp.net", "lid": f"{n}:12@lid", "name": f"bot {n}"},
        "account": {
            "details": rng.randbytes(120),
            "accountSignatureKey": rng.randbytes(32),
            "accountSignature": rng.randbytes(64),
            "deviceSignature": rng.randbytes(64),
        },
        "signalIdentities": [
            {
                "identifier": {"name": f"{phone}:12@s.whatsapp.net", "deviceId": 0},
                "identifierKey": rng.randbytes(33),
            }
        ],
        "platform": "smba",
        "myAppStateKeyId": rng.randbytes(6).hex(),
        "lastAccountSyncTimestamp": 1717000000,
    }
