"""The benchmark's figures as PNG (matplotlib, Agg backend: no display needed).

- pareto.png: accuracy against mean latency per problem, one marker per system, colour by
  family, with the Pareto frontier (no other system is both faster and more accurate).
- latency_split.png: where each system's time per problem goes (edge compute, network, cloud
  queue, cloud compute, the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt  # noqa: E402

from bench.e2e.report import SystemSummary  # noqa: E402
from bench.e2e.systems import FAMILIES  # noqa: E402

_MARKERS = dict(zip(FAMILIES, "s^vo*DPXh", strict=True))
_COLOURS = {family: f"C{index}" for index, family in enumerate(FAMILIES)}  # the default colour cycle
_SPLIT = (
    ("edge_compute_s", "edge compute"), ("network_s", "network"), ("cloud_queue_s", "cloud queue"),
    ("cloud_compute_s_per_problem", "cloud compute"),
    ("close_s", "closing the cloud context\n(a round trip if blocking)"),
    ("other_s", "other: tokenizing, syncing,\nPython between calls"),
)


def pareto_front(summaries: Sequence[SystemSummary]) -> list[SystemSummary]:
    """Systems no other system beats on both latency (lower) and accuracy (higher), by latency."""
    front = [
        s for s in summaries
        if not any(o.latency_mean_s <= s.latency_mean_s and o.accuracy >= s.accuracy
                   and (o.latency_mean_s, o.accuracy) != (s.latency_mean_s, s.accuracy) for o in summaries)
    ]
    return sorted(front, key=lambda s: s.latency_mean_s)


def plot_pareto(summaries: Sequence[SystemSummary], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(11, 6))
    for family in FAMILIES:
        rows = [s for s in summaries if s.family == family]
        if rows:
            ax.scatter([1e3 * s.latency_mean_s for s in rows], [100 * s.accuracy for s in rows],
                       marker=_MARKERS[family], color=_COLOURS[family], s=60, label=family, zorder=3)
    for s in summaries:
        ax.annotate(s.name, (1e3 * s.latency_mean_s, 100 * s.accuracy), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    front = pareto_front(summaries)
    ax.plot([1e3 * s.latency_mean_s for s in front], [100 * s.accuracy for s in front], color="grey",
            linestyle="--", linewidth=1, label="Pareto frontier", zorder=2)
    ax.set_xlabel("mean latency per problem (ms, problems one at a time)")
    ax.set_ylabel("accuracy (% exact answers)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_latency_split(summaries: Sequence[SystemSummary], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(summaries) + 1.8))
    names = [s.name for s in summaries]
    left = [0.0] * len(summaries)
    for attribute, label in _SPLIT:
        values = [1e3 * getattr(s, attribute) for s in summaries]
        ax.barh(names, values, left=left, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()  # first system on top, as in the table
    ax.set_xlabel("mean time per problem (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
