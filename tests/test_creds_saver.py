"""The creds-save pipeline (creds_saver.py) as an auth state uses it."""

from __future__ import annotations

import gc

from wa_session_store import MemoryStore, close_all, use_auth_state


async def test_a_forgotten_auth_state_with_a_save_owed_is_still_closed_and_saved() -> None:
    # The weak registries behind close_all() and the sync facade's exit hook
    # must still find an auth state nobody references while a save is owed.
    async with MemoryStore() as store:
        auth = await use_auth_state(store, "bot", throttle=60, backup_interval=None, urgent=None)
        await auth.save_creds({"n": 0})
        auth.creds_updated({"n": 1})  # held back by the throttle
        del auth
        gc.collect()
        assert await close_all() == {}
        assert await store.load_creds("bot") == {"n": 1}
