"""`w5xde local --plot`: a real run drawn into a PNG that shows the run.

The run is short (2 workers, 3 s) but real: the workers' own report lines are
what gets drawn.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from w5xde.contract.report import ReportLine, WorkerReport
from w5xde.local import plot


def line(elapsed: float, raw: int, wire: int, lost: int = 0) -> ReportLine:
    report = WorkerReport(raw_bytes=raw, wire_bytes=wire, lost_batches=lost)
    return ReportLine(name="w-0", elapsed_seconds=elapsed, report=report)


def test_intervals_are_differences_of_cumulative_lines() -> None:
    lines = [
        line(0.5, 1000, 500),
        line(1.0, 3000, 1500),
        line(1.0, 3000, 1500),
        line(2.0, 3000, 1500, 1),
    ]
    got = plot.intervals(lines)
    # The repeated line (no time passed) adds no interval; a still interval has rate 0.
    assert [(i.end_seconds, i.raw_bytes_per_s, i.raw_bytes, i.wire_bytes) for i in got] == [
        (1.0, 4000.0, 2000, 1000),
        (2.0, 0.0, 0, 0),
    ]
    assert got[-1].lost_batches_total == 1


def test_local_plot_draws_the_run(tmp_path: Path) -> None:
    picture = tmp_path / "run.png"
    result = subprocess.run(
        [sys.executable, "-m", "w5xde", "local", "--workers", "2", "--duration", "3",
         "--plot", str(picture)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    image = Image.open(picture)
    assert image.format == "PNG"
    assert image.size == (
        int(plot.FIGURE_INCHES[0] * plot.DPI),
        int(plot.FIGURE_INCHES[1] * plot.DPI),
    )
    pixels = np.asarray(image.convert("RGB")).astype(int)
    # Not blank: a good share of pixels differ from the white background ...
    assert (pixels.sum(axis=2) < 700).mean() > 0.02
    # ... and the cluster's throughput line (black) and the worker lines (colours) are drawn.
    black = (pixels.max(axis=2) < 40).sum()
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 80).sum()
    assert black > 500, black
    assert coloured > 500, coloured


def test_plot_without_samples_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        plot.plot_run({"w-0": [line(0.5, 1, 1)]}, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()
