"""Ready-made glue between wa_session_store and WhatsApp client libraries.

Each integration lives in its own module and imports its client library only
when that module is imported, so installing wa_session_store never pulls in a
client:

- :mod:`wa_session_store.integrations.pyaileys`: `pyaileys
  <https://pypi.org/project/pyaileys/>`_ (``pip install 'wa-session-store[pyaileys]'``,
  Python >= 3.11).
"""

from __future__ import annotations

__all__: list[str] = []
