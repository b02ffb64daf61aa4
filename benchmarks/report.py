"""The outputs: a Markdown table, a JSON dump and a PNG chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import Row, Stat, fmt

__all__ = ["chart", "markdown", "write_json"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[Row], header: Sequence[str]) -> str:
    out = list(header)
    targeted = [r for r in rows if r.ok is not None]
    if targeted:
        out += [
            "",
            "## Targets",
            "",
            "| workload | setup | metric | measured | target | holds | notes |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in targeted:
            measured = fmt(r.ratio) if isinstance(r.ratio, Stat) else fmt(r.ours)
            if r.extra.get("kind") == "rtt":
                measured = fmt(r.baseline) + " (net of 0 ms time)"
            note = "" if r.extra.get("kind", "").startswith("rtt") else r.note
            out.append(
                f"| {_cell(r.workload)} | {_cell(r.setup)} | {_cell(r.metric)} | "
                f"{_cell(measured)} | {_cell(r.target)} | {r.verdict()} | {_cell(note)} |"
            )
    workloads: dict[str, list[Row]] = {}
    for r in rows:
        workloads.setdefault(r.workload, []).append(r)
    out += [
        "",
        "## All results",
        "",
        "Figures: median [min-max] over the repetitions; a ratio is computed per repetition"
        " from contenders run side by side, then summarised the same way.",
    ]
    for name, group in workloads.items():
        out += [
            "",
            f"### {name}",
            "",
            "| setup | metric | ours | baseline | ratio | target | holds | notes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in group:
            base = fmt(r.baseline)
            if r.baseline_name:
                base = f"{base} ({r.baseline_name})" if base else r.baseline_name
            out.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        r.setup,
                        r.metric,
                        fmt(r.ours),
                        base,
                        fmt(r.ratio),
                        r.target,
                        r.verdict(),
                        r.note,
                    )
                )
                + " |"
            )
    return "\n".join(out) + "\n"


def write_json(rows: Sequence[Row], meta: dict[str, Any], path: Path) -> None:
    path.write_text(
        json.dumps({"meta": meta, "rows": [r.to_json() for r in rows]}, indent=1, default=str)
    )


def _find(rows: Sequence[Row], kind: str, **match: Any) -> list[Row]:
    return [
        r
        for r in rows
        if r.extra.get("kind") == kind and all(r.extra.get(k) == v for k, v in match.items())
    ]


def _err(stat: Stat) -> tuple[float, float]:
    return stat.median - stat.min, stat.max - stat.median


def chart(rows: Sequence[Row], path: Path, title: str) -> str | None:
    """Draw the PNG; return None, or why it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: chart skipped (pip install -e '.[bench]')"

    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    fig.suptitle(title, fontsize=13)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728", "#8c564b"]

    def bars(ax: Any, groups: list[str], series: dict[str, list[Stat | None]]) -> None:
        width = 0.8 / max(1, len(series))
        for i, (label, stats) in enumerate(series.items()):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            meds = [s.median if s else 0.0 for s in stats]
            errs = [_err(s) if s else (0.0, 0.0) for s in stats]
            ax.bar(
                xs,
                meds,
                width,
                label=label,
                color=colors[i % len(colors)],
                yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                capsize=3,
            )
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    def stat_of(v: Stat | str) -> Stat | None:
        return v if isinstance(v, Stat) else None

    # 1. Pairing, ms, log scale.
    ax = axes[0][0]
    main = _find(rows, "pairing")
    nets = [r.extra["net_ms"] for r in main]
    if main:
        by_net = {
            k: {r.extra["net_ms"]: r for r in _find(rows, k)}
            for k in ("pairing_copy", "pairing_same", "pairing_loop")
        }
        series: dict[str, list[Stat | None]] = {
            "ours (set_keys)": [stat_of(r.ours) for r in main],
            "raw unnest": [stat_of(r.baseline) for r in main],
            "raw unnest + encoding": [
                stat_of(by_net["pairing_same"][n].baseline) if n in by_net["pairing_same"] else None
                for n in nets
            ],
            "raw COPY + INSERT": [
                stat_of(by_net["pairing_copy"][n].baseline) if n in by_net["pairing_copy"] else None
                for n in nets
            ],
            "per-key loop": [
                stat_of(by_net["pairing_loop"][n].baseline) if n in by_net["pairing_loop"] else None
                for n in nets
            ],
        }
        bars(ax, [f"{n:g} ms" for n in nets], series)
        ax.set_yscale("log")
    ax.set_title("1. First pairing: 812 pre-keys, PostgreSQL (ms, log)")
    ax.set_xlabel("one-way delay through the proxy")

    # 2. Fan-out, ms.
    ax = axes[0][1]
    fan = _find(rows, "fanout")
    same = {r.extra["net_ms"]: r for r in _find(rows, "fanout_same")}
    if fan:
        nets = [r.extra["net_ms"] for r in fan]
        bars(
            ax,
            [f"{n:g} ms" for n in nets],
            {
                "ours (get_keys)": [stat_of(r.ours) for r in fan],
                "raw = ANY (bytes)": [stat_of(r.baseline) for r in fan],
                "raw = ANY + decoding": [
                    stat_of(same[n].baseline) if n in same else None for n in nets
                ],
            },
        )
    ax.set_title("3. Group fan-out: get_keys of 500 sessions (ms)")
    ax.set_xlabel("one-way delay through the proxy")

    # 3. Ratios against the <= 1.3x targets, and the same-work ratios.
    ax = axes[0][2]
    labels: list[str] = []
    stats: list[Stat] = []
    same_stats: list[Stat | None] = []
    pair_same = {r.extra["net_ms"]: r for r in _find(rows, "pairing_same")}
    for kind, rs, same_by in (("pairing", main, pair_same), ("fan-out", fan, same)):
        for r in rs:
            if isinstance(r.ratio, Stat):
                n = r.extra["net_ms"]
                labels.append(f"{kind}\n{n:g} ms")
                stats.append(r.ratio)
                other = same_by.get(n)
                same_stats.append(stat_of(other.ratio) if other else None)
    if stats:
        xs = range(len(stats))
        meds = [s.median for s in stats]
        ax.bar(
            [x - 0.2 for x in xs],
            meds,
            0.4,
            color="#7f7f7f",
            yerr=[[_err(s)[0] for s in stats], [_err(s)[1] for s in stats]],
            capsize=3,
            label="vs raw driver, codec excluded (reported)",
        )
        same_meds = [s.median if s else 0 for s in same_stats]
        ax.bar(
            [x + 0.2 for x in xs],
            same_meds,
            0.4,
            color=["#2ca02c" if m <= 1.3 else "#d62728" for m in same_meds],
            yerr=[
                [_err(s)[0] if s else 0 for s in same_stats],
                [_err(s)[1] if s else 0 for s in same_stats],
            ],
            capsize=3,
            label="vs raw driver + the same codec (target)",
        )
        ax.axhline(1.3, color="black", linestyle="--", linewidth=1, label="target 1.3x")
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=8)
        top = max([s.max for s in stats] + [s.max for s in same_stats if s])
        ax.set_ylim(0, top * 1.35)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("Ours / raw (bars: median, whiskers: min-max)")

    # 4. Traffic throughput.
    ax = axes[1][0]
    traffic = _find(rows, "traffic_ops")
    groups: list[str] = []
    ours_s: list[Stat | None] = []
    raw_s: list[Stat | None] = []
    codec_s: list[Stat | None] = []
    nets_seen = sorted({r.extra["net_ms"] for r in traffic if r.extra.get("net_ms") is not None})
    for n in nets_seen:
        by_base = {r.extra.get("baseline"): r for r in traffic if r.extra.get("net_ms") == n}
        if "raw" in by_base:
            groups.append(f"PG {n:g} ms")
            ours_s.append(stat_of(by_base["raw"].ours))
            raw_s.append(stat_of(by_base["raw"].baseline))
            codec_s.append(stat_of(by_base["codec"].baseline) if "codec" in by_base else None)
    sq = {r.extra.get("baseline"): r for r in traffic if r.setup.startswith("SQLite")}
    if "thread" in sq:
        groups.append("SQLite")
        ours_s.append(stat_of(sq["thread"].ours))
        raw_s.append(stat_of(sq["thread"].baseline))
        codec_s.append(stat_of(sq["codec"].baseline) if "codec" in sq else None)
    if groups:
        bars(
            ax,
            groups,
            {"ours": ours_s, "raw driver, pre-encoded": raw_s, "raw driver + codec": codec_s},
        )
    ax.set_title("2/7. Traffic: 100 sessions, small set/get (ops/s)")

    # 5. Round trips per call.
    ax = axes[1][1]
    rtt = _find(rows, "rtt")
    if rtt:
        names = [r.metric for r in rtt]
        naive = [stat_of(r.ours) for r in rtt]
        net_only = [stat_of(r.baseline) for r in rtt]
        ys = range(len(names))
        ax.barh(
            [y + 0.2 for y in ys],
            [s.median if s else 0 for s in naive],
            0.4,
            label="elapsed / (2 x 5 ms)",
            color=colors[0],
        )
        ax.barh(
            [y - 0.2 for y in ys],
            [s.median if s else 0 for s in net_only],
            0.4,
            label="(t at 5 ms - t at 0 ms) / 10 ms",
            color=colors[2],
        )
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_yticks(list(ys))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
    ax.set_title("2. Round trips per call at 5 ms one-way")

    # 6. Restore.
    ax = axes[1][2]
    restore = _find(rows, "restore")
    for i, n in enumerate(sorted({r.extra["net_ms"] for r in restore})):
        rs = sorted((r for r in restore if r.extra["net_ms"] == n), key=lambda r: r.extra["size"])
        sizes = [r.extra["size"] for r in rs]
        ax.plot(
            sizes,
            [r.ours.median if isinstance(r.ours, Stat) else 0 for r in rs],
            marker="o",
            color=colors[i],
            label=f"restore_all, {n:g} ms",
        )
        ax.plot(
            sizes,
            [r.baseline.median / 1000 if isinstance(r.baseline, Stat) else 0 for r in rs],
            marker="s",
            linestyle="--",
            color=colors[i],
            label=f"one raw SELECT of all creds + decoding, {n:g} ms",
        )
    if restore:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    ax.set_xlabel("sessions (creds + 50 keys each)")
    ax.set_title("5. Restore after deploy (seconds, log-log)")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
