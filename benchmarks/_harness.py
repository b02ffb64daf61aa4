"""Timing, statistics and result rows shared by every workload."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Row",
    "Stat",
    "interleaved",
    "percentile",
    "ratios",
]


@dataclass
class Stat:
    """Repeated measurements of one quantity: shown as median [min-max] unit."""

    values: list[float]
    unit: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def n(self) -> int:
        return len(self.values)

    def scaled(self, factor: float, unit: str) -> Stat:
        return Stat([v * factor for v in self.values], unit)

    def fmt(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.n == 1:
            return f"{_num(self.median)}{unit} (n=1)"
        return f"{_num(self.median)}{unit} [{_num(self.min)}-{_num(self.max)}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "n": self.n,
            "unit": self.unit,
            "values": self.values,
        }


def _num(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratios(a: Sequence[float], b: Sequence[float], unit: str = "x") -> Stat:
    """Per-repetition ratios ``a[i] / b[i]`` (the pairs were measured side by side)."""
    return Stat([x / y for x, y in zip(a, b, strict=True)], unit)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def interleaved(
    contenders: dict[str, Callable[[int], Awaitable[float]]],
    reps: int,
    *,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Run each contender ``reps`` times, alternating them, and collect their seconds.

    Each contender is called with the repetition number (negative while
    warming up) and returns the seconds it measured itself, so that set-up
    (a fresh session id, say) stays out of the figure. The order rotates
    every repetition, so a burst of noise from the shared machine does not
    always hit the same contender, and repetition ``i`` of every contender is
    measured close in time: their ratio is a same-run comparison.
    """
    names = list(contenders)
    for w in range(warmup):
        for name in names:
            await contenders[name](-1 - w)
    out: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            out[name].append(await contenders[name](rep))
    return out


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    __slots__ = ("_start", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@dataclass
class Row:
    """One line of the results table."""

    workload: str
    setup: str
    metric: str
    ours: Stat | str
    baseline: Stat | str = ""
    baseline_name: str = ""
    ratio: Stat | str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        if self.ok is None:
            return ""
        return "yes" if self.ok else "**NO**"

    def to_json(self) -> dict[str, Any]:
        def conv(v: Stat | str) -> Any:
            return v.to_json() if isinstance(v, Stat) else v

        return {
            "workload": self.workload,
            "setup": self.setup,
            "metric": self.metric,
            "ours": conv(self.ours),
            "baseline": conv(self.baseline),
            "baseline_name": self.baseline_name,
            "ratio": conv(self.ratio),
            "target": self.target,
            "ok": self.ok,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: Stat | str) -> str:
    return value.fmt() if isinstance(value, Stat) else value
