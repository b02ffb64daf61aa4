"""The hooks a client auth state puts on the clients it is attached to.

:meth:`ClientAuthState.attach
<wa_session_store.integrations.client_binding.ClientAuthState.attach>`
decides whether a client may be attached; :class:`ClientAttachments` does the
attaching. One attachment per anchor (see
:class:`~wa_session_store.integrations.client_interface.ClientParts`): the
creds listener, subscribed through the binding, and the sender's send method,
wrapped on that instance so that every frame waits for the write barrier
first, frames in order. Detaching undoes both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..errors import InvalidTypeError
from .client_interface import ClientBinding, ClientParts

__all__ = ["ClientAttachments"]

_MISSING: Final[Any] = object()


class ClientAttachments:
    """The clients one auth state is attached to (``len()`` counts them).

    Args:
        binding: the clients' binding: how to subscribe, and the name of the
            send method to wrap.
        listener: what the binding subscribes on each anchor.
        barrier: what every frame of an attached sender awaits before it leaves.
    """

    __slots__ = ("_attached", "_barrier", "_binding", "_listener")

    def __init__(
        self,
        binding: ClientBinding[Any],
        listener: Callable[..., None],
        barrier: Callable[[], Awaitable[None]],
    ) -> None:
        self._binding = binding
        self._listener = listener
        self._barrier = barrier
        self._attached: list[_Attachment] = []

    def __len__(self) -> int:
        return len(self._attached)

    def attach(self, parts: ClientParts) -> bool:
        """Subscribe the listener on ``parts.anchor`` and put the barrier on its
        sender's send method, each once however often the client is attached.

        Returns:
            Whether the client's frames wait for the barrier: False when
            ``parts`` has no sender or the binding names no send method.

        Raises:
            InvalidTypeError: the sender lacks the send method (the listener
                stays subscribed: detach the anchor to undo it).
        """
        attachment = self._find(parts.anchor)
        if attachment is None:
            self._binding.subscribe(parts.anchor, self._listener)
            attachment = _Attachment(parts.anchor)
            self._attached.append(attachment)
        send_method = self._binding.send_method
        if parts.sender is None or send_method is None:
            return False
        if attachment.sender is None:
            attachment.wrap(parts.sender, send_method, self._barrier)
        return True

    def detach(self, anchor: object) -> None:
        """Undo :meth:`attach` for ``anchor``: the send method back, the listener
        unsubscribed. Nothing happens for an anchor that is not attached."""
        attachment = self._find(anchor)
        if attachment is None:
            return
        self._attached.remove(attachment)
        attachment.unwrap()
        self._binding.unsubscribe(anchor, self._listener)

    def detach_all(self) -> None:
        """:meth:`detach` every attached anchor."""
        for attachment in list(self._attached):
            self.detach(attachment.anchor)

    def _find(self, anchor: object) -> _Attachment | None:
        return next((a for a in self._attached if a.anchor is anchor), None)


class _Attachment:
    """One attached client: its anchor, and the send method wrapped on its sender."""

    __slots__ = ("anchor", "name", "previous", "sender", "wrapper")

    def __init__(self, anchor: object) -> None:
        self.anchor = anchor
        self.sender: object | None = None
        self.name = ""
        self.previous: object = _MISSING
        self.wrapper: object = None

    def wrap(self, sender: object, name: str, barrier: Callable[[], Awaitable[None]]) -> None:
        """Make ``sender.<name>`` wait for ``barrier`` first, frames in order."""
        send = getattr(sender, name, None)
        if not callable(send):
            raise InvalidTypeError(
                f"{type(sender).__name__} has no send method {name!r} to put the barrier on"
            )
        # Held across the barrier, so frames leave in the order they were sent.
        order = asyncio.Lock()

        async def through_barrier(*args: Any, **kwargs: Any) -> Any:
            async with order:
                await barrier()
                return await send(*args, **kwargs)

        self.previous = vars(sender).get(name, _MISSING)
        # The client calls self.<name>, so the instance attribute is what every frame meets.
        setattr(sender, name, through_barrier)
        self.sender, self.name, self.wrapper = sender, name, through_barrier

    def unwrap(self) -> None:
        """Put the send method back, unless someone wrapped it again since."""
        if self.sender is None or vars(self.sender).get(self.name) is not self.wrapper:
            return
        if self.previous is _MISSING:
            delattr(self.sender, self.name)
        else:
            setattr(self.sender, self.name, self.previous)
