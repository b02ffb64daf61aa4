"""The client binding: the small interface a WhatsApp client must offer, written once.

Every integration (pyaileys, waton, one of your own) is a
:class:`ClientBinding` plus, at most, a little glue. The binding has three
parts:

1. **A creds converter**: :meth:`~ClientBinding.new_creds`,
   :meth:`~ClientBinding.creds_to_document` and
   :meth:`~ClientBinding.creds_from_document`, between the client's creds
   object and a JSON-able mapping (bytes allowed: the store keeps them as
   BufferJSON Buffers).
2. **A way to learn that creds changed**: an event the client emits
   (:meth:`~ClientBinding.subscribe` and :meth:`~ClientBinding.unsubscribe`),
   or a save call the client already makes, which the integration routes to
   :meth:`ClientAuthState.creds_updated`.
3. **The one awaitable send method that every outgoing frame passes through**
   (:attr:`~ClientBinding.send_method`, on the object
   :meth:`~ClientBinding.parts` names): :meth:`ClientAuthState.attach` makes
   it wait for the write barrier. A client with no such choke point names
   none, and its keys are written through (each ``keys.set`` is stored before
   it returns), since nothing would hold back a frame whose keys are not
   stored yet.

:class:`ClientAuthState` holds everything else, for every client: the key
store it hands out, the creds saves (throttled, urgent when the pre-key
counters move), attach and detach, and the refusal of a client whose creds
differ from the stored ones. :func:`use_client_auth_state` loads one.

This module is the public path. :class:`ClientBinding` and
:class:`ClientParts` are declared in ``client_interface.py``, and the hooks
that attaching puts on a client (the creds listener, the barrier wrapper and
its lock) in ``client_attachments.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from typing_extensions import Self, Unpack

from ..auth.state import AuthKeys, AuthState, AuthStateOptions, SessionOptions, load_auth_state
from ..errors import InvalidInputError, InvalidTypeError, describe_error
from ..store.base import AuthStateStore
from .client_attachments import ClientAttachments
from .client_interface import ClientBinding, ClientParts

__all__ = [
    "ClientAuthState",
    "ClientBinding",
    "ClientParts",
    "use_client_auth_state",
]

logger = logging.getLogger("wa_session_store")

CredsT = TypeVar("CredsT")


class ClientAuthState(Generic[CredsT]):
    """A session's auth state in the client's own creds type, kept saved.

    Load it with :func:`use_client_auth_state` (or an integration's
    ``use_*_auth_state``). The client changes :attr:`creds` in place; a
    change it reports (its event, or its save call routed to
    :meth:`creds_updated`) is converted and saved by the throttle, at once
    when the pre-key counters move. :attr:`keys` is the session's key store.

    Attributes:
        binding: the :class:`ClientBinding` of the client.
        is_new: True when the session had no creds and new ones were made.
    """

    __slots__ = ("_attachments", "_auth", "_base", "_creds", "binding", "is_new")

    def __init__(
        self,
        auth: AuthState,
        binding: ClientBinding[CredsT],
        creds: CredsT,
        *,
        base: Mapping[str, Any] | None,
        is_new: bool,
    ) -> None:
        self._auth = auth
        self._base = base
        self._creds = creds
        self._attachments = ClientAttachments(binding, self.creds_updated, auth.barrier)
        self.binding = binding
        self.is_new = is_new
        self._setup(creds)

    def _setup(self, creds: CredsT) -> None:
        """Build what the client is handed besides :attr:`creds` and :attr:`keys`
        (an integration's subclass: pyaileys' ``state``, waton's ``storage``)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._auth!r} attached={len(self._attachments)}>"

    @property
    def session_id(self) -> str:
        """The session."""
        return self._auth.session_id

    @property
    def creds(self) -> CredsT:
        """The client's creds object, changed in place by the client."""
        return self._creds

    @creds.setter
    def creds(self, creds: CredsT) -> None:
        self._creds = creds

    @property
    def keys(self) -> AuthKeys:
        """The Signal key store: hand it to the client."""
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
        return self.binding.creds_to_document(self.creds, base=self._base)

    def _push(self) -> None:
        document = self.document()
        # The auth state keeps the last document reported; an unchanged one is not a change.
        if self._auth._saver.differs(document):
            self._auth.creds_updated(document)

    def creds_updated(self, creds: object = None, *args: object, **kwargs: object) -> None:
        """The creds-changed listener: non-blocking, never raises.

        :meth:`attach` subscribes it to the client's event; an integration
        whose client saves by a call routes that call here. Creds of the
        binding's ``creds_type`` other than :attr:`creds` become current;
        the current creds are converted and handed to the throttled save. An
        update that changes nothing is skipped, and one that moves the
        pre-key counters is saved at once.
        """
        try:
            if isinstance(creds, self.binding.creds_type) and creds is not self.creds:
                self.creds = creds
            self._push()
        except Exception as exc:
            logger.error(
                "a creds update of %s could not be converted: %s",
                self.session_id,
                describe_error(exc),
                extra={"session_id": self.session_id, "op": "creds_updated"},
            )

    # -- attach and detach ---------------------------------------------------------

    def attach(self, client: object) -> Callable[[], None]:
        """Save the creds on every change ``client`` reports, and make its
        outgoing frames wait for the write barrier; return the detach function.

        The barrier (:meth:`barrier`) wraps the client's send method (the
        binding's ``send_method``), on that instance only: a frame leaves
        once every key write made before it, and an urgent creds save owed
        or in flight (the pre-key counters), are stored. If that fails after
        the store's retries, the frame is not sent: the send raises the
        store's error, and the writes stay pending for the next frame.
        Frames keep their order. Attaching twice to the same client attaches
        once. A client that has not loaded its creds yet may be attached.

        Raises:
            InvalidTypeError: the binding does not attach to ``client``, or
                its sender lacks the send method.
            InvalidInputError: the client holds (or would load) other creds
                than :attr:`creds`: its updates would be saved under this session.
        """
        parts = self.binding.parts(client)
        if parts.creds is not None and parts.creds is not self.creds:
            raise InvalidInputError(
                f"this client holds other creds than session {self.session_id!r}; "
                f"{self.binding.build_hint}"
            )
        if not self._attachments.attach(parts) and self.keys.mode == "barrier":
            logger.warning(
                "%s is attached to a part of the %s client that sends no frames: no "
                "outgoing frame waits for its key writes; attach the client itself",
                self.session_id,
                self.binding.client_name,
                extra={"session_id": self.session_id, "op": "attach"},
            )
        anchor = parts.anchor
        return lambda: self._attachments.detach(anchor)

    def detach(self, client: object | None = None) -> None:
        """Stop saving on ``client``'s changes and restore its send method
        (default: every attached client)."""
        if client is None:
            self._attachments.detach_all()
        else:
            self._attachments.detach(self.binding.parts(client).anchor)

    # -- saving ----------------------------------------------------------------------

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
        creds changed without a report.

        Raises:
            LeaseLostError, StoreUnavailableError, StoreOperationError: as
                :meth:`AuthState.flush <wa_session_store.AuthState.flush>`.
        """
        self._push()
        await self._auth.flush()

    async def barrier(self) -> None:
        """Wait until what an outgoing frame may depend on is stored (what every
        frame of an attached client waits for).

        Raises:
            LeaseLostError, StoreUnavailableError, StoreOperationError: as
                :meth:`AuthState.barrier <wa_session_store.AuthState.barrier>`.
        """
        await self._auth.barrier()

    async def aclose(self, deadline: float = 10.0) -> None:
        """Detach from every client, store what is pending (keys and creds), and close.

        Args:
            deadline: seconds the final save may take (default 10.0).

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

    # -- loading -------------------------------------------------------------------

    @classmethod
    async def load(
        cls,
        store: AuthStateStore,
        session_id: str,
        binding: ClientBinding[CredsT],
        options: AuthStateOptions,
    ) -> Self:
        """:func:`use_client_auth_state`, building this class (an integration's subclass)."""
        loaded = await load_auth_state(store, session_id, _options_for(binding, options))
        try:
            if loaded.creds is None:
                result = cls(loaded, binding, binding.new_creds(), base=None, is_new=True)
                await result.save_creds()
            else:
                creds = binding.creds_from_document(loaded.creds)
                result = cls(loaded, binding, creds, base=loaded.creds, is_new=False)
        except BaseException:
            try:
                await loaded.aclose(deadline=1.0)
            except Exception as exc:
                logger.debug("closing %s after a failed load: %s", session_id, describe_error(exc))
            raise
        return result


def _options_for(binding: ClientBinding[Any], options: AuthStateOptions) -> SessionOptions:
    """The session options: ``options`` over the binding's defaults, checked before any I/O.

    The defaults are ``preload=True`` and ``key_writes="barrier"`` when the
    client has a send method, else ``"write-through"`` (and barrier mode is
    refused: no frame would wait for the barrier).
    """
    choke_point = binding.send_method is not None
    defaults = SessionOptions(
        key_writes="barrier" if choke_point else "write-through", preload=True
    )
    chosen = defaults.replace(**options)
    if chosen.key_writes == "barrier" and not choke_point:
        raise InvalidInputError(
            f"key_writes='barrier' needs a send method that every outgoing frame of the "
            f"{binding.client_name} client passes through, and its binding names none: "
            "use key_writes='write-through'"
        )
    return chosen


async def use_client_auth_state(
    store: AuthStateStore,
    session_id: str,
    binding: ClientBinding[CredsT],
    **options: Unpack[AuthStateOptions],
) -> ClientAuthState[CredsT]:
    """Load a session's auth state for the client of ``binding``, and keep it saved.

    A stored creds document becomes the client's creds
    (:meth:`ClientBinding.creds_from_document`). A new session gets
    :meth:`ClientBinding.new_creds`, saved before this returns: the QR code
    carries their keys, so a crash between showing it and the first update
    must not lose them.

    Args:
        store: an open store.
        session_id: the session (one WhatsApp account).
        binding: the client's :class:`ClientBinding`.
        **options: those of :func:`~wa_session_store.use_auth_state`, with
            two defaults of their own: ``preload=True``, and
            ``key_writes="barrier"`` when the binding names a send method
            (attach the client so that its frames wait for the barrier),
            else ``"write-through"``.

    Returns:
        The :class:`ClientAuthState`: build the client on ``auth.creds`` and
        ``auth.keys``, then ``auth.attach(client)``.

    Raises:
        InvalidInputError, InvalidTypeError: an invalid argument (checked
            before any I/O; ``key_writes="barrier"`` for a binding without a
            send method among them), or a stored document that is not this
            client's creds.
        StoreUnavailableError, StoreOperationError, DecodeError: loading, or
            saving new creds, failed.
    """
    if not isinstance(binding, ClientBinding):
        raise InvalidTypeError(f"binding must be a ClientBinding, not {type(binding).__name__}")
    return await ClientAuthState.load(store, session_id, binding, options)
