"""Ready-made glue between wa_session_store and WhatsApp client libraries.

Each integration lives in its own module and imports its client library only
when that module is imported, so installing wa_session_store never pulls in a
client:

- :mod:`wa_session_store.integrations.pyaileys`: `pyaileys
  <https://pypi.org/project/pyaileys/>`_ (``pip install 'wa-session-store[pyaileys]'``,
  Python >= 3.11).
- :mod:`wa_session_store.integrations.waton`: `waton
  <https://pypi.org/project/waton/>`_ (``pip install 'wa-session-store[waton]'``,
  Python >= 3.11).

Both sit on :mod:`wa_session_store.integrations.client_binding`, the small
interface a client must offer (a creds converter, a way to learn that creds
changed, the send method every frame passes through); a client without an
integration gets the same guarantees by subclassing its ``ClientBinding``.
"""

from __future__ import annotations

__all__: list[str] = []
