"""Set-up shared by the fault tests that restart the local PostgreSQL server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..conftest import IN_CI


def local_cluster() -> tuple[str, str] | None:
    """``(version, "main")`` of the newest local Debian cluster, or None.

    None also when this process cannot restart it (not root, no ``pg_ctlcluster``).
    """
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    found = [p for p in Path("/etc/postgresql").glob("*/main") if p.parent.name.isdigit()]
    if not found:
        return None
    newest = max(found, key=lambda p: int(p.parent.name))
    return newest.parent.name, "main"


def need_cluster() -> tuple[str, str]:
    """:func:`local_cluster`, or a skip (a failure under ``CI=true``) without one."""
    cluster = local_cluster()
    if cluster is None:
        message = "needs root and pg_ctlcluster to restart the PostgreSQL server"
        if IN_CI:
            pytest.fail(f"CI must be able to restart the server: {message}")
        pytest.skip(message)
    return cluster
