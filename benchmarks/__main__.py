"""``python -m benchmarks``: run the suite (see README.md)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
