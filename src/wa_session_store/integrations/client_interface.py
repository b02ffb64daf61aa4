"""What a WhatsApp client must offer: :class:`ClientBinding`, subclassed once
per client, and :class:`ClientParts`, what the binding finds on one client.

Declarations only, importable from
:mod:`wa_session_store.integrations.client_binding`, the public path, which
explains the binding's three parts and holds what every client shares
(:class:`~wa_session_store.integrations.client_binding.ClientAuthState`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["ClientBinding", "ClientParts"]

CredsT = TypeVar("CredsT")


@dataclass(frozen=True, slots=True)
class ClientParts:
    """What :meth:`ClientAuthState.attach
    <wa_session_store.integrations.client_binding.ClientAuthState.attach>` needs
    of one client, as :meth:`ClientBinding.parts` finds it.

    Attributes:
        anchor: what identifies the client: one attachment per anchor (its
            event emitter, or the client itself). :meth:`ClientBinding.subscribe`
            is called with it.
        creds: the creds object the client holds, or the one it will load;
            None when it has none yet (nothing to check). Any other object
            than the auth state's creds is refused.
        sender: the object whose :attr:`ClientBinding.send_method` every
            outgoing frame passes through; None when this part of the client
            offers none (its creds are saved, but no frame waits for the keys).
    """

    anchor: object
    creds: object | None = None
    sender: object | None = None


class ClientBinding(ABC, Generic[CredsT]):
    """The small interface a client must offer: subclass it, once per client.

    Class attributes:
        client_name: the client's name, for messages (``"pyaileys"``).
        creds_type: the class of the client's creds object; a creds update
            carrying another instance of it replaces the current creds.
        send_method: the name of the awaitable method, on
            :attr:`ClientParts.sender`, that every outgoing frame passes
            through; None (the default) when the client has none. Then keys
            are written through, and ``key_writes="barrier"`` is refused.
        build_hint: how to build a client on the auth state, ending the
            message that refuses a client on other creds.
    """

    client_name: ClassVar[str] = "client"
    creds_type: ClassVar[type[Any]] = object
    send_method: ClassVar[str | None] = None
    build_hint: ClassVar[str] = "build the client on auth.creds"

    # -- 1. the creds converter ------------------------------------------------

    @abstractmethod
    def new_creds(self) -> CredsT:
        """Fresh creds for a new session, as the client makes them before pairing."""

    @abstractmethod
    def creds_to_document(
        self, creds: CredsT, *, base: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The document to store for ``creds``: JSON-able, bytes allowed, a snapshot.

        ``base`` is the document the creds were loaded from (None for new
        creds): carry over its fields the converter does not know, so that
        nothing another client stored is dropped.

        Raises:
            InvalidTypeError: ``creds`` holds a value of a type it cannot hold.
        """

    @abstractmethod
    def creds_from_document(self, doc: Mapping[str, Any]) -> CredsT:
        """The client's creds for the stored document ``doc``.

        Raises:
            InvalidInputError, InvalidTypeError: not this client's creds (the
                message names the field, never a value).
        """

    # -- 2. learning that creds changed ------------------------------------------

    def subscribe(self, anchor: object, listener: Callable[..., None]) -> None:
        """Register ``listener`` for the client's creds-changed event on ``anchor``.

        The default does nothing: for a client that saves its creds by a
        call, which the integration routes to :meth:`ClientAuthState.creds_updated
        <wa_session_store.integrations.client_binding.ClientAuthState.creds_updated>`.
        """

    def unsubscribe(self, anchor: object, listener: Callable[..., None]) -> None:
        """Undo :meth:`subscribe` (the default does nothing)."""

    # -- 3. the send method -----------------------------------------------------

    @abstractmethod
    def parts(self, client: object) -> ClientParts:
        """Find ``client``'s anchor, creds and sender (see :class:`ClientParts`).

        Raises:
            InvalidTypeError: ``client`` is not something this binding attaches to.
        """
