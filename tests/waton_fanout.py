"""A waton client fanning a message out to many devices, offline: the waton
twin of ``tests/fanout.py``.

Shared by the waton tests, the waton crash child and workload 8's waton twin.
Remote devices are made with waton's own curve (an identity, a signed
pre-key and a one-time pre-key each, signed as waton's ``init_auth_creds``
signs), sessions to them are built with waton's
``SignalRepository.inject_session_from_prekey_bundle``, and a send is what
waton does for each recipient device: one ``encrypt_message`` (one
``get_session`` and one ``save_session``). A ``WAClient`` is wired to a
:class:`~tests.wire.WireRecorder`: its frames (every one goes through
``WAClient.send_node``) are hex lines instead of Noise frames, and an iq
query is answered at once, as the server would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from waton.client.client import WAClient
from waton.protocol.binary_codec import decode_binary_node
from waton.protocol.binary_node import BinaryNode
from waton.protocol.signal_repo import SignalRepository
from waton.utils.crypto import generate_keypair, sign

from .wire import WireRecorder, device_jids

__all__ = [
    "Bundle",
    "WatonWire",
    "device_jids",
    "fan_out",
    "frame_nodes",
    "make_bundles",
    "message",
    "open_sessions",
    "wire",
]

Bundle = dict[str, Any]
"""The keyword arguments of ``inject_session_from_prekey_bundle`` for one device."""


def make_bundles(jids: Iterable[str]) -> list[tuple[str, Bundle]]:
    """A pre-key bundle for each device, as WhatsApp's ``encrypt`` query returns it."""
    bundles = []
    for n, jid in enumerate(jids):
        identity, signed, one_time = generate_keypair(), generate_keypair(), generate_keypair()
        bundle = {
            "registration_id": 1000 + n,
            "identity_key": identity["public"],
            "signed_prekey_id": 1,
            "signed_prekey_public": signed["public"],
            "signed_prekey_signature": sign(identity["private"], b"\x05" + signed["public"]),
            "prekey_id": 7 + n,
            "prekey_public": one_time["public"],
        }
        bundles.append((jid, bundle))
    return bundles


async def open_sessions(repo: SignalRepository, bundles: list[tuple[str, Bundle]]) -> None:
    """Build an outgoing Signal session to every device (waton's own code)."""
    for jid, bundle in bundles:
        await repo.inject_session_from_prekey_bundle(jid, **bundle)


async def fan_out(repo: SignalRepository, jids: Iterable[str], text: str) -> int:
    """Encrypt ``text`` for every device, as a send does; return the bytes produced."""
    produced = 0
    for jid in jids:
        _, ciphertext = await repo.encrypt_message(jid, text.encode())
        produced += len(ciphertext)
    return produced


def message(
    message_id: str, to: str = "s.whatsapp.net", *encrypted: tuple[str, bytes]
) -> BinaryNode:
    """A ``message`` stanza with an ``enc`` child per ``(type, ciphertext)``."""
    children = [
        BinaryNode(tag="enc", attrs={"v": "2", "type": kind}, content=data)
        for kind, data in encrypted
    ]
    return BinaryNode(tag="message", attrs={"id": message_id, "to": to}, content=children or None)


def frame_nodes(frames: Iterable[bytes]) -> list[BinaryNode]:
    """The stanzas a :class:`WatonWire` recorded (hex lines), decoded by waton."""
    return [decode_binary_node(bytes.fromhex(frame.decode())) for frame in frames]


class _HexNoise:
    """Stands in for the Noise session: a frame is its payload in hex (one line)."""

    @staticmethod
    def encode_frame(payload: bytes) -> bytes:
        return payload.hex().encode()


class WatonWire(WireRecorder):
    """A :class:`WireRecorder` for a ``WAClient``: answers each iq query it
    sees with an empty result, and calls ``on_frame(stanza)`` (if set) as
    the frame leaves, before it is recorded."""

    def __init__(self, client: WAClient, path: Path | None = None) -> None:
        super().__init__(path)
        self.client = client
        self.on_frame: Callable[[BinaryNode], Awaitable[None]] | None = None

    async def send(self, frame: bytes) -> None:
        (node,) = frame_nodes([frame])
        if self.on_frame is not None:
            await self.on_frame(node)
        await super().send(frame)
        waiting = self.client._pending_queries.get(node.attrs.get("id", ""))
        if node.tag == "iq" and waiting is not None and not waiting.done():
            waiting.set_result(
                BinaryNode(tag="iq", attrs={"id": node.attrs["id"], "type": "result"})
            )


def wire(client: WAClient, path: Path | None = None) -> WatonWire:
    """Connect ``client`` to a :class:`WatonWire` (offline), as if logged in."""
    recorder = WatonWire(client, path)
    client.noise = _HexNoise()
    client.ws = recorder
    client.is_connected = True
    return recorder
