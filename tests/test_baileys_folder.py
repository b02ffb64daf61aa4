"""Baileys useMultiFileAuthState folders: import, export, and the round trip between them.

The expected file names and file contents are built here independently of
the module under test: ``fix_file_name`` and ``baileys_json`` below restate
what Baileys does (``fixFileName`` and ``JSON.stringify(value, BufferJSON.replacer)``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wa_session_store import (
    InvalidInputError,
    InvalidTypeError,
    MemoryStore,
    SessionExistsError,
)
from wa_session_store.interop import (
    BAILEYS_CATEGORIES,
    MANIFEST_FILE,
    baileys_file_name,
    export_baileys_folder,
    import_baileys_folder,
    parse_baileys_file_name,
)
from wa_session_store.store.base import BaseStore

DOCS = Path(__file__).resolve().parent.parent / "docs" / "baileys-folders.md"


# -- what Baileys does, restated -------------------------------------------------


def fix_file_name(file: str) -> str:
    """Baileys: ``file?.replace(/\\//g, '__')?.replace(/:/g, '-')``."""
    return re.sub(":", "-", re.sub("/", "__", file))


def buffer_replacer(obj: object) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return {"type": "Buffer", "data": base64.b64encode(obj).decode("ascii")}
    raise TypeError(type(obj).__name__)


def baileys_json(value: object) -> bytes:
    """``JSON.stringify(value, BufferJSON.replacer)``: compact, UTF-8, Buffers as base64."""
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, default=buffer_replacer
    ).encode("utf-8")


def b64(data: bytes) -> dict[str, Any]:
    return {"type": "Buffer", "data": base64.b64encode(data).decode("ascii")}


def ints(data: bytes) -> dict[str, Any]:
    """The legacy BufferJSON form (what Buffer.toJSON gives)."""
    return {"type": "Buffer", "data": list(data)}


def key(n: int, size: int = 32) -> bytes:
    return bytes((n * 7 + i) % 256 for i in range(size))


# -- a realistic Baileys folder -------------------------------------------------

# (raw JSON as Baileys left it on disk, what it decodes to)
CREDS_RAW: dict[str, Any] = {
    "noiseKey": {"private": ints(key(1)), "public": b64(key(2))},
    "pairingEphemeralKeyPair": {"private": b64(key(3)), "public": b64(key(4))},
    "signedIdentityKey": {"private": b64(key(5)), "public": ints(key(6))},
    "signedPreKey": {
        "keyPair": {"private": b64(key(7)), "public": b64(key(8))},
        "signature": b64(key(9, 64)),
        "keyId": 1,
    },
    "registrationId": 1234,
    "advSecretKey": "c2VjcmV0IGFkdiBrZXk=",
    "processedHistoryMessages": [],
    "nextPreKeyId": 813,
    "firstUnuploadedPreKeyId": 813,
    "accountSyncCounter": 1,
    "accountSettings": {"unarchiveChats": False},
    "registered": True,
    "me": {"id": "15551234567:12@s.whatsapp.net", "lid": "123456789012345:12@lid", "name": "Bot ✓"},
    "account": {
        "details": b64(key(10, 40)),
        "accountSignatureKey": b64(key(11)),
        "accountSignature": b64(key(12, 64)),
        "deviceSignature": ints(key(13, 64)),
    },
    "signalIdentities": [
        {
            "identifier": {"name": "15551234567:12@s.whatsapp.net", "deviceId": 0},
            "identifierKey": b64(b"\x05" + key(14)),
        }
    ],
    "platform": "android",
    "myAppStateKeyId": "AAAAAJ/b",
    "lastAccountSyncTimestamp": 1700000000,
    "routingInfo": b64(b"\x08\x08\x08\x02"),
}


def decoded(raw: Any) -> Any:
    """What a raw BufferJSON structure means: Buffers (either form) become bytes."""
    if isinstance(raw, dict):
        if set(raw) == {"type", "data"} and raw["type"] == "Buffer":
            data = raw["data"]
            return base64.b64decode(data) if isinstance(data, str) else bytes(data)
        return {k: decoded(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [decoded(v) for v in raw]
    return raw


def app_state_version(n: int) -> dict[str, Any]:
    return {
        "version": n,
        "hash": b64(key(n, 128)),
        "indexValueMap": {
            base64.b64encode(key(n + 1)).decode(): {"valueMac": ints(key(n + 2))},
            base64.b64encode(key(n + 3)).decode(): {"valueMac": b64(key(n + 4))},
        },
    }


# {category: {the id a client asks for: raw JSON on disk}}
KEYS_RAW: dict[str, dict[str, Any]] = {
    "pre-key": {
        "1": {"private": ints(key(20)), "public": ints(key(21))},
        "812": {"private": b64(key(22)), "public": b64(key(23))},
    },
    "session": {
        # Baileys v7 stores serialised records as Buffers ...
        "15551234567.0": b64(key(30, 300)),
        "15551234567_1.3": b64(key(31, 200)),
        # ... and libsignal-node's JSON records in v6.
        "123456789012345_1.0": {
            "_sessions": {
                "BQabc+/=": {"registrationId": 77, "currentRatchet": {"rootKey": "AAE="}}
            },
            "version": "v1",
        },
    },
    "sender-key": {
        "120363040000000000@g.us::15551234567::0": b64(key(40, 150)),
        # An old group jid holds a '-' of its own.
        "15551234567-1600000000@g.us::123456789012345_1::2": [
            {"senderKeyId": 5, "senderChainKey": {"iteration": 3, "seed": "AAAA"}}
        ],
    },
    "sender-key-memory": {
        "120363040000000000@g.us": {"15551234567:0@s.whatsapp.net": True, "123@lid": True},
        "15551234567-1600000000@g.us": {},
    },
    "app-state-sync-key": {
        # As proto.Message.AppStateSyncKeyData.fromObject keeps it: Buffer fields ...
        "AAAAAJ/b": {
            "keyData": b64(key(50)),
            "fingerprint": {"rawId": 1, "currentIndex": 2, "deviceIndexes": [0, 1]},
            "timestamp": "1700000000000",
        },
        # ... or as the protobuf's toJSON() wrote it: bytes as plain base64 strings.
        "AAAAAK+/": {
            "keyData": base64.b64encode(key(51)).decode(),
            "fingerprint": {"rawId": 2, "currentIndex": 1, "deviceIndexes": [0]},
            "timestamp": "1700000000001",
        },
        "AAAAAP//": {"keyData": ints(key(52))},
        "AAAAAQ==": {"keyData": b64(key(53))},
    },
    "app-state-sync-version": {
        name: app_state_version(i + 60)
        for i, name in enumerate(
            ["critical_block", "regular_high", "regular_low", "regular", "critical_unblock_low"]
        )
    },
    "lid-mapping": {"15551234567": "123456789012345", "123456789012345_reverse": "15551234567"},
    "device-list": {"15551234567": ["0", "12"]},
    "tctoken": {"15551234567@s.whatsapp.net": {"token": b64(key(70, 20)), "timestamp": "1700000"}},
    "identity-key": {"15551234567.0": b64(b"\x05" + key(80)), "123456789012345_1.0": ints(key(81))},
}

UNKNOWN_FILES = ["notes.txt", "baileys_store_multi.json", "foo-bar.json", "session-1:2.json"]


def write_baileys_folder(
    folder: Path, keys: dict[str, dict[str, Any]] | None = None, *, creds: bool = True
) -> None:
    """Write a folder as Baileys does (file names by our own fix_file_name)."""
    folder.mkdir(parents=True, exist_ok=True)
    if creds:
        (folder / "creds.json").write_text(json.dumps(CREDS_RAW), encoding="utf-8")
    for category, entries in (KEYS_RAW if keys is None else keys).items():
        for key_id, raw in entries.items():
            name = fix_file_name(f"{category}-{key_id}.json")
            (folder / name).write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")


def expected_keys() -> dict[str, dict[str, Any]]:
    return {c: {k: decoded(v) for k, v in entries.items()} for c, entries in KEYS_RAW.items()}


# -- import ------------------------------------------------------------------------


def test_fixture_covers_every_category() -> None:
    assert set(KEYS_RAW) == set(BAILEYS_CATEGORIES)


async def test_import_gives_the_ids_a_client_asks_for(
    store: BaseStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "auth_info_baileys"
    write_baileys_folder(folder)
    for name in UNKNOWN_FILES:
        (folder / name).write_text("{}")
    (folder / "backup").mkdir()
    # The file names really are Baileys' lossy ones.
    names = set(os.listdir(folder))
    assert "sender-key-120363040000000000@g.us--15551234567--0.json" in names
    assert "app-state-sync-key-AAAAAJ__b.json" in names
    assert "app-state-sync-key-AAAAAP____.json" in names

    with caplog.at_level(logging.WARNING, logger="wa_session_store"):
        report = await import_baileys_folder(store, "bot", folder)

    want = expected_keys()
    assert report.creds_found
    assert report.counts == {c: len(entries) for c, entries in want.items()}
    assert report.key_count == sum(len(entries) for entries in want.values())
    assert report.unknown_files == tuple(sorted([*UNKNOWN_FILES, "backup"]))
    assert report.skipped_files == ()
    assert report.ids_from_manifest == 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in [*UNKNOWN_FILES, "backup"]:
        assert repr(name) in warned

    assert await store.load_creds("bot") == decoded(CREDS_RAW)
    for category, entries in want.items():
        assert await store.get_keys("bot", category, list(entries)) == entries, category
    sender = await store.get_keys("bot", "sender-key", ["120363040000000000@g.us::15551234567::0"])
    assert sender["120363040000000000@g.us::15551234567::0"] == key(40, 150)
    sync = await store.get_keys("bot", "app-state-sync-key", ["AAAAAJ/b", "AAAAAP//"])
    assert sync["AAAAAJ/b"]["keyData"] == key(50)
    assert sync["AAAAAP//"] == {"keyData": key(52)}
    # The protobuf toJSON form is kept as the JSON it is.
    plain = await store.get_keys("bot", "app-state-sync-key", ["AAAAAK+/"])
    assert plain["AAAAAK+/"]["keyData"] == base64.b64encode(key(51)).decode()
    # Unknown files were not imported under any guessed category.
    exported = await store.export_session("bot")
    assert exported is not None
    assert set(exported.keys) == set(BAILEYS_CATEGORIES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pre-key-1.json", ("pre-key", "1")),
        ("session-15551234567.0.json", ("session", "15551234567.0")),
        ("session-123456789012345_1.0.json", ("session", "123456789012345_1.0")),
        # A '-' stays a '-' wherever a ':' is not expected.
        ("session-a-b.0.json", ("session", "a-b.0")),
        (
            "sender-key-120363040000000000@g.us--15551234567--0.json",
            ("sender-key", "120363040000000000@g.us::15551234567::0"),
        ),
        # The last two "--" are the separators; an old group jid keeps its '-'.
        (
            "sender-key-15551234567-1600000000@g.us--15551234567_1--3.json",
            ("sender-key", "15551234567-1600000000@g.us::15551234567_1::3"),
        ),
        ("sender-key-x---u--0.json", ("sender-key", "x-::u::0")),
        ("sender-key-g--h--u--0.json", ("sender-key", "g--h::u::0")),
        ("sender-key-plain.json", ("sender-key", "plain")),
        # The longest category wins.
        (
            "sender-key-memory-120363040000000000@g.us.json",
            ("sender-key-memory", "120363040000000000@g.us"),
        ),
        ("app-state-sync-key-AAAAAJ__b.json", ("app-state-sync-key", "AAAAAJ/b")),
        ("app-state-sync-key-AAAAAP____.json", ("app-state-sync-key", "AAAAAP//")),
        ("app-state-sync-key-a+b=.json", ("app-state-sync-key", "a+b=")),
        (
            "app-state-sync-version-critical_unblock_low.json",
            ("app-state-sync-version", "critical_unblock_low"),
        ),
        ("app-state-sync-version-a__b.json", ("app-state-sync-version", "a__b")),
        ("lid-mapping-123456789012345_reverse.json", ("lid-mapping", "123456789012345_reverse")),
        ("device-list-15551234567.json", ("device-list", "15551234567")),
        ("tctoken-15551234567@s.whatsapp.net.json", ("tctoken", "15551234567@s.whatsapp.net")),
        ("identity-key-15551234567.0.json", ("identity-key", "15551234567.0")),
        ("pre-key-日本.json", ("pre-key", "日本")),
        # Not key files.
        ("creds.json", None),
        ("pre-key-1.json.bak", None),
        ("pre-key-.json", None),
        ("foo-1.json", None),
        ("session-1:2.json", None),  # Baileys never writes a ':'
        ("pre-key-\x01.json", None),
    ],
)
def test_file_name_rules(name: str, expected: tuple[str, str] | None) -> None:
    assert parse_baileys_file_name(name) == expected
    if expected is not None:
        assert (
            baileys_file_name(*expected)
            == name
            == fix_file_name(f"{expected[0]}-{expected[1]}.json")
        )


# Ids as Baileys v6 and v7 make them.
_digits = st.text("0123456789", min_size=1, max_size=18)
_user = st.builds(lambda u, d: u + d, _digits, st.sampled_from(["", "_1", "_128"]))
_device = st.integers(0, 99).map(str)
_group = st.one_of(
    _digits.map(lambda d: f"{d}@g.us"),
    st.builds(lambda a, b: f"{a}-{b}@g.us", _digits, _digits),  # old groups
    st.just("status@broadcast"),
)
REAL_ID_SHAPES = {
    "pre-key": st.integers(1, 16_777_215).map(str),
    "session": st.builds(lambda u, d: f"{u}.{d}", _user, _device),
    "identity-key": st.builds(lambda u, d: f"{u}.{d}", _user, _device),
    "sender-key": st.builds(lambda g, u, d: f"{g}::{u}::{d}", _group, _user, _device),
    "sender-key-memory": _group,
    "app-state-sync-key": st.binary(min_size=1, max_size=32).map(
        lambda b: base64.b64encode(b).decode()
    ),
    "app-state-sync-version": st.sampled_from(
        ["critical_block", "critical_unblock_low", "regular_high", "regular_low", "regular"]
    ),
    "lid-mapping": st.one_of(_digits, _digits.map(lambda d: f"{d}_reverse")),
    "device-list": _digits,
    "tctoken": st.one_of(
        _digits.map(lambda d: f"{d}@s.whatsapp.net"), _digits.map(lambda d: f"{d}@lid")
    ),
}


def test_every_category_has_an_id_shape() -> None:
    assert set(REAL_ID_SHAPES) == set(BAILEYS_CATEGORIES)


@given(st.data())
def test_the_rules_give_back_every_id_baileys_makes(data: st.DataObject) -> None:
    category = data.draw(st.sampled_from(BAILEYS_CATEGORIES))
    key_id = data.draw(REAL_ID_SHAPES[category])
    assert parse_baileys_file_name(fix_file_name(f"{category}-{key_id}.json")) == (category, key_id)


@given(
    st.one_of(
        st.sampled_from(BAILEYS_CATEGORIES), st.text(st.characters(), min_size=1, max_size=20)
    ),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60),
)
def test_a_name_reads_as_an_id_baileys_keeps_in_that_very_file(category: str, key_id: str) -> None:
    name = baileys_file_name(category, key_id)
    parsed = parse_baileys_file_name(name)
    if parsed is not None:
        assert baileys_file_name(*parsed) == name
        assert parsed[0] in BAILEYS_CATEGORIES


SECRET = "TOPSECRETPRIVATEKEYMATERIAL"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"private": "' + SECRET + '", ', "is not valid JSON"),
        ("", "is empty"),
        ('{"private": {"type": "Buffer", "data": "' + SECRET + '!!"}}', "malformed Buffer"),
        (
            '{"public": {"type": "Buffer", "data": [1, 999]}, "x": "' + SECRET + '"}',
            "malformed Buffer",
        ),
        (b"\xff\xfe" + SECRET.encode(), "is not UTF-8"),
    ],
)
async def test_a_corrupt_file_imports_nothing(
    tmp_path: Path, content: str | bytes, why: str
) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder)
    target = folder / "pre-key-1.json"
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    async with MemoryStore() as store:
        with pytest.raises(InvalidInputError, match=why) as caught:
            await import_baileys_folder(store, "bot", folder)
        assert "pre-key-1.json" in str(caught.value)
        assert SECRET not in str(caught.value)
        assert await store.list_sessions() == []


async def test_a_corrupt_file_imports_nothing_on_every_backend(
    store: BaseStore, tmp_path: Path
) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder)
    (folder / "session-15551234567.0.json").write_text('{"broken": ' + SECRET)
    with pytest.raises(InvalidInputError, match=r"session-15551234567\.0\.json") as caught:
        await import_baileys_folder(store, "bot", folder)
    assert SECRET not in str(caught.value)
    assert await store.list_sessions() == []


async def test_creds_must_be_an_object(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder)
    (folder / "creds.json").write_text("[1, 2]")
    async with MemoryStore() as store:
        with pytest.raises(InvalidInputError, match=r"creds\.json .* array, not an object"):
            await import_baileys_folder(store, "bot", folder)
        assert await store.list_sessions() == []


async def test_null_key_files_are_skipped_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder, {"pre-key": {"1": {"private": b64(b"k")}, "2": None}})
    async with MemoryStore() as store:
        report = await import_baileys_folder(store, "bot", folder)
        assert report.skipped_files == ("pre-key-2.json",)
        assert report.counts == {"pre-key": 1}
        assert await store.get_keys("bot", "pre-key", ["1", "2"]) == {
            "1": {"private": b"k"},
            "2": None,
        }


async def test_overwrite_is_refused_unless_asked(store: BaseStore, tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder)
    before = {"registrationId": 1}
    await store.import_session("bot", before, {"pre-key": {"999": b"old"}})

    with pytest.raises(SessionExistsError):
        await import_baileys_folder(store, "bot", folder)
    assert await store.load_creds("bot") == before
    assert await store.get_keys("bot", "pre-key", ["1", "999"]) == {"1": None, "999": b"old"}

    await import_baileys_folder(store, "bot", folder, overwrite=True)
    assert await store.load_creds("bot") == decoded(CREDS_RAW)
    # Replaced, not merged: the old session's key is gone.
    assert await store.get_keys("bot", "pre-key", ["999"]) == {"999": None}


async def test_keys_without_creds(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder, {"pre-key": {"1": b64(b"x")}}, creds=False)
    async with MemoryStore() as store:
        report = await import_baileys_folder(store, "bot", folder)
        assert not report.creds_found
        assert report.counts == {"pre-key": 1}
        assert await store.load_creds("bot") is None


async def test_folders_that_are_not_baileys_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    (tmp_path / "file").write_text("{}")
    async with MemoryStore() as store:
        with pytest.raises(InvalidInputError, match=r"no folder at .*creds\.json"):
            await import_baileys_folder(store, "bot", tmp_path / "missing")
        with pytest.raises(InvalidInputError, match="is a file, not a folder"):
            await import_baileys_folder(store, "bot", tmp_path / "file")
        with pytest.raises(InvalidInputError, match=r"neither creds.json nor .*\(empty\)"):
            await import_baileys_folder(store, "bot", tmp_path / "empty")
        with pytest.raises(InvalidInputError, match="only 1 other entries"):
            await import_baileys_folder(store, "bot", tmp_path / "junk")
        with pytest.raises(InvalidTypeError):
            await import_baileys_folder(store, "bot", 42)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="must not be empty"):
            await import_baileys_folder(store, "bot", "")
        with pytest.raises(InvalidTypeError, match="progress"):
            await import_baileys_folder(store, "bot", tmp_path, progress=3)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="session id"):
            await import_baileys_folder(store, "", tmp_path)
        assert await store.list_sessions() == []


# -- export ------------------------------------------------------------------------


async def test_export_writes_what_baileys_writes(store: BaseStore, tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_baileys_folder(source)
    await import_baileys_folder(store, "bot", source)

    target = tmp_path / "exported" / "auth_info_baileys"  # parents are created too
    report = await export_baileys_folder(store, "bot", target)

    want = expected_keys()
    expected_names = {
        fix_file_name(f"{c}-{k}.json") for c, entries in want.items() for k in entries
    }
    assert set(os.listdir(target)) == expected_names | {"creds.json"}
    # The same names Baileys gave the files in the first place.
    assert set(os.listdir(target)) == set(os.listdir(source))
    assert (target / "creds.json").read_bytes() == baileys_json(decoded(CREDS_RAW))
    for category, entries in want.items():
        for key_id, value in entries.items():
            data = (target / fix_file_name(f"{category}-{key_id}.json")).read_bytes()
            assert data == baileys_json(value), (category, key_id)
    # Legacy int-list Buffers come out in the base64 form Baileys writes today.
    assert json.loads((target / "pre-key-1.json").read_text())["private"] == {
        "type": "Buffer",
        "data": base64.b64encode(key(20)).decode(),
    }
    for name in os.listdir(target):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert report.creds_written
    assert report.counts == {c: len(entries) for c, entries in want.items()}
    assert report.files_written == len(expected_names) + 1
    assert report.ids_in_manifest == 0


async def test_export_refusals_leave_everything_untouched(tmp_path: Path) -> None:
    async with MemoryStore() as store:
        await store.import_session("bot", {"registrationId": 1}, {"pre-key": {"1": b"k"}})
        with pytest.raises(InvalidInputError, match="'nobody' is not stored"):
            await export_baileys_folder(store, "nobody", tmp_path / "a")
        assert not (tmp_path / "a").exists()

        busy = tmp_path / "busy"
        busy.mkdir()
        (busy / "pre-key-1.json").write_text("mine")
        (busy / "notes.txt").write_text("unrelated")
        with pytest.raises(InvalidInputError, match="is not empty"):
            await export_baileys_folder(store, "bot", busy)
        assert sorted(os.listdir(busy)) == ["notes.txt", "pre-key-1.json"]
        assert (busy / "pre-key-1.json").read_text() == "mine"

        (tmp_path / "file").write_text("x")
        with pytest.raises(InvalidInputError, match="not a folder"):
            await export_baileys_folder(store, "bot", tmp_path / "file")

        # An existing empty folder is fine (a mounted volume, say).
        (tmp_path / "empty").mkdir()
        await export_baileys_folder(store, "bot", tmp_path / "empty")
        assert sorted(os.listdir(tmp_path / "empty")) == ["creds.json", "pre-key-1.json"]


async def test_export_refuses_ids_baileys_cannot_tell_apart(tmp_path: Path) -> None:
    async with MemoryStore() as store:
        await store.import_session(
            "bot", {"registrationId": 1}, {"session": {"a:b.0": b"1", "a-b.0": b"2"}}
        )
        with pytest.raises(InvalidInputError, match=r"'a-b\.0' .*'a:b\.0'|'a:b\.0' .*'a-b\.0'"):
            await export_baileys_folder(store, "bot", tmp_path / "out")
        assert not (tmp_path / "out").exists()

        await store.import_session("long", None, {"pre-key": {"x" * 300: b"1"}})
        with pytest.raises(InvalidInputError, match="over 255 bytes"):
            await export_baileys_folder(store, "long", tmp_path / "out")
        assert not (tmp_path / "out").exists()


async def test_a_failed_export_removes_what_it_wrote(tmp_path: Path) -> None:
    keys = {"pre-key": {str(i): {"private": key(i)} for i in range(600)}}
    async with MemoryStore() as store:
        await store.import_session("bot", {"registrationId": 1}, keys)

        def fail(done: int, total: int) -> None:
            raise RuntimeError("stop")

        with pytest.raises(RuntimeError, match="stop"):
            await export_baileys_folder(store, "bot", tmp_path / "new", progress=fail)
        assert not (tmp_path / "new").exists()

        (tmp_path / "kept").mkdir()
        with pytest.raises(RuntimeError, match="stop"):
            await export_baileys_folder(store, "bot", tmp_path / "kept", progress=fail)
        assert os.listdir(tmp_path / "kept") == []  # the folder it did not create stays


async def test_a_cancelled_export_removes_what_it_wrote(tmp_path: Path) -> None:
    keys = {"pre-key": {str(i): {"private": key(i)} for i in range(600)}}
    async with MemoryStore() as store:
        await store.import_session("bot", {"registrationId": 1}, keys)
        task: asyncio.Task[Any] | None = None

        def cancel(done: int, total: int) -> None:
            assert task is not None
            task.cancel()

        task = asyncio.ensure_future(
            export_baileys_folder(store, "bot", tmp_path / "new", progress=cancel)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not (tmp_path / "new").exists()


# -- the round trip ------------------------------------------------------------------

# Hostile but valid ids: every one of them goes into every category.
HOSTILE_IDS = [
    "g/x",
    "c:d",
    "e::f::0",
    "u@s.whatsapp.net",
    "p+q=",
    "under_score",
    "da-sh",
    "ünï 🔑 中文",
    "mix/:-_@+=::é",
    "'quote\" %s {} back\\slash",
    "___",
    "x/_y",
    "--",
    "-lead::u::0",
    "trail-",
]

# What real clients store, next to them.
REAL_IDS = {category: list(entries) for category, entries in KEYS_RAW.items()}

EXTRA = {
    # A sender-key id that reads as a sender-key-memory file name.
    "sender-key": ["memory-x"],
    # Categories that Baileys does not have (a newer client's, or hostile ones).
    "custom-category": ["1", "a:b"],
    "weird/cat:egory": ["id"],
    "pre": ["key-77"],  # "pre-key-77.json" reads as pre-key 77
}


def hostile_session() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    keys: dict[str, dict[str, Any]] = {}
    n = 0
    for category in [*BAILEYS_CATEGORIES, *EXTRA]:
        ids = [*REAL_IDS.get(category, []), *HOSTILE_IDS, *EXTRA.get(category, [])]
        entries = keys.setdefault(category, {})
        for key_id in ids:
            n += 1
            entries[key_id] = {
                "bytes": key(n, 1 + n % 40),
                "text": f"值 {key_id}",
                "n": n,
                "float": n / 8,
                "flag": n % 2 == 0,
                "none": None,
                "nested": [{"type": "Buffer?", "data": [n]}, []],
            }
    # Top-level values of every JSON kind, as Baileys stores them.
    keys["lid-mapping"]["15551234567"] = "123456789012345"
    keys["device-list"]["15551234567"] = ["0", "12"]
    keys["identity-key"]["15551234567.0"] = key(99, 33)
    names = [baileys_file_name(c, k) for c, entries in keys.items() for k in entries]
    assert len(names) == len(set(names)), "the test data itself must not collide"
    return decoded(CREDS_RAW), keys


async def test_import_of_an_export_is_the_identity(store: BaseStore, tmp_path: Path) -> None:
    creds, keys = hostile_session()
    await store.import_session("original", creds, keys)
    original = await store.export_session("original")
    assert original is not None

    folder = tmp_path / "out"
    exported = await export_baileys_folder(store, "original", folder)
    imported = await import_baileys_folder(store, "copy", folder)
    assert await store.export_session("copy") == original
    assert imported.counts == exported.counts
    assert imported.ids_from_manifest == exported.ids_in_manifest > 0

    # Baileys finds every key where it looks for it (fixFileName of the id it asks for).
    for category, entries in keys.items():
        for key_id, value in entries.items():
            path = folder / fix_file_name(f"{category}-{key_id}.json")
            assert path.read_bytes() == baileys_json(value), (category, key_id)
    # The manifest holds exactly the ids the file-name rules do not give back.
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    expected = {
        fix_file_name(f"{c}-{k}.json"): [c, k]
        for c, entries in keys.items()
        for k in entries
        if parse_baileys_file_name(fix_file_name(f"{c}-{k}.json")) != (c, k)
    }
    assert manifest["keys"] == expected
    assert manifest["keys"]["session-c-d.json"] == ["session", "c:d"]
    assert manifest["keys"]["sender-key-memory-x.json"] == ["sender-key", "memory-x"]
    assert manifest["keys"]["pre-key-77.json"] == ["pre", "key-77"]
    for category in REAL_IDS:
        for key_id in REAL_IDS[category]:
            assert fix_file_name(f"{category}-{key_id}.json") not in manifest["keys"]


async def test_keys_only_session_round_trips(store: BaseStore, tmp_path: Path) -> None:
    await store.import_session("keys-only", None, {"pre-key": {"1": b"k"}})
    report = await export_baileys_folder(store, "keys-only", tmp_path / "out")
    assert not report.creds_written
    assert os.listdir(tmp_path / "out") == ["pre-key-1.json"]
    await import_baileys_folder(store, "copy", tmp_path / "out")
    assert await store.export_session("copy") == await store.export_session("keys-only")


async def test_without_the_manifest_the_rules_decide(tmp_path: Path) -> None:
    """The documented lossy cases: a folder without the manifest reads as Baileys names it."""
    async with MemoryStore() as store:
        await store.import_session(
            "bot",
            {"registrationId": 1},
            {
                "session": {"a:b.0": b"1"},
                "app-state-sync-key": {"x_/y": b"2"},
                "sender-key": {"g::u:1::0": b"3"},
                "custom": {"1": b"4"},
            },
        )
        folder = tmp_path / "out"
        await export_baileys_folder(store, "bot", folder)
        (folder / MANIFEST_FILE).unlink()
        report = await import_baileys_folder(store, "copy", folder)
        assert report.unknown_files == ("custom-1.json",)
        got = await store.export_session("copy")
        assert got is not None
        assert got.keys == {
            "session": {"a-b.0": b"1"},  # ':' came back as '-'
            "app-state-sync-key": {"x/_y": b"2"},  # "x___y": the first "__" is the '/'
            "sender-key": {"g::u-1::0": b"3"},  # only the last two "--" are "::"
        }


async def test_a_tampered_manifest_is_refused(tmp_path: Path) -> None:
    async with MemoryStore() as store:
        await store.import_session("bot", {"registrationId": 1}, {"session": {"a:b.0": b"1"}})
        folder = tmp_path / "out"
        await export_baileys_folder(store, "bot", folder)
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest["keys"]["session-a-b.0.json"] = ["pre-key", "1"]
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
        with pytest.raises(InvalidInputError, match="which Baileys stores elsewhere"):
            await import_baileys_folder(store, "copy", folder)
        manifest["version"] = 99
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
        with pytest.raises(InvalidInputError, match="version 99"):
            await import_baileys_folder(store, "copy", folder)
        (folder / MANIFEST_FILE).write_text("{not json")
        with pytest.raises(InvalidInputError, match="is not valid JSON"):
            await import_baileys_folder(store, "copy", folder)
        # An entry whose file Baileys has since deleted is simply not used.
        manifest["version"] = 1
        manifest["keys"]["session-gone.json"] = ["session", "gone"]
        manifest["keys"]["session-a-b.0.json"] = ["session", "a:b.0"]
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
        report = await import_baileys_folder(store, "copy", folder)
        assert report.ids_from_manifest == 1
        assert await store.get_keys("copy", "session", ["a:b.0"]) == {"a:b.0": b"1"}


# -- progress and volume -------------------------------------------------------------


async def test_progress_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "auth"
    write_baileys_folder(folder, {"pre-key": {str(i): b64(key(i)) for i in range(600)}})
    calls: list[tuple[int, int]] = []
    async with MemoryStore() as store:
        await import_baileys_folder(
            store, "bot", folder, progress=lambda d, t: calls.append((d, t))
        )
        assert calls == [(256, 601), (512, 601), (601, 601)]

        calls.clear()
        await export_baileys_folder(
            store, "bot", tmp_path / "out", progress=lambda d, t: calls.append((d, t))
        )
        assert calls == [(256, 601), (512, 601), (600, 601), (601, 601)]


async def test_5000_keys_import_in_one_transaction(
    store: BaseStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "auth"
    keys = {
        "pre-key": {str(i): b64(key(i)) for i in range(1, 3001)},
        "session": {f"1555{i:07d}.0": b64(key(i, 300)) for i in range(2000)},
    }
    write_baileys_folder(folder, keys)

    transactions: list[int] = []
    replace_session = store._replace_session

    async def spy(sid: str, creds: Any, version: int, rows: Any, overwrite: bool, t: float) -> bool:
        transactions.append(len(rows))
        return await replace_session(sid, creds, version, rows, overwrite, t)

    async def per_key(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the import must not write key by key")

    monkeypatch.setattr(store, "_replace_session", spy)
    monkeypatch.setattr(store, "set_keys", per_key)
    monkeypatch.setattr(store, "save_creds", per_key)

    started = time.perf_counter()
    report = await import_baileys_folder(store, "bot", folder)
    imported = time.perf_counter() - started
    assert report.key_count == 5000
    assert transactions == [5000]
    assert (await store.list_sessions())[0].key_count == 5000

    started = time.perf_counter()
    await export_baileys_folder(store, "bot", tmp_path / "out")
    exported = time.perf_counter() - started
    assert len(os.listdir(tmp_path / "out")) == 5001
    print(
        f"{store.kind}: 5,000-key Baileys folder imported in {imported * 1000:.0f} ms, "
        f"exported in {exported * 1000:.0f} ms"
    )
    assert imported < 15


# -- the docs ---------------------------------------------------------------------------


def test_the_docs_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "into session 'my-bot': creds yes, 3 keys" in out
    assert os.listdir(tmp_path) == []  # it cleans up after itself
