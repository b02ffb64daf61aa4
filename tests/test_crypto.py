"""Encryption at rest on every backend: sealing, tamper and move detection,
plaintext migration and key rotation."""

from __future__ import annotations

import os

import pytest

from wa_session_store import (
    AESGCMCipher,
    DecryptionError,
    InvalidInputError,
    InvalidTypeError,
)
from wa_session_store.store.base import BaseStore
from wa_session_store.store.crypto import MAGIC, sealed_key_id

from .conftest import StoreFactory

K1, K2 = os.urandom(32), os.urandom(32)
SECRET = b"SECRET-KEY-MATERIAL-0123456789ab"
CREDS = {"noiseKey": {"private": SECRET, "public": b"p" * 32}, "registrationId": 5}
KEYS = {
    "pre-key": {str(i): {"private": SECRET, "public": bytes([i]) * 32} for i in range(1, 8)},
    "session": {"peer.0": SECRET},
}


async def _fill(store: BaseStore, sid: str = "s1") -> None:
    await store.save_creds(sid, CREDS)
    await store.set_keys(sid, KEYS)


async def _raw(store: BaseStore, table: str) -> list[bytes]:
    return [bytes(blob) for _, blob in await store._scan(table, None, 10_000, 5.0)]


async def test_values_are_sealed_and_read_back(make_store: StoreFactory) -> None:
    async with make_store(cipher=AESGCMCipher({"k1": K1}, "k1")) as store:
        await _fill(store)
        assert await store.load_creds("s1") == CREDS
        assert await store.get_keys("s1", "pre-key", ["1", "2"]) == {
            "1": KEYS["pre-key"]["1"],
            "2": KEYS["pre-key"]["2"],
        }
        blobs = await _raw(store, "creds") + await _raw(store, "keys")
        assert len(blobs) == 9
        for blob in blobs:
            assert blob.startswith(MAGIC)
            assert sealed_key_id(blob) == "k1"
            for encoding in (SECRET, SECRET.hex().encode(), b"U0VDUkVU"):
                assert encoding not in blob
        # A fresh random nonce each time: the same value seals differently.
        assert len({blob[-40:] for blob in blobs}) == len(blobs)


async def test_a_wrong_or_unknown_key_is_a_decryption_error(make_store: StoreFactory) -> None:
    async with make_store(cipher=AESGCMCipher({"k1": K1}, "k1")) as store:
        await _fill(store)
    async with make_store(cipher=AESGCMCipher({"k1": K2}, "k1")) as wrong:
        with pytest.raises(DecryptionError, match="does not authenticate"):
            await wrong.load_creds("s1")
        with pytest.raises(DecryptionError, match="does not authenticate"):
            await wrong.get_keys("s1", "session", ["peer.0"])
    async with make_store(cipher=AESGCMCipher({"k9": K1}, "k9")) as unknown:
        with pytest.raises(DecryptionError, match="does not hold"):
            await unknown.load_creds("s1")


async def test_tampered_or_moved_rows_do_not_decrypt(make_store: StoreFactory) -> None:
    async with make_store(cipher=AESGCMCipher({"k1": K1}, "k1")) as store:
        await _fill(store)
        await _fill(store, "s2")
        rows = dict(await store._scan("keys", None, 100, 5.0))
        original = bytes(rows["s1", "pre-key", "1"])
        tampered = original[:-1] + bytes([original[-1] ^ 1])
        assert await store._rewrite("keys", [(("s1", "pre-key", "1"), original, tampered)], 5.0)
        with pytest.raises(DecryptionError):
            await store.get_keys("s1", "pre-key", ["1"])
        # The same ciphertext copied to another key id, and to another session.
        moved = bytes(rows["s1", "pre-key", "2"])
        target = bytes(rows["s1", "pre-key", "3"])
        await store._rewrite("keys", [(("s1", "pre-key", "3"), target, moved)], 5.0)
        with pytest.raises(DecryptionError):
            await store.get_keys("s1", "pre-key", ["3"])
        creds = dict(await store._scan("creds", None, 100, 5.0))
        await store._rewrite(
            "creds", [(("s2", "", ""), bytes(creds["s2", "", ""]), bytes(creds["s1", "", ""]))], 5.0
        )
        with pytest.raises(DecryptionError):
            await store.load_creds("s2")
        assert await store.load_creds("s1") == CREDS


async def test_a_store_without_a_cipher_says_rows_are_encrypted(make_store: StoreFactory) -> None:
    async with make_store(cipher=AESGCMCipher({"k1": K1}, "k1")) as store:
        await _fill(store)
    async with make_store() as plain:
        with pytest.raises(DecryptionError, match=r"encrypted \(key 'k1'\)"):
            await plain.load_creds("s1")
        with pytest.raises(DecryptionError, match="encrypted"):
            await plain.get_keys("s1", "pre-key", ["1"])


async def test_plaintext_rows_need_allow_plaintext_then_reencrypt(make_store: StoreFactory) -> None:
    async with make_store() as plain:
        await _fill(plain)
    cipher = AESGCMCipher({"k1": K1}, "k1")
    async with make_store(cipher=cipher) as strict:
        with pytest.raises(DecryptionError, match="unencrypted"):
            await strict.load_creds("s1")
    async with make_store(cipher=cipher, allow_plaintext=True) as migrating:
        assert await migrating.load_creds("s1") == CREDS
        result = await migrating.reencrypt()
        assert (result.scanned, result.rewritten) == (9, 9)
    async with make_store(cipher=cipher) as strict:
        assert await strict.load_creds("s1") == CREDS
        assert await strict.get_keys("s1", "session", ["peer.0"]) == {"peer.0": SECRET}


async def test_key_rotation_is_resumable(make_store: StoreFactory) -> None:
    async with make_store(cipher=AESGCMCipher({"old": K1}, "old")) as store:
        for n in range(4):
            await _fill(store, f"s{n}")
    both = AESGCMCipher({"old": K1, "new": K2}, "new")
    async with make_store(cipher=both) as store:
        assert await store.load_creds("s0") == CREDS  # reads the old key
        await store.save_creds("s0", CREDS)  # writes with the new one

        class Interrupted(Exception):
            pass

        def stop_after_first_batch(progress: object) -> None:
            raise Interrupted

        with pytest.raises(Interrupted):
            await store.reencrypt(batch_size=3, progress=stop_after_first_batch)
        seen = []
        result = await store.reencrypt(batch_size=3, progress=lambda p: seen.append(p.scanned))
        assert result.scanned == 36
        assert result.rewritten == 36 - 1 - 2  # s0's creds and the first batch were done
        assert seen[-1] == 36
        assert {sealed_key_id(b) for b in await _raw(store, "keys")} == {"new"}
        assert await store.reencrypt() == type(result)(scanned=36, rewritten=0)
    async with make_store(cipher=AESGCMCipher({"new": K2}, "new")) as store:
        for n in range(4):
            assert await store.load_creds(f"s{n}") == CREDS
            assert await store.get_keys(f"s{n}", "session", ["peer.0"]) == {"peer.0": SECRET}


async def test_reencrypt_needs_a_cipher(store: BaseStore) -> None:
    with pytest.raises(InvalidInputError, match="cipher"):
        await store.reencrypt()


def test_cipher_arguments_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="32 bytes"):
        AESGCMCipher({"k": b"short"}, "k")
    with pytest.raises(InvalidInputError, match="not among"):
        AESGCMCipher({"k": K1}, "other")
    with pytest.raises(InvalidInputError, match="not allowed"):
        AESGCMCipher({"bad id!": K1}, "bad id!")
    with pytest.raises(InvalidInputError, match="at least one"):
        AESGCMCipher({}, "k")
    with pytest.raises(InvalidTypeError):
        AESGCMCipher([("k", K1)], "k")  # type: ignore[arg-type]
    cipher = AESGCMCipher({"k": K1}, "k")
    assert K1.hex() not in repr(cipher)
    assert repr(K1) not in repr(cipher)
    assert len(AESGCMCipher.generate_key()) == 32
