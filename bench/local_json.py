"""Read `w5xde local --json` from this tree or from a baseline ref alike.

A baseline from before the results schema (docs/results.md) printed flat snake_case
keys; this tree prints a `RunResult`.  The bench scripts read the few figures they
compare through `flat`, in the old names, so old and new rows line up.
"""

from __future__ import annotations

from typing import Any

#: Old flat key -> path in a RunResult.
_PATHS = {
    "duration_s": ("figures", "seconds"),
    "throughput_bytes_per_s": ("figures", "throughputBytesPerSecond"),
    "wire_bytes_per_s": ("figures", "wireBytesPerSecond"),
    "batches": ("figures", "batches"),
    "batches_per_s": ("figures", "batchesPerSecond"),
    "compression_ratio": ("figures", "compressionRatio"),
    "network_seconds_per_worker": ("figures", "networkSecondsPerWorker"),
    "compression_seconds_per_worker": ("figures", "compressionSecondsPerWorker"),
    "rss_bytes_max": ("figures", "rssMaxBytes"),
    "lost_batches": ("figures", "lostBatches"),
    "corrupt_batches": ("figures", "corruptBatches"),
    "resent_batches": ("figures", "resentBatches"),
    "cpu_seconds_per_gb": ("figures", "cpu", "cpuSecondsPerGb"),
}


def flat(data: dict[str, Any]) -> dict[str, Any]:
    """The figures under their old flat names (a pre-schema result passes through)."""
    if "schemaVersion" not in data:
        return data
    out: dict[str, Any] = {}
    for key, path in _PATHS.items():
        value: Any = data
        for part in path:
            value = value.get(part, {}) if isinstance(value, dict) else {}
        out[key] = value if not isinstance(value, dict) else 0
    out["nodes"] = data.get("workers", [])
    return out
