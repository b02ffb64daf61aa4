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
``creds.update`` listener, and the write barrier on outgoing frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, TypeAlias

from typing_extensions import Self, Unpack

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

from ..auth_state import AuthKeys, AuthState, AuthStateOptions, SessionOptions, load_auth_state
from ..errors import InvalidInputError, InvalidTypeError, describe_error
from ..store import AuthStateStore
from .pyaileys_creds import FIELD_NAMES, creds_from_document, creds_to_document

__all__ = [
    "CREDS_UPDATE_EVENT",
    "FIELD_NAMES",
    "AuthStateOptions",
    "PyaileysAuthState",
    "creds_from_document",
    "creds_to_document",
    "use_pyaileys_auth_state",
]

logger = logging.getLogger("wa_session_store")

#: The event pyaileys emits, with its ``AuthenticationCreds``, when creds change.
CREDS_UPDATE_EVENT: Final = "creds.update"

# use_pyaileys_auth_state's defaults: use_auth_state's, but the keys in
# barrier mode (attached clients' frames wait for it) and preloaded.
_DEFAULTS: Final = SessionOptions(key_writes="barrier", preload=True)


# -- the auth state -----------------------------------------------------------


Attachable: TypeAlias = WhatsAppClient | WASocket | AsyncEventEmitter
"""What :meth:`PyaileysAuthState.attach` takes: a client, its socket, or an emitter."""


class PyaileysAuthState:
    """A session's pyaileys auth state, kept saved; build it with :func:`use_pyaileys_auth_state`.

    Attributes:
        state: the ``pyaileys.auth.state.AuthenticationState`` to build the
            client with: ``WhatsAppClient(auth=auth.state)``.
        is_new: True when the session had no creds and new ones were made.
    """

    __slots__ = ("_attached", "_auth", "_barriers", "_base", "is_new", "state")

    def __init__(
        self,
        auth: AuthState,
        creds: AuthenticationCreds,
        *,
        base: Mapping[str, Any] | None,
        is_new: bool,
    ) -> None:
        self._auth = auth
        self._base = base
        self._attached: list[AsyncEventEmitter] = []
        # (socket, the send_raw installed on it) for every socket behind a barrier.
        self._barriers: list[tuple[WASocket, Callable[[bytes], Any]]] = []
        self.is_new = is_new
        self.state = AuthenticationState(creds=creds, keys=auth.keys)

    def __repr__(self) -> str:
        return f"<PyaileysAuthState {self._auth!r} attached={len(self._attached)}>"

    @property
    def session_id(self) -> str:
        """The session."""
        return self._auth.session_id

    @property
    def creds(self) -> AuthenticationCreds:
        """pyaileys' creds (``state.creds``), changed in place by the client."""
        return self.state.creds

    @property
    def keys(self) -> AuthKeys:
        """The Signal key store (``state.keys``)."""
        return self._auth.keys

    @property
    def auth_state(self) -> AuthState:
        """The underlying :class:`~wa_session_store.AuthState` (creds as a document)."""
        return self._auth

    @property
    def pending(self) -> bool:
        """Whether a creds change has not been saved yet."""
        return self._auth.pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._auth.closed

    def document(self) -> dict[str, Any]:
        """The creds document for the current creds (what a save stores)."""
        return creds_to_document(self.state.creds, base=self._base)

    def _push(self) -> None:
        document = self.document()
        # The auth state keeps the last document reported; an unchanged one is not a change.
        if self._auth._saver.differs(document):
            self._auth.creds_updated(document)

    def creds_updated(self, creds: object = None, *args: object, **kwargs: object) -> None:
        """The ``creds.update`` listener: non-blocking, never raises.

        :meth:`attach` registers it; ``client.on("creds.update",
        auth.creds_updated)`` does the same by hand. The creds pyaileys emits
        (its own ``AuthenticationCreds``, changed in place) are converted and
        handed to the throttled save; an update that changes nothing is
        skipped, and one that moves the pre-key counters is saved at once.
        """
        try:
            if isinstance(creds, AuthenticationCreds) and creds is not self.state.creds:
                self.state.creds = creds
            self._push()
        except Exception as exc:
            logger.error(
                "creds.update for %s could not be converted: %s",
                self.session_id,
                describe_error(exc),
                extra={"session_id": self.session_id, "op": "creds_updated"},
            )

    def attach(self, client: Attachable) -> Callable[[], None]:
        """Save the creds on every ``creds.update`` of ``client``, and make its
        outgoing frames wait for the write barrier; return the detach function.

        The barrier (:meth:`AuthState.barrier
        <wa_session_store.AuthState.barrier>`) wraps the socket's
        ``send_raw``, through which pyaileys sends every frame: a frame
        leaves only once every key write made before it, and an urgent creds
        save owed or in flight (the pre-key counters), are stored. If that
        fails after the store's retries, the frame is not sent: ``send_raw``
        raises the store's error, and the writes stay pending for the next
        frame. Frames keep their order.

        Args:
            client: a ``WhatsAppClient`` built on :attr:`state`, its
                ``WASocket``, or an ``AsyncEventEmitter`` (creds only: no
                frame waits then, so keys in barrier mode are only flushed by
                time). Attaching twice to the same client registers once.

        Raises:
            InvalidTypeError: ``client`` is none of those.
            InvalidInputError: the client holds other creds than :attr:`state`
                (its updates would be saved under this session).
        """
        socket: WASocket | None
        if isinstance(client, WhatsAppClient):
            socket = client.socket
            events, auth = socket.events, socket.auth
        elif isinstance(client, WASocket):
            socket = client
            events, auth = client.events, client.auth
        elif isinstance(client, AsyncEventEmitter):
            socket, events, auth = None, client, None
        else:
            raise InvalidTypeError(
                "attach() takes a pyaileys WhatsAppClient, WASocket or AsyncEventEmitter, "
                f"not {type(client).__name__}"
            )
        if auth is not None and auth.creds is not self.state.creds:
            raise InvalidInputError(
                f"this client holds other creds than session {self.session_id!r}; "
                "build it with WhatsAppClient(auth=auth.state)"
            )
        if not any(events is attached for attached in self._attached):
            events.on(CREDS_UPDATE_EVENT, self.creds_updated)
            self._attached.append(events)
        if socket is not None:
            self._install_barrier(socket)
        elif self.keys.mode == "barrier":
            logger.warning(
                "%s is attached to an event emitter only: no outgoing frame waits for its "
                "key writes; attach the WhatsAppClient or WASocket",
                self.session_id,
                extra={"session_id": self.session_id, "op": "attach"},
            )
        return lambda: self._detach(events)

    def _install_barrier(self, socket: WASocket) -> None:
        if any(attached is socket for attached, _ in self._barriers):
            return
        send = socket.send_raw
        # Held across the barrier, so frames leave in the order they were sent.
        order = asyncio.Lock()
        barrier = self._auth.barrier

        async def send_raw(payload: bytes) -> None:
            async with order:
                await barrier()
                await send(payload)

        # pyaileys calls self.send_raw, so the instance attribute is what every frame meets.
        socket.send_raw = send_raw  # type: ignore[method-assign]  # shadowed on this instance only
        self._barriers.append((socket, send_raw))

    def _detach(self, events: AsyncEventEmitter) -> None:
        for index, (socket, send_raw) in enumerate(self._barriers):
            if socket.events is events:
                del self._barriers[index]
                if vars(socket).get("send_raw") is send_raw:
                    del socket.send_raw
                break
        for index, attached in enumerate(self._attached):
            if attached is events:
                del self._attached[index]
                events.off(CREDS_UPDATE_EVENT, self.creds_updated)
                return

    def detach(self, client: Attachable | None = None) -> None:
        """Stop saving on ``client``'s ``creds.update`` (default: on every attached client)."""
        if client is None:
            for events in list(self._attached):
                self._detach(events)
            return
        if isinstance(client, WhatsAppClient):
            self._detach(client.socket.events)
        elif isinstance(client, WASocket):
            self._detach(client.events)
        else:
            self._detach(client)

    async def save_creds(self) -> None:
        """Save the current creds now, bypassing the throttle.

        Raises:
            StoreClosedError: after :meth:`aclose`.
            StoreUnavailableError, StoreOperationError: the save failed (it
                stays pending and is retried).
        """
        await self._auth.save_creds(self.document())

    async def flush(self) -> None:
        """Store the pending key writes and save the creds now, including
        creds changed without an event."""
        self._push()
        await self._auth.flush()

    async def aclose(self, deadline: float = 10.0) -> None:
        """Detach from every client, store what is pending (keys and creds), and close.

        Raises:
            TimeoutError, StoreUnavailableError, StoreOperationError: as
                :meth:`AuthState.aclose <wa_session_store.AuthState.aclose>`.
        """
        self.detach()
        if not self._auth.closed:
            try:
                self._push()
            except Exception as exc:
                logger.error(
                    "closing %s: the current creds could not be converted: %s",
                    self.session_id,
                    describe_error(exc),
                    extra={"session_id": self.session_id, "op": "aclose"},
                )
        await self._auth.aclose(deadline)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


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
    auth = await load_auth_state(store, session_id, _DEFAULTS.replace(**options))
    try:
        if auth.creds is None:
            result = PyaileysAuthState(auth, init_auth_creds(), base=None, is_new=True)
            await result.save_creds()
        else:
            result = PyaileysAuthState(
                auth, creds_from_document(auth.creds), base=auth.creds, is_new=False
            )
    except BaseException:
        try:
            await auth.aclose(deadline=1.0)
        except Exception as exc:
            logger.debug("closing %s after a failed load: %s", session_id, describe_error(exc))
        raise
    return result
