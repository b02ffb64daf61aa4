"""What every offline client test needs, whatever the client: device jids to
fan out to, and a :class:`WireRecorder` standing in for WhatsApp's websocket.

``tests/fanout.py`` wires a pyaileys client to it, ``tests/waton_fanout.py`` a
waton one; workload 8 and its waton twin measure through them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WireRecorder", "device_jids"]


def device_jids(count: int, first: int = 0) -> list[str]:
    """``count`` device jids: 3 devices of each of ``count / 3`` users."""
    return [
        f"{5511900000000 + (first + i) // 3}:{(first + i) % 3 + 1}@s.whatsapp.net"
        for i in range(count)
    ]


class WireRecorder:
    """Stands in for the websocket: records every frame the client sends.

    With ``path``, each frame is appended to that file and fsynced before
    ``send`` returns, so a process killed right after a send leaves it on disk.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.frames: list[bytes] = []
        self.path = path

    async def send(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.path is not None:
            with self.path.open("ab") as out:
                out.write(frame + b"\n")
                out.flush()
                os.fsync(out.fileno())
