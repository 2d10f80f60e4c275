"""`make bench BENCH_BASELINE=<ref>`: a verdict per figure, a change called only
outside both 95 % intervals."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_worker
    finally:
        sys.path.remove(str(BENCH))
    return bench_worker


def _rows(module: ModuleType, **figures: list[float]) -> list[Any]:
    count = len(next(iter(figures.values())))
    return [
        module.Row(
            name="r", kind="w5xde", batch_bytes=65536, level=1, log_mode="silent",
            socket_buffer=0, raw_mb_s=figures.get("raw", [0.0] * count)[index],
            wire_mb_s=0.0, batches_per_s=figures.get("batches", [0.0] * count)[index],
            ratio=1.9, network_s_per_worker=0.0, compression_s_per_worker=0.0,
            rss_mb_max=figures.get("rss", [0.0] * count)[index], lost=0, corrupt=0, resent=0,
        )
        for index in range(count)
    ]  # fmt: skip


def test_verdict_per_figure() -> None:
    module = _bench()
    new = {
        "pair": _rows(module, raw=[300.0, 305.0, 298.0], rss=[80.0, 81.0, 80.5]),
        "small": _rows(module, batches=[40_000.0, 41_000.0, 39_000.0]),
    }
    old = {
        "pair": _rows(module, raw=[400.0, 405.0, 398.0], rss=[60.0, 61.0, 60.5]),
        "small": _rows(module, batches=[39_000.0, 42_000.0, 40_500.0]),
    }
    verdicts = {item["figure"]: item["verdict"] for item in module.verdicts(new, old)}
    assert verdicts == {
        "pair L1 64 KiB raw MB/s": "worse",
        "3.6 KB L3 batches/s": "no clear difference",
        "pair RSS MB per worker": "worse",  # more memory is worse
    }
    swapped = {item["figure"]: item["verdict"] for item in module.verdicts(old, new)}
    assert swapped["pair L1 64 KiB raw MB/s"] == "better"
    assert swapped["pair RSS MB per worker"] == "better"
    assert "-> worse" in module.format_verdicts(module.verdicts(new, old), "main")
