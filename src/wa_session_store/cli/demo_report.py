"""What one run of ``wa-session-store demo`` found: :class:`DemoReport`, its
figures, and the verdict lines printed from them.

:func:`~wa_session_store.cli.demo.run_demo` fills the report, partly from
what the restoring process found; no figure holds key bytes, creds content or
a DSN password.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DemoReport", "plural", "verdict_lines"]


@dataclass(frozen=True)
class DemoReport:
    """The figures of one :func:`~wa_session_store.cli.demo.run_demo` run.

    Attributes:
        url: the store URL, password redacted.
        session_id: the demo session (``"demo-bot"``).
        replaced_previous: a previous demo session was deleted first.
        prekeys_uploaded: pre-keys written in the single upload (812).
        upload_ms: milliseconds the upload took (one ``keys.set`` call).
        updates: ``creds_updated()`` calls made during the storm.
        creds_writes: creds saves the throttle made for them, the save on
            close included (``auth.throttler.runs``).
        key_writes: ``keys.set`` calls made during the storm.
        throttle: the throttle interval used, in seconds.
        storm_seconds: how long the storm took.
        pending_at_close: an update was still unsaved when the bot stopped.
        close_ms: milliseconds the graceful close took.
        restored_sessions: sessions the new process restored (the store may
            hold others than the demo's).
        failed_sessions: sessions the new process could not restore.
        open_ms: milliseconds the new process took to open the store.
        restore_ms: milliseconds ``restore_all`` took in the new process.
        session_found: the demo session was among the restored ones.
        creds_match: its creds equal the last creds the bot had.
        keys_expected: keys the bot had when it stopped.
        keys_ok: of those, keys found with their last value.
        keys_missing: of those, keys not found.
        keys_stale: of those, keys found with another value.
        consumed: pre-keys the bot deleted as consumed.
        consumed_gone: of those, pre-keys that are indeed gone.
        stored_keys: keys the store holds for the session (all categories).
    """

    url: str
    session_id: str
    replaced_previous: bool
    prekeys_uploaded: int
    upload_ms: float
    updates: int
    creds_writes: int
    key_writes: int
    throttle: float
    storm_seconds: float
    pending_at_close: bool
    close_ms: float
    restored_sessions: int
    failed_sessions: int
    open_ms: float
    restore_ms: float
    session_found: bool
    creds_match: bool
    keys_expected: int
    keys_ok: int
    keys_missing: int
    keys_stale: int
    consumed: int
    consumed_gone: int
    stored_keys: int

    @property
    def nothing_lost(self) -> bool:
        """The session came back as the bot left it: creds, keys, and no consumed pre-key."""
        return (
            self.session_found
            and self.creds_match
            and self.keys_ok == self.keys_expected
            and self.consumed_gone == self.consumed
            and self.stored_keys == self.keys_expected
        )


def verdict_lines(report: DemoReport) -> list[str]:
    """The report's last two lines: the redeploy, then "nothing lost" or what was lost."""
    sessions = plural(report.restored_sessions, "session")
    others = f" ({report.failed_sessions} could not be restored)" if report.failed_sessions else ""
    if report.session_found:
        redeploy = (
            f"redeploy: a new process restored {sessions} in {report.restore_ms:.1f} ms "
            f"without a QR code (store opened in {report.open_ms:.1f} ms){others}"
        )
    else:
        redeploy = (
            f"redeploy: a new process restored {sessions} in {report.restore_ms:.1f} ms, "
            f"but not {report.session_id}: it would need a new QR code{others}"
        )
    keys = f"{report.keys_ok:,}/{report.keys_expected:,} keys as last written"
    consumed = f"{report.consumed_gone:,}/{report.consumed:,} consumed pre-keys gone"
    if report.nothing_lost:
        return [redeploy, f"nothing lost: creds match the last update; {keys}; {consumed}"]
    problems = []
    if not report.creds_match:
        problems.append("creds differ from the last update")
    if report.keys_missing:
        problems.append(f"{report.keys_missing:,} keys missing")
    if report.keys_stale:
        problems.append(f"{report.keys_stale:,} keys with an older value")
    if report.consumed_gone != report.consumed:
        problems.append(f"{report.consumed - report.consumed_gone:,} consumed pre-keys came back")
    extra = report.stored_keys - report.keys_expected
    if report.consumed_gone == report.consumed and extra:
        problems.append(f"{report.stored_keys:,} keys stored, {report.keys_expected:,} expected")
    return [redeploy, f"LOST: {'; '.join(problems)} ({keys}; {consumed})"]


def plural(n: int, noun: str) -> str:
    """``n`` with ``noun``, in the plural unless ``n`` is 1 (``"1,000 creds updates"``)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
