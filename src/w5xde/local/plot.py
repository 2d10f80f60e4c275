"""`w5xde local --plot run.png`: a picture of a run from the workers' per-interval lines.

Each worker prints a report line every `--report-interval` with its cumulative
totals and elapsed time; the differences between consecutive lines are that
interval's figures. Three panels share the time axis: raw throughput per worker
and for the cluster (the workers' rates summed on a common grid), the cluster's
compression ratio per interval, and lost batches (cumulative, must stay 0).
matplotlib is imported lazily with the headless Agg backend (`pip install
'w5xde[plot]'`), so a plain `w5xde local` never needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from w5xde.contract.report import ReportLine

#: Size of the PNG: 12 x 8 inches at 100 dpi.
FIGURE_INCHES = (12.0, 8.0)
DPI = 100


@dataclass(frozen=True)
class Interval:
    """One worker's figures between two consecutive report lines."""

    start_seconds: float
    end_seconds: float
    raw_bytes_per_s: float
    raw_bytes: int
    wire_bytes: int
    lost_batches_total: int


#: Lines closer together than this are merged into one interval: a rate over a few
#: milliseconds (the final line, printed right after the last periodic one) is noise.
MIN_INTERVAL_S = 0.2


def _interval(start: ReportLine, end: ReportLine) -> Interval:
    seconds = end.elapsed_seconds - start.elapsed_seconds
    raw = max(0, end.report.raw_bytes - start.report.raw_bytes)
    wire = max(0, end.report.wire_bytes - start.report.wire_bytes)
    return Interval(
        start.elapsed_seconds,
        end.elapsed_seconds,
        raw / seconds,
        raw,
        wire,
        end.report.lost_batches,
    )


def intervals(lines: Sequence[ReportLine]) -> list[Interval]:
    """Per-interval figures from one worker's cumulative lines (in the order printed)."""
    out: list[Interval] = []
    starts: list[ReportLine] = []
    base: ReportLine | None = None
    for line in lines:
        if base is None:
            base = line
        elif line.elapsed_seconds - base.elapsed_seconds >= MIN_INTERVAL_S:
            out.append(_interval(base, line))
            starts.append(base)
            base = line
    if out and base is not None and lines[-1].elapsed_seconds > base.elapsed_seconds:
        # A short tail (the final line): widen the last interval to take it in.
        out[-1] = _interval(starts[-1], lines[-1])
    return out


def plot_run(samples: Mapping[str, Sequence[ReportLine]], path: Path, title: str) -> None:
    """Draw the run into a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    per_worker = {name: intervals(lines) for name, lines in sorted(samples.items())}
    per_worker = {name: series for name, series in per_worker.items() if series}
    if not per_worker:
        raise ValueError("no worker printed two report lines: nothing to plot")
    end = max(series[-1].end_seconds for series in per_worker.values())
    grid = np.linspace(0.0, end, max(2, int(end * 4)))

    figure, (throughput, ratio, lost) = plt.subplots(
        3, 1, sharex=True, figsize=FIGURE_INCHES, dpi=DPI, height_ratios=(3, 1.5, 1.5)
    )
    cluster = np.zeros_like(grid)
    raw_on_grid = np.zeros_like(grid)
    wire_on_grid = np.zeros_like(grid)
    lost_on_grid = np.zeros_like(grid)
    for name, series in per_worker.items():
        times = np.array([item.end_seconds for item in series])
        rates = np.array([item.raw_bytes_per_s for item in series]) / 1e6
        throughput.plot(times, rates, linewidth=1, alpha=0.7, label=name)
        # Step interpolation: each interval's rate holds until its end.
        index = np.clip(np.searchsorted(times, grid), 0, len(series) - 1)
        inside = (grid > series[0].start_seconds) & (grid <= times[-1])
        cluster += np.where(inside, rates[index], 0.0)
        raw_on_grid += np.where(inside, [series[i].raw_bytes for i in index], 0.0)
        wire_on_grid += np.where(inside, [series[i].wire_bytes for i in index], 0.0)
        lost_on_grid += np.where(
            grid > series[0].start_seconds, [series[i].lost_batches_total for i in index], 0.0
        )
    throughput.plot(grid, cluster, color="black", linewidth=2, label="cluster")
    throughput.set_ylabel("raw MB/s")
    throughput.set_title(title)
    throughput.grid(alpha=0.3)
    throughput.legend(loc="upper left", ncol=min(6, len(per_worker) + 1), fontsize="small")

    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(wire_on_grid > 0, raw_on_grid / wire_on_grid, np.nan)
    ratio.plot(grid, ratios, color="tab:green")
    ratio.set_ylabel("compression ratio")
    ratio.grid(alpha=0.3)

    lost.step(grid, lost_on_grid, where="post", color="tab:red")
    lost.set_ylabel("lost batches")
    lost.set_xlabel("seconds since start")
    lost.set_ylim(bottom=0, top=max(1.0, float(lost_on_grid.max()) * 1.2))
    lost.grid(alpha=0.3)

    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
