"""Issue 13, classes 5 and 6: Baileys folders are untrusted input.

Sizes are checked before reading, links are never followed, a file swapped
after the listing (for a FIFO, a link) is refused without blocking, an
interrupted export leaves nothing behind, and lone surrogates written by
Baileys come back exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import stat
import time
from pathlib import Path

import pytest

from wa_session_store import InvalidInputError, MemoryStore
from wa_session_store.interop.baileys import export_baileys_folder, import_baileys_folder
from wa_session_store.store.base import BaseStore

CREDS = {"registrationId": 7, "noiseKey": {"private": {"type": "Buffer", "data": "AAAA"}}}
# The same document as a store takes it: Buffers as bytes (a Buffer-shaped dict is refused).
STORED_CREDS = {"registrationId": 7, "noiseKey": {"private": bytes(3)}}


def _folder(root: Path, keys: int = 3) -> Path:
    folder = root / "auth"
    folder.mkdir()
    (folder / "creds.json").write_text(json.dumps(CREDS))
    for n in range(1, keys + 1):
        (folder / f"pre-key-{n}.json").write_text(json.dumps({"n": n}))
    return folder


# -- class 5: lone surrogates, as Baileys writes them -----------------------------


async def test_a_lone_surrogate_written_by_baileys_imports_and_exports_exactly(
    store: BaseStore, tmp_path: Path
) -> None:
    folder = tmp_path / "auth"
    folder.mkdir()
    # JSON.stringify({name: "\ud83e"}) in Node: the lone surrogate as an escape.
    (folder / "creds.json").write_bytes(b'{"me":{"name":"\\ud83e","id":"1@s.whatsapp.net"}}')
    (folder / "session-1.0.json").write_bytes(b'{"x":"a\\udc00b"}')
    report = await import_baileys_folder(store, "bot", folder)
    assert report.creds_found
    assert report.key_count == 1
    creds = await store.load_creds("bot")
    assert creds == {"me": {"name": "\ud83e", "id": "1@s.whatsapp.net"}}
    assert await store.get_keys("bot", "session", ["1.0"]) == {"1.0": {"x": "a\udc00b"}}
    out = tmp_path / "out"
    await export_baileys_folder(store, "bot", out)
    assert json.loads((out / "creds.json").read_bytes()) == creds
    assert (out / "creds.json").read_bytes().isascii()


# -- class 6: untrusted folders --------------------------------------------------


async def test_an_oversized_file_is_refused_before_it_is_read(
    store: BaseStore, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    with (folder / "creds.json").open("r+b") as file:
        file.truncate(1 << 30)  # 1 GiB, sparse: costs no disk
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match="over the store's max_value_size") as info:
        await import_baileys_folder(store, "bot", folder)
    took = time.monotonic() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert "creds.json" in str(info.value)
    assert took < 2.0, took
    assert grown_mib < 64, grown_mib  # was about 3 GB
    assert await store.list_sessions() == []
    print(f"\n1 GiB creds.json refused in {took * 1000:.0f} ms, peak memory +{grown_mib:.0f} MiB")


async def test_a_file_over_a_small_limit_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "pre-key-2.json").write_text(json.dumps({"big": "x" * 5000}))
    async with MemoryStore(max_value_size=1000) as store:
        with pytest.raises(InvalidInputError, match=r"pre-key-2\.json"):
            await import_baileys_folder(store, "bot", folder)
        assert await store.list_sessions() == []


@pytest.mark.parametrize("name", ["creds.json", "pre-key-2.json", "wa-session-store-ids.json"])
async def test_a_link_out_of_the_folder_is_refused(
    store: BaseStore, tmp_path: Path, name: str
) -> None:
    folder = _folder(tmp_path)
    outside = tmp_path / "someone-elses-key.json"
    outside.write_text(json.dumps({"private": "of another account"}))
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(outside)
    with pytest.raises(InvalidInputError, match="symbolic link") as info:
        await import_baileys_folder(store, "bot", folder)
    assert name in str(info.value)
    assert await store.list_sessions() == []


async def test_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "pre-key-9.json").symlink_to("/dev/zero")
    async with MemoryStore() as store:
        with pytest.raises(InvalidInputError, match="symbolic link"):
            await asyncio.wait_for(import_baileys_folder(store, "bot", folder), 10)


async def test_a_file_swapped_for_a_fifo_after_the_listing_does_not_block(
    store: BaseStore, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, keys=600)  # three batches of reads
    victim = folder / "pre-key-599.json"

    def swap(done: int, total: int) -> None:
        if done < total and victim.is_file():
            victim.unlink()
            os.mkfifo(victim)  # nobody ever writes to it

    with pytest.raises(InvalidInputError, match="not a regular file") as info:
        await asyncio.wait_for(import_baileys_folder(store, "bot", folder, progress=swap), 20)
    assert "pre-key-599.json" in str(info.value)
    assert await store.list_sessions() == []


async def test_a_file_swapped_for_a_link_after_the_listing_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, keys=600)
    victim = folder / "pre-key-599.json"
    outside = tmp_path / "outside.json"
    outside.write_text("{}")

    def swap(done: int, total: int) -> None:
        if done < total and not victim.is_symlink():
            victim.unlink()
            victim.symlink_to(outside)

    async with MemoryStore() as store:
        with pytest.raises(InvalidInputError, match="symbolic link"):
            await import_baileys_folder(store, "bot", folder, progress=swap)
        assert await store.list_sessions() == []


async def test_an_export_cancelled_as_the_folder_appears_leaves_nothing(
    store: BaseStore, tmp_path: Path
) -> None:
    await store.import_session(
        "bot", STORED_CREDS, {"pre-key": {str(n): {"n": n} for n in range(300)}}
    )
    target = tmp_path / "out" / "auth"
    task = asyncio.ensure_future(export_baileys_folder(store, "bot", target))
    while not target.exists() and not task.done():  # noqa: ASYNC110  # a file system has no event
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not target.exists()


async def test_an_exported_folder_is_private(store: BaseStore, tmp_path: Path) -> None:
    await store.import_session("bot", STORED_CREDS, {"pre-key": {"1": {"n": 1}}})
    old = os.umask(0o022)
    try:
        await export_baileys_folder(store, "bot", tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == {0o600}


async def test_a_nul_in_a_folder_path_is_a_library_error(store: BaseStore) -> None:
    for call in (
        lambda: import_baileys_folder(store, "bot", "a\x00b"),
        lambda: export_baileys_folder(store, "bot", "a\x00b"),
    ):
        with pytest.raises(InvalidInputError, match="NUL"):
            await call()


async def test_a_number_of_thousands_of_digits_is_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "pre-key-1.json").write_text('{"n": ' + "9" * 5000 + "}")
    async with MemoryStore() as store:
        with pytest.raises(InvalidInputError, match="number of more than"):
            await import_baileys_folder(store, "bot", folder)
