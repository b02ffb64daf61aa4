"""What :func:`~wa_session_store.copy_sessions` reports: each session's outcome,
the counts passed to ``progress``, and the report with its JSON and summary line.

Plain data, no I/O: the copy (:mod:`~wa_session_store.store.transfer`) fills
them in, and the command line prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CopyProgress", "CopyReport", "CopyStatus", "SessionCopy"]

CopyStatus = Literal["copied", "verified", "skipped", "conflict", "refused", "failed"]
"""What happened to one session:

- ``copied``: written to the target, read back and found identical;
- ``verified``: (``verify_only``) the target holds an identical copy;
- ``skipped``: the target already held an identical copy (nothing written);
- ``conflict``: the target holds a different session of that id (nothing
  written; pass ``overwrite`` to replace it);
- ``refused``: held by a live lease on the source (nothing written; ``force``
  copies it anyway) or on the target (nothing written, ``force`` or not); its
  ``error`` is ``"LeaseUnavailableError"``;
- ``failed``: an error, or the target's copy differs from the source.
"""


@dataclass(frozen=True, slots=True)
class SessionCopy:
    """The outcome for one session.

    Attributes:
        session_id: the session.
        status: see :data:`CopyStatus`.
        keys: how many keys the source holds for it.
        bytes: its stored size on the source (creds and keys, as encoded).
        detail: why it was not copied, or what differs; never a key or creds value.
        error: the name of the exception that failed it (e.g. ``"DecryptionError"``), or "".
    """

    session_id: str
    status: CopyStatus
    keys: int = 0
    bytes: int = 0
    detail: str = ""
    error: str = ""


@dataclass(slots=True)
class CopyProgress:
    """Counts so far, passed to ``progress`` after each session."""

    sessions_done: int = 0
    sessions_total: int = 0
    keys_done: int = 0
    keys_total: int = 0
    bytes_done: int = 0


@dataclass(slots=True)
class CopyReport:
    """What :func:`copy_sessions` did, session by session.

    Attributes:
        sessions: one :class:`SessionCopy` per session, in the order they were copied.
        seconds: how long the copy took.
        verify_only: whether nothing was written (``verify_only=True``).
    """

    sessions: list[SessionCopy] = field(default_factory=list)
    seconds: float = 0.0
    verify_only: bool = False

    def count(self, status: CopyStatus) -> int:
        """How many sessions ended with ``status``."""
        return sum(1 for s in self.sessions if s.status == status)

    @property
    def ok(self) -> bool:
        """True when every session is on the target as on the source.

        That is, none was refused, in conflict or failed.
        """
        return all(s.status in ("copied", "verified", "skipped") for s in self.sessions)

    @property
    def keys(self) -> int:
        """Keys written to the target (of sessions copied)."""
        return sum(s.keys for s in self.sessions if s.status == "copied")

    @property
    def bytes(self) -> int:
        """Bytes written to the target, as stored on the source (of sessions copied)."""
        return sum(s.bytes for s in self.sessions if s.status == "copied")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the counts, bytes, seconds and every session's outcome."""
        statuses: tuple[CopyStatus, ...] = (
            "copied",
            "verified",
            "skipped",
            "conflict",
            "refused",
            "failed",
        )
        return {
            "ok": self.ok,
            "verify_only": self.verify_only,
            **{status: self.count(status) for status in statuses},
            "keys": self.keys,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "sessions": [
                {
                    "session": s.session_id,
                    "status": s.status,
                    "keys": s.keys,
                    "bytes": s.bytes,
                    **({"detail": s.detail} if s.detail else {}),
                    **({"error": s.error} if s.error else {}),
                }
                for s in self.sessions
            ],
        }

    def summary(self) -> str:
        """One line: copied, skipped, refused, conflicts, failed, keys, bytes and time."""
        if self.verify_only:
            head = f"verified {self.count('verified'):,}"
        else:
            head = f"copied {self.count('copied'):,}, skipped {self.count('skipped'):,}"
        parts = [head]
        for label, count in (
            ("in conflict", self.count("conflict")),
            ("refused", self.count("refused")),
            ("failed", self.count("failed")),
        ):
            if count or label == "failed":
                parts.append(f"{label} {count:,}")
        total = len(self.sessions)
        return (
            f"{', '.join(parts)} of {total:,} session{'s' if total != 1 else ''}; "
            f"{self.keys:,} keys, {self.bytes:,} bytes in {self.seconds:.1f} s"
        )
