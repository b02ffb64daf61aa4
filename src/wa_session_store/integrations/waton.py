"""waton on wa_session_store: its auth state kept in PostgreSQL or SQLite.

::

    auth = await use_waton_auth_state(store, "user_123")
    client = WAClient(auth.storage)   # creds and Signal keys from the database
    auth.attach(client)               # every frame (WAClient.send_node) waits for the barrier
    ...
    await auth.aclose()               # detach, store what is pending

`waton <https://pypi.org/project/waton/>`_ reads and writes all its state
through a ``StoragePort`` (``waton/utils/auth.py``). ``auth.storage`` is one
over the session's auth state:

- ``get_creds`` returns the creds, waton's ``AuthCreds`` (the same object
  each time, which the client changes in place); ``save_creds(creds)`` is how
  waton reports a change (it emits no event): it feeds the throttled save,
  at once when the pre-key counters move, and never blocks or raises.
- sessions, pre-keys and sender keys are the store's key categories
  ``session`` (key: waton's Signal address, ``user.device``), ``pre-key``
  (the key id) and ``sender-key`` (``group::sender``), values the bytes waton
  gives; ``get_metadata(namespace, key)`` and ``save_metadata`` use a
  category of their own per namespace (:func:`metadata_category`), which
  ``export`` and ``copy`` carry like any other.
- in barrier mode (the default) a save lands in the key cache and a pending
  batch; :meth:`ClientAuthState.attach
  <wa_session_store.integrations.client_binding.ClientAuthState.attach>`
  makes every frame waton sends after the handshake (all go through
  ``WAClient.send_node``) wait until that batch, and an urgent creds save,
  are stored. A message to 100 devices costs one round trip, and no frame
  that depends on a key change leaves before the change is stored.

All of it is the client binding's
(:mod:`wa_session_store.integrations.client_binding`), with
:class:`WatonBinding` as waton's side; the creds conversion is in
:mod:`wa_session_store.integrations.waton_creds`.
"""

from __future__ import annotations

from typing import Any, Final

from typing_extensions import Unpack

try:
    from waton.client.client import WAClient
    from waton.utils.auth import AuthCreds, init_auth_creds
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wa_session_store.integrations.waton needs waton (Python >= 3.11): "
        "pip install 'wa-session-store[waton]'"
    ) from exc

from ..auth.state import AuthStateOptions
from ..errors import DecodeError, InvalidInputError, InvalidTypeError
from ..store.base import AuthStateStore
from .client_binding import ClientAuthState, ClientBinding, ClientParts
from .waton_creds import FIELD_NAMES, creds_from_document, creds_to_document

__all__ = [
    "FIELD_NAMES",
    "METADATA_PREFIX",
    "AuthStateOptions",
    "WatonAuthState",
    "WatonBinding",
    "WatonStorage",
    "creds_from_document",
    "creds_to_document",
    "metadata_category",
    "use_waton_auth_state",
]

#: The key category of waton's metadata namespace ``ns`` is ``METADATA_PREFIX + ns``.
METADATA_PREFIX: Final = "metadata:"


def metadata_category(namespace: str) -> str:
    """The key category that holds waton's metadata ``namespace``.

    Raises:
        InvalidTypeError: ``namespace`` is not a str.
    """
    if not isinstance(namespace, str):
        raise InvalidTypeError(
            f"a metadata namespace must be a str, not {type(namespace).__name__}"
        )
    return METADATA_PREFIX + namespace


class WatonBinding(ClientBinding[AuthCreds]):
    """waton's side of the client binding.

    Its creds are ``AuthCreds`` (:func:`creds_to_document`,
    :func:`creds_from_document`, waton's ``init_auth_creds()`` for a new
    session); it reports changes by calling ``StoragePort.save_creds``, which
    :class:`WatonStorage` routes to the auth state; every frame after the
    handshake leaves through ``WAClient.send_node``. A ``WAClient`` is its
    own anchor and sender; one that has not loaded its creds yet (before
    ``connect()``) will load them from its storage, so that is what is checked.
    """

    client_name = "waton"
    creds_type = AuthCreds
    send_method = "send_node"
    build_hint = "build it with WAClient(auth.storage)"

    new_creds = staticmethod(init_auth_creds)
    creds_to_document = staticmethod(creds_to_document)
    creds_from_document = staticmethod(creds_from_document)

    def parts(self, client: object) -> ClientParts:
        if not isinstance(client, WAClient):
            raise InvalidTypeError(f"attach() takes a waton WAClient, not {type(client).__name__}")
        storage = client.storage
        if not isinstance(storage, WatonStorage):
            # Its creds and keys would come from, and go to, somewhere else.
            raise InvalidInputError(
                f"this client is built on another storage ({type(storage).__name__}); "
                f"{self.build_hint}"
            )
        creds = client.creds if client.creds is not None else storage.auth.creds
        return ClientParts(anchor=client, creds=creds, sender=client)


def _bytes_or_none(value: object, category: str, key_id: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise DecodeError(
        f"the stored {category} {key_id!r} is {type(value).__name__}, not the bytes waton "
        "writes: this session's keys were written by another client"
    )


class WatonStorage:
    """waton's ``StoragePort`` over a session's auth state: ``WAClient(auth.storage)``.

    Reads come from the key cache (preloaded by default) or one query; writes
    go through the key store (see the module's description). Every method
    raises what the key store raises: ``StoreClosedError`` after
    :meth:`WatonAuthState.aclose`, ``InvalidInputError`` for a value the store
    cannot keep exactly, ``StoreUnavailableError`` or ``StoreOperationError``
    for a read (or, in write-through mode, a write) that failed after the
    store's retries, ``LeaseLostError`` once the lease is lost. A value stored
    by another client that is not bytes raises ``DecodeError``.
    """

    __slots__ = ("auth",)

    def __init__(self, auth: WatonAuthState) -> None:
        self.auth = auth

    def __repr__(self) -> str:
        return f"<WatonStorage session={self.auth.session_id!r}>"

    async def get_creds(self) -> AuthCreds | None:
        """The session's creds: the same object each time (never None: a new
        session's were made and saved when the auth state was loaded)."""
        return self.auth.creds

    async def save_creds(self, creds: AuthCreds) -> None:
        """Hand ``creds`` to the throttled save (at once when the pre-key counters
        moved); returns at once and never raises (a failure is logged)."""
        self.auth.creds_updated(creds)

    async def _get(self, category: str, key_id: str) -> bytes | None:
        value = (await self.auth.keys.get(category, [key_id]))[key_id]
        return _bytes_or_none(value, category, key_id)

    async def get_session(self, jid: str) -> bytes | None:
        """The Signal session with ``jid`` (waton's address, ``user.device``), or None."""
        return await self._get("session", jid)

    async def save_session(self, jid: str, data: bytes) -> None:
        """Keep the Signal session with ``jid``."""
        await self.auth.keys.set({"session": {jid: data}})

    async def get_prekey(self, key_id: int) -> bytes | None:
        """The private pre-key ``key_id``, or None."""
        return await self._get("pre-key", str(key_id))

    async def save_prekey(self, key_id: int, data: bytes) -> None:
        """Keep the private pre-key ``key_id``."""
        await self.auth.keys.set({"pre-key": {key_id: data}})

    async def get_sender_key(self, group_jid: str, sender_jid: str) -> bytes | None:
        """``sender_jid``'s sender key in ``group_jid``, or None."""
        return await self._get("sender-key", f"{group_jid}::{sender_jid}")

    async def save_sender_key(self, group_jid: str, sender_jid: str, data: bytes) -> None:
        """Keep ``sender_jid``'s sender key in ``group_jid``."""
        await self.auth.keys.set({"sender-key": {f"{group_jid}::{sender_jid}": data}})

    async def get_metadata(self, namespace: str, key: str) -> dict[str, Any] | None:
        """The metadata ``key`` of ``namespace`` (:func:`metadata_category`), or None."""
        category = metadata_category(namespace)
        value = (await self.auth.keys.get(category, [key]))[key]
        if value is None or isinstance(value, dict):
            return value
        raise DecodeError(f"the stored {category} {key!r} is {type(value).__name__}, not a dict")

    async def save_metadata(self, namespace: str, key: str, payload: dict[str, Any]) -> None:
        """Keep ``payload`` as the metadata ``key`` of ``namespace``.

        Raises:
            InvalidTypeError: ``payload`` is not a dict (what waton's storages keep).
        """
        if not isinstance(payload, dict):
            raise InvalidTypeError(f"metadata payload must be a dict, not {type(payload).__name__}")
        await self.auth.keys.set({metadata_category(namespace): {key: payload}})

    async def close(self) -> None:
        """What waton's ``App`` calls on shutdown: store what is pending (keys and
        creds). The auth state stays open: close it with :meth:`WatonAuthState.aclose`."""
        await self.auth.flush()


class WatonAuthState(ClientAuthState[AuthCreds]):
    """A session's waton auth state, kept saved; build it with :func:`use_waton_auth_state`.

    Everything but :attr:`storage` is the client binding's
    (:class:`~wa_session_store.integrations.client_binding.ClientAuthState`):
    ``attach(client)`` takes a ``WAClient`` built on :attr:`storage` (before
    or after ``connect()``), puts the barrier on its ``send_node`` and returns
    the detach function; it refuses a client on another storage or on other
    creds.

    Attributes:
        storage: the :class:`WatonStorage` to build the client with:
            ``WAClient(auth.storage)``.
        is_new: True when the session had no creds and new ones were made.
    """

    __slots__ = ("storage",)

    storage: WatonStorage

    def _setup(self, creds: AuthCreds) -> None:
        self.storage = WatonStorage(self)


#: The binding every WatonAuthState uses (it keeps no state).
_BINDING: Final = WatonBinding()


async def use_waton_auth_state(
    store: AuthStateStore, session_id: str, **options: Unpack[AuthStateOptions]
) -> WatonAuthState:
    """Load a session's waton auth state from ``store`` and keep it saved.

    A stored creds document becomes waton's ``AuthCreds``. A new session gets
    waton's ``init_auth_creds()``, saved before this returns (the QR code
    carries their keys), so the client's ``connect()`` finds creds in
    :attr:`WatonAuthState.storage` and never makes its own.

    Args:
        store: an open store.
        session_id: the session (one WhatsApp account).
        **options: those of :func:`~wa_session_store.use_auth_state`, with
            two defaults of its own: ``key_writes="barrier"`` (attach the
            client so that its frames wait for the barrier) and
            ``preload=True`` (the first send after a restart reads from memory).

    Returns:
        The :class:`WatonAuthState`: build the client with
        ``WAClient(auth.storage)``, then ``auth.attach(client)``.

    Raises:
        InvalidInputError, InvalidTypeError: an invalid argument (checked
            before any I/O), or a stored document that is not waton creds.
        StoreUnavailableError, StoreOperationError, DecodeError: loading, or
            saving new creds, failed.
    """
    return await WatonAuthState.load(store, session_id, _BINDING, options)
