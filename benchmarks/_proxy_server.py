"""Runs ``tests.proxy.Proxy`` in a process of its own, driven over stdin.

The proxy forwards bytes from a Python thread; inside the benchmark's own
process that thread would wait for the GIL (up to the 5 ms switch interval)
whenever the benchmark is busy encoding, adding latency that no real network
has. In a separate process it only competes for a CPU core, like a real
network hop would not either, but much less.

Protocol: prints the listening port on the first line, then answers each
``delay SECONDS`` line with ``ok`` and each ``count`` line with ``ok N``, N the
round trips forwarded so far (see ``Proxy.round_trips``); ``stop`` (or EOF)
stops it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.proxy import Proxy  # noqa: E402


def main(argv: list[str]) -> int:
    host, port = argv[0], int(argv[1])
    proxy = Proxy(host, port)
    proxy.start()
    try:
        print(proxy.port, flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "delay":
                proxy.delay(float(arg))
                print("ok", flush=True)
            elif command == "count":
                print(f"ok {proxy.round_trips}", flush=True)
            elif command == "stop":
                break
            else:
                print(f"error unknown command {command!r}", flush=True)
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
