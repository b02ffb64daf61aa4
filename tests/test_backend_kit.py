"""Backends found by URL scheme, and the contract kit on a backend from another package.

In this process, a backend "package" is a ``*.dist-info`` directory put on
``sys.path``, which is what an installed distribution is to
``importlib.metadata``: enough for the lookup's refusals (an unknown, a
doubly registered or a broken scheme).

Then a real installation: ``tests/backend_package`` (the ``kitdemo``
backend and two broken variants of it) and this project are built and
installed by pip into a fresh virtual environment, offline (``--no-index
--no-build-isolation``; the environment reuses this interpreter's installed
packages through a ``.pth`` file, so nothing is downloaded). There,
``open_store``, the CLI (``list``, ``copy``) and the contract kit run as
subprocesses: the kit passes the backend and fails each broken variant on
the one rule it breaks.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wa_session_store import (
    InvalidInputError,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    StoreConfigurationError,
    open_store,
)
from wa_session_store.cli import main
from wa_session_store.store.primitives import StorePrimitives
from wa_session_store.testing import CREDS

#: ``install(name, entry_points, module_source="")``: see the ``install`` fixture.
Install = Callable[..., None]

ROOT = Path(__file__).resolve().parents[1]
BACKEND_PACKAGE = Path(__file__).parent / "backend_package"


def _env() -> dict[str, str]:
    """The environment of a subprocess that must see only what is installed."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_importing_the_library_imports_no_test_tool() -> None:
    code = (
        "import sys, wa_session_store, wa_session_store.cli, wa_session_store.sync\n"
        "loaded = {'pytest', '_pytest', 'pytest_asyncio'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "import wa_session_store.testing\n"
        "assert 'pytest_asyncio' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the lookup, in this process ---------------------------------------------------


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(name, entry_points, module_source)``: a distribution on ``sys.path``."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def add(name: str, entry_points: dict[str, str], source: str = "") -> None:
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = [f"{scheme} = {value}" for scheme, value in entry_points.items()]
        (info / "entry_points.txt").write_text(
            "[wa_session_store.backends]\n" + "\n".join(lines) + "\n"
        )
        if source:
            (site / f"{name}.py").write_text(textwrap.dedent(source))
            modules.append(name)

    yield add
    for module in modules:
        sys.modules.pop(module, None)


def _name() -> str:
    """A module name no other test imported (imported modules are cached)."""
    return f"backend_{uuid.uuid4().hex[:8]}"


def test_an_installed_scheme_gets_the_url_and_the_options(install: Install) -> None:
    name = _name()
    install(
        name,
        {"InProc": f"{name}:factory"},
        """
        from wa_session_store import MemoryStore

        def factory(url, **options):
            store = MemoryStore(**options)
            store.url = url
            return store
        """,
    )
    store = open_store("inproc://db?x=1", max_value_size=1024)
    assert isinstance(store, MemoryStore)
    assert store.url == "inproc://db?x=1"  # type: ignore[attr-defined]  # set by the factory
    assert store.max_value_size == 1024
    assert isinstance(open_store("INPROC://db"), MemoryStore)  # schemes ignore case


def test_built_in_schemes_cannot_be_taken_over(install: Install, tmp_path: Path) -> None:
    name = _name()
    source = "def factory(url, **options):\n    raise AssertionError('hijacked')\n"
    install(
        name,
        {"postgresql": f"{name}:factory", "memory": f"{name}:factory", "mine": f"{name}:factory"},
        source,
    )
    assert isinstance(open_store("postgresql://u:pw@db.internal/x"), PostgresStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x.db'}"), SQLiteStore)
    with pytest.raises(InvalidInputError) as refused:
        open_store("nope://u:pw-secret@host/db")
    message = str(refused.value)
    assert "unknown store URL scheme 'nope'" in message
    assert "expected a built-in one (memory://, sqlite:///path, postgresql://" in message
    assert (
        "an installed backend's (mine://; entry-point group 'wa_session_store.backends')" in message
    )
    assert f"ignored, as they name built-in schemes: {name}:factory (from {name})" in message
    assert "pw-secret" not in message


def test_a_scheme_two_packages_register_is_refused(install: Install) -> None:
    install("first_pkg", {"dup": "first_pkg:factory"})
    install("second_pkg", {"dup": "second_pkg:factory"})
    with pytest.raises(StoreConfigurationError, match="several installed packages") as refused:
        open_store("dup://x")
    assert "first_pkg:factory (from first_pkg)" in str(refused.value)
    assert "second_pkg:factory (from second_pkg)" in str(refused.value)


@pytest.mark.parametrize(
    ("value", "source", "expected"),
    [
        ("{name}:factory", "import no_such_module_anywhere\n", "cannot be loaded: ModuleNotF"),
        ("{name}:missing", "", "cannot be loaded: "),
        ("{name}:factory", "factory = 42\n", "is a int, not a factory"),
        ("{name}:factory", "def factory(url, **o):\n    return {}\n", "returned a dict, not a"),
    ],
)
def test_a_broken_backend_is_a_configuration_error(
    install: Install, value: str, source: str, expected: str
) -> None:
    name = _name()
    install(name, {"broken": value.format(name=name)}, source or "x = 1\n")
    with pytest.raises(StoreConfigurationError, match=re.escape(expected)):
        open_store("broken://x")


def test_the_cli_lists_the_schemes_and_exits_2(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _name()
    install(name, {"mine": f"{name}:factory"}, "factory = 42\n")
    assert main(["list", "--dsn", "nope://x"]) == 2
    assert "an installed backend's (mine://;" in capsys.readouterr().err
    assert main(["list", "--dsn", "mine://x"]) == 2  # a broken backend: the environment
    assert "is a int, not a factory" in capsys.readouterr().err


# -- a backend package installed into a fresh virtual environment ------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with this project and ``tests/backend_package`` installed."""
    try:
        import hatchling  # noqa: F401  # builds both packages, offline
    except ImportError:
        pytest.fail("hatchling is missing: install the test extra (pip install -e '.[test]')")
    where = tmp_path_factory.mktemp("kit-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", where], check=True, timeout=60)
    python = where / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
    ).stdout.strip()
    # The packages this interpreter has (pip, hatchling, pytest, psycopg...), reused.
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "reused_packages.pth").write_text("\n".join(sorted(paths)) + "\n")
    # Built from copies: a build leaves nothing in the working tree.
    sources = where / "sources"
    project = sources / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project)
    shutil.copytree(BACKEND_PACKAGE, sources / "backend")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--no-index", "--no-deps", "--no-build-isolation", project, sources / "backend"],
        check=True,
        timeout=300,
        env=_env(),
    )
    return where


def _run(venv: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=_env(), cwd=venv)


def test_open_store_finds_the_installed_backend(venv: Path) -> None:
    code = (
        "import wa_session_store\n"
        "from wa_session_store import open_store\n"
        "print(wa_session_store.__file__)\n"
        "print(type(open_store('kitdemo://db')).__name__)\n"
        "print(type(open_store('postgresql://db.internal/x')).__name__)\n"
    )
    found = _run(venv, venv / "bin" / "python", "-c", code)
    assert found.returncode == 0, found.stderr
    where, kind, built_in = found.stdout.split()
    assert Path(where).is_relative_to(venv)  # the installed copy, not the working tree
    assert (kind, built_in) == ("KitdemoStore", "PostgresStore")


async def _seed(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.import_session("bot", CREDS, {"pre-key": {"1": b"k"}})


def test_the_cli_finds_the_installed_backend(venv: Path, tmp_path: Path) -> None:
    cli = venv / "bin" / "wa-session-store"
    listed = _run(venv, cli, "list", "--json", "--dsn", "kitdemo://db")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    status = _run(venv, cli, "status", "--dsn", "kitdemo://db")
    assert "(kitdemo)" in status.stdout, status.stdout + status.stderr
    source = tmp_path / "source.db"
    asyncio.run(_seed(source))
    copied = _run(
        venv, cli, "copy", "--from", f"sqlite:///{source}", "--to", "kitdemo://db", "--json"
    )
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["copied"] == 1
    unknown = _run(venv, cli, "list", "--dsn", "nope://x")
    assert unknown.returncode == 2
    assert (
        "installed backend's (kitdemo://, kitdemo-torn://, kitdemo-versionless://;"
        in unknown.stderr
    )
    assert "kitdemo_backend:open_kitdemo_store (from kitdemo-backend)" in unknown.stderr


def test_the_kit_passes_the_backend_and_fails_its_broken_variants(venv: Path) -> None:
    check = venv / "check"
    check.mkdir()
    shutil.copy(BACKEND_PACKAGE / "contract_check.py", check)
    # Strict asyncio mode (no configuration): the kit must not rely on auto mode.
    ran = _run(
        venv,
        venv / "bin" / "python",
        "-m",
        "pytest",
        "-q",
        "-rf",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        check,
        check / "contract_check.py",
    )
    failed = sorted(re.findall(r"^FAILED \S+::(\w+::\w+)", ran.stdout, re.MULTILINE))
    assert failed == [
        "TestTornBatch::test_a_batch_is_seen_whole_or_not_at_all",
        "TestVersionless::test_a_late_creds_write_never_replaces_a_newer_one",
    ], ran.stdout[-3000:]
    summary = ran.stdout.strip().splitlines()[-1]
    assert re.match(r"2 failed, \d+ passed in ", summary), summary
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 3 * 30 - 2, summary  # the whole kit ran, three times


def test_the_guide_names_every_primitive() -> None:
    """docs/writing-a-backend.md lists the primitives by hand (the API pages
    hide ``_`` names): it must name exactly those a backend has to implement."""
    guide = (ROOT / "docs" / "writing-a-backend.md").read_text()
    table = guide.split("| primitive |")[1].split("\n\n")[0]
    named = set(re.findall(r"`(_\w+)\(", table))
    assert named == set(StorePrimitives.__abstractmethods__)
