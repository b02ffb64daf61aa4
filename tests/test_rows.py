"""The I/O-free layer of the stores (rows.py, maintenance.py), with no backend at all."""

from __future__ import annotations

import asyncio
import os

import pytest

from wa_session_store import AESGCMCipher, DecodeError, DecryptionError, InvalidInputError
from wa_session_store.store.crypto import sealed_key_id
from wa_session_store.store.maintenance import (
    DECODE_SLICE,
    creds_pages,
    health_timeout,
    reencrypt_rows,
)
from wa_session_store.store.records import CredsPage, CredsRow, ReencryptProgress, RowKey
from wa_session_store.store.rows import RowCodec, category_query, check_page_limit, page_end

K1, K2 = os.urandom(32), os.urandom(32)
CREDS = {"registrationId": 7, "noiseKey": {"private": b"\x01" * 32}}


def test_creds_round_trip_through_rows() -> None:
    rows = RowCodec()
    blob = rows.creds_value("s", CREDS)
    assert isinstance(blob, bytes)
    assert rows.creds("s", blob) == CREDS


def test_sealed_rows_open_only_for_their_session() -> None:
    rows = RowCodec(cipher=AESGCMCipher({"k1": K1}, "k1"))
    blob = rows.creds_value("s", CREDS)
    assert sealed_key_id(blob) == "k1"
    assert rows.creds("s", blob) == CREDS
    with pytest.raises(DecryptionError):
        rows.creds("other", blob)  # the session is the associated data


def test_key_rows_keep_deletions_and_seal_values() -> None:
    rows = RowCodec(cipher=AESGCMCipher({"k1": K1}, "k1"))
    batch = rows.key_rows("s", {"pre-key": {"1": {"a": 1}, "2": None}}, max_write=10**6)
    by_id = {key_id: value for _, key_id, value in batch}
    assert by_id["2"] is None
    value = by_id["1"]
    assert value is not None
    assert rows.key("s", "pre-key", "1", value) == {"a": 1}


def test_a_write_over_the_limit_is_refused_before_any_io() -> None:
    rows = RowCodec()
    with pytest.raises(InvalidInputError, match="split the batch"):
        rows.key_rows("s", {"session": {"1": "x" * 100}}, max_write=50)


def test_plaintext_rows_need_allow_plaintext_under_a_cipher() -> None:
    plain = RowCodec().creds_value("s", CREDS)
    with pytest.raises(DecryptionError, match="allow_plaintext"):
        RowCodec(cipher=AESGCMCipher({"k1": K1}, "k1")).creds("s", plain)
    assert (
        RowCodec(cipher=AESGCMCipher({"k1": K1}, "k1"), allow_plaintext=True).creds("s", plain)
        == CREDS
    )
    sealed = RowCodec(cipher=AESGCMCipher({"k1": K1}, "k1")).creds_value("s", CREDS)
    with pytest.raises(DecryptionError, match="encrypted"):
        RowCodec().creds("s", sealed)


def test_a_page_reports_rows_that_do_not_decode_and_observes_versions() -> None:
    rows = RowCodec()
    good = rows.creds_value("a", CREDS)
    page = rows.creds_page([("a", good, 10**20), ("b", b"not json", 1)], limit=2)
    assert page.creds == {"a": CREDS}
    assert isinstance(page.failed["b"], DecodeError)
    assert page.next_after == "b"
    assert rows.clock.next() > 10**20


def test_bad_arguments_are_refused_with_what_is_allowed() -> None:
    with pytest.raises(InvalidInputError, match="1 to 100000"):
        check_page_limit(0)
    with pytest.raises(InvalidInputError, match="limit"):
        category_query(["session"], None, 0)
    assert category_query(["session", "pre-key", "session"], ("pre-key", "1"), 5) == (
        ["pre-key", "session"],
        ("pre-key", "1"),
        5,
    )
    with pytest.raises(InvalidInputError, match="max_value_size"):
        RowCodec(max_value_size=0)
    assert health_timeout(None, 2.5) == 2.5
    with pytest.raises(InvalidInputError, match="timeout"):
        health_timeout(-1, 2.5)


async def test_pages_are_read_ahead_and_end_on_a_short_page() -> None:
    stored: list[CredsRow] = [(f"s{i}", b"{}", i) for i in range(5)]
    asked: list[str | None] = []

    async def fetch(after: str | None) -> tuple[CredsPage, list[CredsRow]] | None:
        asked.append(after)
        found = [row for row in stored if after is None or row[0] > after][:2]
        return (CredsPage(next_after=page_end(found, 2)), found) if found else None

    rows = RowCodec()
    pages = [page async for page in creds_pages(fetch, rows.decode_creds)]
    assert [list(page.creds) for page in pages] == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert asked == [None, "s1", "s3"]
    # A full last page: the next fetch finds nothing, and no empty page is yielded.
    del stored[4]
    asked.clear()
    pages = [page async for page in creds_pages(fetch, rows.decode_creds)]
    assert [list(page.creds) for page in pages] == [["s0", "s1"], ["s2", "s3"]]
    assert asked == [None, "s1", "s3"]


async def test_the_next_page_streams_in_while_a_page_decodes() -> None:
    # Decoding is CPU work; done in one piece it would keep the loop, and the
    # next page's fetch with it, waiting until the page is handed over.
    size = 3 * DECODE_SLICE
    stored: list[CredsRow] = [(f"s{i:04d}", b"{}", i) for i in range(2 * size)]
    steps: list[int] = []

    async def fetch(after: str | None) -> tuple[CredsPage, list[CredsRow]] | None:
        if after is not None:  # the second page: a read that takes a few loop turns
            for _ in range(10):
                steps.append(1)
                await asyncio.sleep(0)
        found = [row for row in stored if after is None or row[0] > after][:size]
        return (CredsPage(next_after=page_end(found, size)), found) if found else None

    rows = RowCodec()
    pages = creds_pages(fetch, rows.decode_creds)
    first = await anext(pages)
    assert len(first.creds) == size
    assert first.next_after == f"s{size - 1:04d}"
    assert len(steps) >= 2  # it ran between the slices, before the page was handed over
    assert [len(page.creds) async for page in pages] == [size]


async def test_reencrypt_rows_reseals_only_rows_under_an_old_key() -> None:
    old = RowCodec(cipher=AESGCMCipher({"k1": K1}, "k1"))
    table: dict[RowKey, bytes] = {
        ("a", "", ""): old.creds_value("a", CREDS),
        ("b", "", ""): old.creds_value("b", CREDS),
    }
    rows = RowCodec(cipher=AESGCMCipher({"k1": K1, "k2": K2}, "k2"))
    table[("c", "", "")] = rows.creds_value("c", CREDS)

    async def scan(name: str, after: RowKey | None, limit: int) -> list[tuple[RowKey, bytes]]:
        if name != "creds":
            return []
        keys = sorted(key for key in table if after is None or key > after)[:limit]
        return [(key, table[key]) for key in keys]

    async def rewrite(name: str, changes: list[tuple[RowKey, bytes, bytes]]) -> int:
        for key, before, after in changes:
            assert table[key] == before
            table[key] = after
        return len(changes)

    seen: list[ReencryptProgress] = []
    counts = await reencrypt_rows(rows, scan, rewrite, batch_size=2, progress=seen.append)
    assert (counts.scanned, counts.rewritten) == (3, 2)
    assert {sealed_key_id(value) for value in table.values()} == {"k2"}
    assert all(rows.creds(key[0], value) == CREDS for key, value in table.items())
    with pytest.raises(InvalidInputError, match="cipher"):
        await reencrypt_rows(RowCodec(), scan, rewrite, batch_size=2, progress=None)
