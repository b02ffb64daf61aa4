"""A pyaileys client fanning a message out to many devices, offline.

Shared by the key-store tests, the barrier child process and the "client
fan-out" benchmark: remote devices are made with pyaileys' own curve (an
identity, a signed pre-key and a one-time pre-key each), sessions to them are
built with pyaileys' ``SignalRepository.inject_outgoing_session``, and a send
is what pyaileys does for each recipient device: one ``encrypt_message``
(one ``keys.get`` and one ``keys.set`` of the session). Frames go to a
:class:`~tests.wire.WireRecorder` instead of WhatsApp's servers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pyaileys import WhatsAppClient
from pyaileys.crypto.curve import DefaultCurve25519Provider
from pyaileys.signal import SignalRepository
from pyaileys.signal.repository import PreKeyBundle, PreKeyBundleKey
from pyaileys.signal.util import signal_pubkey

from .wire import WireRecorder, device_jids

__all__ = ["WireRecorder", "device_jids", "fan_out", "make_bundles", "open_sessions", "wire"]

_curve = DefaultCurve25519Provider()


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


def wire(client: WhatsAppClient, path: Path | None = None) -> WireRecorder:
    """Connect ``client``'s socket to a :class:`WireRecorder` (offline)."""
    recorder = WireRecorder(path)
    client.socket._noise = _PlainNoise()  # type: ignore[assignment]  # a stand-in, see above
    client.socket._transport = recorder  # type: ignore[assignment]  # a stand-in, see above
    return recorder
