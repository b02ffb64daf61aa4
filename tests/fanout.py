"""A pyaileys client fanning a message out to many devices, offline.

Shared by the key-store tests, the barrier child process and the "client
fan-out" benchmark: remote devices are made with pyaileys' own curve (an
identity, a signed pre-key and a one-time pre-key each), sessions to them are
built with pyaileys' ``SignalRepository.inject_outgoing_session``, and a send
is what pyaileys does for each recipient device: one ``encrypt_message``
(one ``keys.get`` and one ``keys.set`` of the session). Frames go to a
:class:`WireRecorder` instead of WhatsApp's servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pyaileys import WhatsAppClient
from pyaileys.crypto.curve import DefaultCurve25519Provider
from pyaileys.signal import SignalRepository
from pyaileys.signal.repository import PreKeyBundle, PreKeyBundleKey
from pyaileys.signal.util import signal_pubkey

__all__ = ["WireRecorder", "device_jids", "fan_out", "make_bundles", "open_sessions", "wire"]

_curve = DefaultCurve25519Provider()


def device_jids(count: int, first: int = 0) -> list[str]:
    """``count`` device jids: 3 devices of each of ``count / 3`` users."""
    return [
        f"{5511900000000 + (first + i) // 3}:{(first + i) % 3 + 1}@s.whatsapp.net"
        for i in range(count)
    ]


def make_bundles(jids: Iterable[str]) -> list[tuple[str, PreKeyBundle]]:
    """A pre-key bundle for each device, as WhatsApp's ``encrypt`` query returns it."""
    bundles = []
    for n, jid in enumerate(jids):
        identity = _curve.generate_keypair()
        signed = _curve.generate_keypair()
        one_time = _curve.generate_keypair()
        signature = _curve.sign(identity.private, signal_pubkey(signed.public))
        bundle = PreKeyBundle(
            registration_id=1000 + n,
            identity_key=signal_pubkey(identity.public),
            signed_pre_key=PreKeyBundleKey(
                key_id=1, public_key=signal_pubkey(signed.public), signature=signature
            ),
            pre_key=PreKeyBundleKey(key_id=7 + n, public_key=signal_pubkey(one_time.public)),
        )
        bundles.append((jid, bundle))
    return bundles


async def open_sessions(repo: SignalRepository, bundles: list[tuple[str, PreKeyBundle]]) -> None:
    """Build an outgoing Signal session to every device (pyaileys' own code)."""
    for jid, bundle in bundles:
        await repo.inject_outgoing_session(jid, bundle)


async def fan_out(repo: SignalRepository, jids: Iterable[str], text: str) -> int:
    """Encrypt ``text`` for every device, as a send does; return the bytes produced."""
    produced = 0
    for jid in jids:
        _, ciphertext = await repo.encrypt_message(jid, data=text.encode())
        produced += len(ciphertext)
    return produced


class _PlainNoise:
    """Stands in for the Noise session: frames are not encrypted."""

    transport_ready = True

    @staticmethod
    def encode_frame(payload: bytes) -> bytes:
        return payload


class WireRecorder:
    """Stands in for the websocket: records every frame the client sends.

    With ``path``, each frame is appended to that file and fsynced before
    ``send`` returns, so a process killed right after a send leaves it on disk.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.frames: list[bytes] = []
        self.path = path

    async def send(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.path is not None:
            with self.path.open("ab") as out:
                out.write(frame + b"\n")
                out.flush()
                os.fsync(out.fileno())


def wire(client: WhatsAppClient, path: Path | None = None) -> WireRecorder:
    """Connect ``client``'s socket to a :class:`WireRecorder` (offline)."""
    recorder = WireRecorder(path)
    client.socket._noise = _PlainNoise()  # type: ignore[assignment]  # a stand-in, see above
    client.socket._transport = recorder  # type: ignore[assignment]  # a stand-in, see above
    return recorder
