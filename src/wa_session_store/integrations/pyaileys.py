"""pyaileys on wa_session_store: its auth state kept in PostgreSQL or SQLite.

::

    auth = await use_pyaileys_auth_state(store, "user_123")
    client = WhatsAppClient(auth=auth.state)
    auth.attach(client)          # creds.update: a throttled save; frames: a barrier
    ...
    await auth.aclose()          # detach, store what is pending

``auth.state`` is a ``pyaileys.auth.state.AuthenticationState``: its creds
are pyaileys' ``AuthenticationCreds``, converted from the stored document (or
made by pyaileys' ``init_auth_creds()`` for a new session, and saved at once),
and its keys are the store's :class:`~wa_session_store.AuthKeys`, in barrier
mode by default: a ``keys.set`` lands in the cache and a pending batch, and
:meth:`PyaileysAuthState.attach` makes every outgoing frame (pyaileys sends
each one through ``WASocket.send_raw``) wait until that batch, and an urgent
creds save, are stored. A message to 100 devices costs one round trip, not
200, and no frame that depends on a key change leaves before the change is
stored; a frame whose barrier fails is not sent (the client's send raises).
Every value pyaileys puts in its key store (``session``, ``pre-key``,
``identity-key``, ``sender-key``, ``sender-key-memory``,
``app-state-sync-key``, ``app-state-sync-version``, ``tctoken``) is bytes or a
dict of str, int, bool, None and bytes, which the store's BufferJSON codec
keeps exactly, so keys need no conversion.

The creds document uses Baileys' camelCase names (see :data:`FIELD_NAMES`),
so it reads like one written by Baileys, and the default ``urgent`` predicate
sees ``nextPreKeyId`` and ``firstUnuploadedPreKeyId`` move.
:func:`creds_to_document` and :func:`creds_from_document` convert between the
two; they live in :mod:`wa_session_store.integrations.pyaileys_creds` and are
importable from here too. This module is the auth state: loading it, the
``creds.update`` listener, and the write barrier on outgoing frames, all of
it on the client binding (:mod:`wa_session_store.integrations.client_binding`):
:class:`PyaileysBinding` is pyaileys' side of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias, cast

from typing_extensions import Unpack

try:
    from pyaileys.auth.creds import AuthenticationCreds
    from pyaileys.auth.state import AuthenticationState
    from pyaileys.auth.utils import init_auth_creds
    from pyaileys.client import WhatsAppClient
    from pyaileys.socket import WASocket
    from pyaileys.util.events import AsyncEventEmitter
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wa_session_store.integrations.pyaileys needs pyaileys (Python >= 3.11): "
        "pip install 'wa-session-store[pyaileys]'"
    ) from exc

from ..auth.state import AuthStateOptions
from ..errors import InvalidTypeError
from ..store.base import AuthStateStore
from .client_binding import ClientAuthState, ClientBinding, ClientParts
from .pyaileys_creds import FIELD_NAMES, creds_from_document, creds_to_document

__all__ = [
    "CREDS_UPDATE_EVENT",
    "FIELD_NAMES",
    "AuthStateOptions",
    "PyaileysAuthState",
    "PyaileysBinding",
    "creds_from_document",
    "creds_to_document",
    "use_pyaileys_auth_state",
]

#: The event pyaileys emits, with its ``AuthenticationCreds``, when creds change.
CREDS_UPDATE_EVENT: Final = "creds.update"


Attachable: TypeAlias = WhatsAppClient | WASocket | AsyncEventEmitter
"""What :meth:`PyaileysAuthState.attach` takes: a client, its socket, or an emitter."""


class PyaileysBinding(ClientBinding[AuthenticationCreds]):
    """pyaileys' side of the client binding.

    Its creds are ``AuthenticationCreds`` (:func:`creds_to_document`,
    :func:`creds_from_document`, ``init_auth_creds()`` for a new session); it
    reports changes with its ``creds.update`` event; every frame leaves
    through ``WASocket.send_raw``. A ``WhatsAppClient`` or ``WASocket`` is
    attached by its socket's event emitter; an ``AsyncEventEmitter`` alone
    has no socket (creds only).
    """

    client_name = "pyaileys"
    creds_type = AuthenticationCreds
    send_method = "send_raw"
    build_hint = "build it with WhatsAppClient(auth=auth.state)"

    new_creds = staticmethod(init_auth_creds)
    creds_to_document = staticmethod(creds_to_document)
    creds_from_document = staticmethod(creds_from_document)

    def parts(self, client: object) -> ClientParts:
        if isinstance(client, WhatsAppClient):
            client = client.socket
        if isinstance(client, WASocket):
            return ClientParts(client.events, client.auth.creds, client)
        if isinstance(client, AsyncEventEmitter):
            return ClientParts(client)
        raise InvalidTypeError(
            "attach() takes a pyaileys WhatsAppClient, WASocket or AsyncEventEmitter, "
            f"not {type(client).__name__}"
        )

    def subscribe(self, anchor: object, listener: Callable[..., None]) -> None:
        cast(AsyncEventEmitter, anchor).on(CREDS_UPDATE_EVENT, listener)  # parts()' anchor

    def unsubscribe(self, anchor: object, listener: Callable[..., None]) -> None:
        cast(AsyncEventEmitter, anchor).off(CREDS_UPDATE_EVENT, listener)


class PyaileysAuthState(ClientAuthState[AuthenticationCreds]):
    """A session's pyaileys auth state, kept saved; build it with :func:`use_pyaileys_auth_state`.

    Everything but :attr:`state` is the client binding's
    (:class:`~wa_session_store.integrations.client_binding.ClientAuthState`):
    ``attach(client)`` takes a ``WhatsAppClient`` built on :attr:`state`, its
    ``WASocket``, or an ``AsyncEventEmitter`` (creds only: no frame waits
    then, so keys in barrier mode are only flushed by time), registers
    :meth:`creds_updated` for ``creds.update`` and puts the barrier on
    ``WASocket.send_raw``; it refuses a client on other creds than
    :attr:`state`.

    Attributes:
        state: the ``pyaileys.auth.state.AuthenticationState`` to build the
            client with: ``WhatsAppClient(auth=auth.state)``.
        is_new: True when the session had no creds and new ones were made.
    """

    __slots__ = ("state",)

    state: AuthenticationState

    def _setup(self, creds: AuthenticationCreds) -> None:
        self.state = AuthenticationState(creds=creds, keys=self.keys)

    @property
    def creds(self) -> AuthenticationCreds:
        """pyaileys' creds (``state.creds``), changed in place by the client."""
        return self.state.creds

    @creds.setter
    def creds(self, creds: AuthenticationCreds) -> None:
        self.state.creds = creds


#: The binding every PyaileysAuthState uses (it keeps no state).
_BINDING: Final = PyaileysBinding()


async def use_pyaileys_auth_state(
    store: AuthStateStore, session_id: str, **options: Unpack[AuthStateOptions]
) -> PyaileysAuthState:
    """Load a session's pyaileys auth state from ``store`` and keep it saved.

    A stored creds document becomes pyaileys' ``AuthenticationCreds``. A new
    session gets pyaileys' ``init_auth_creds()``, saved before this returns:
    the QR code carries its noise key, identity key and ADV secret, so a crash
    between showing the code and the first ``creds.update`` must not lose them.

    Args:
        store: an open store.
        session_id: the session (one WhatsApp account).
        **options: those of :func:`~wa_session_store.use_auth_state`, with
            two defaults of its own: ``key_writes="barrier"`` (attach the
            client so that its frames wait for the barrier) and
            ``preload=True`` (the first send after a restart reads from memory).

    Returns:
        The :class:`PyaileysAuthState`: build the client with
        ``WhatsAppClient(auth=auth.state)``, then ``auth.attach(client)``.

    Raises:
        InvalidInputError, InvalidTypeError: an invalid argument, or a stored
            document that is not pyaileys creds.
        StoreUnavailableError, StoreOperationError, DecodeError: loading, or
            saving new creds, failed.
    """
    return await PyaileysAuthState.load(store, session_id, _BINDING, options)
