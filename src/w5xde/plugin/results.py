"""`kubectl w5xde results -o json --check`, `compare --fail-if-slower` and
`status --watch -o json`: a cluster's runs through the one results schema
(`contract.results`, docs/results.md).

Pure: each function takes the CompressionCluster object the API server returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    CompressionClusterSpec,
    CompressionClusterStatus,
    Interval,
    RunSummary,
    SampleSetStatus,
)
from w5xde.contract import results
from w5xde.contract.results import FigureSummary, RunResult, SampleSet, Versions

#: Exit code of a gate that failed: a missed expectation, a run that did not pass, a
#: comparison slower beyond both intervals (1 is an error, 2 bad usage).
EXIT_GATE = 3


def effective_spec(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The cluster's spec after defaulting (what the workers ran with), or as stored
    when it no longer validates."""
    raw = cluster.get("spec") or {}
    try:
        spec = CompressionClusterSpec.model_validate(raw)
    except (ValidationError, ValueError):
        return dict(raw) if isinstance(raw, Mapping) else {}
    return spec.model_dump(mode="json", by_alias=True)


def _worker_versions(cluster: Mapping[str, Any], summary: RunSummary) -> Versions:
    """What the run's workers reported they ran; for a run kept before workers reported
    it, the worker image's tag as w5xde (the workers are gone when the run is read)."""
    if summary.versions is not None:
        return Versions.model_validate(summary.versions.model_dump(by_alias=True))
    image = str((cluster.get("spec") or {}).get("image") or "")
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return Versions(w5xde=tag)


def run_result(cluster: Mapping[str, Any], summary: RunSummary) -> RunResult:
    """One kept run of `status.runs` as a `RunResult` (`results.from_run_summary`)."""
    return results.from_run_summary(
        summary, effective_spec(cluster), _worker_versions(cluster, summary)
    )


def results_json(cluster: Mapping[str, Any], summary: RunSummary) -> str:
    return json.dumps(results.dump(run_result(cluster, summary)), indent=2)


def finished_set(status: CompressionClusterStatus) -> SampleSetStatus | None:
    """The cluster's sample set once its last sample is judged (`spec.samples` > 1)."""
    found = status.samples
    if found is None or found.passed is None or not status.runs:
        return None
    return found if status.runs[-1].id in found.run_ids else None


def sample_set_result(cluster: Mapping[str, Any], status: CompressionClusterStatus) -> SampleSet:
    """The finished sample set as `w5xde local --samples` prints it (`results.sample_set`):
    its samples still kept in `status.runs` (the last 10), the summary and verdict of all
    of them from `status.samples`."""
    found = finished_set(status)
    if found is None:
        raise ValueError("the cluster has no finished sample set")
    samples = [run_result(cluster, item) for item in status.runs if item.id in found.run_ids]
    summary = {
        name: FigureSummary.model_validate(interval)
        for name, interval in found.summary.model_dump(by_alias=True).items()
        if interval["samples"]
    }
    document = results.sample_set(samples, summary)
    return document.model_copy(update={"passed": bool(found.passed)})


def sample_set_json(cluster: Mapping[str, Any], status: CompressionClusterStatus) -> str:
    return json.dumps(results.dump(sample_set_result(cluster, status)), indent=2)


def set_check_message(found: SampleSetStatus) -> str | None:
    """Why `--check` fails for a sample set (None when every sample passed)."""
    if found.passed:
        return None
    return f"sample set {found.id}: {', '.join(found.missed)} missed spec.expect"


def check_message(summary: RunSummary) -> str | None:
    """Why `--check` fails for this run (None when it passed)."""
    if summary.passed:
        return None
    if summary.passed is None:
        return f"{summary.id} was not judged (it ended {summary.outcome}, not Completed)"
    return f"{summary.id}: missed {results.missed_message(summary.expectations)}"


def _summary(interval: Interval) -> FigureSummary:
    return FigureSummary(
        mean=interval.mean,
        ci95=interval.ci95,
        min=interval.min,
        max=interval.max,
        samples=interval.samples,
    )


def parse_fraction(text: str) -> float:
    """`5%` or `0.05` -> 0.05; ValueError naming the rule otherwise."""
    value = text.strip()
    try:
        fraction = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"--fail-if-slower: {text!r} is not like 5% or 0.05") from None
    if not 0 <= fraction < 1:
        raise ValueError("--fail-if-slower: must be between 0% and 100%")
    return fraction


def slower_message(first: RunSummary, second: RunSummary, tolerance: float) -> str | None:
    """Why `compare A B --fail-if-slower` fails: B's throughput interval lies wholly below
    A's by more than `tolerance` (None when the intervals do not say so)."""
    a, b = first.throughput, second.throughput
    if not a.samples or not b.samples:
        return None
    if not results.interval_overlap_slower(_summary(a), _summary(b), tolerance):
        return None
    return (
        f"{second.id} is slower than {first.id} beyond both 95 % intervals and "
        f"{tolerance:.0%}: {b.mean / 1e6:,.1f} ± {b.ci95 / 1e6:,.1f} MB/s vs "
        f"{a.mean / 1e6:,.1f} ± {a.ci95 / 1e6:,.1f} MB/s"
    )


def configuration_line(name: str, cluster: Mapping[str, Any]) -> str:
    """The first line of `status --watch -o json`: what is measured."""
    return json.dumps(
        {
            "kind": "Configuration",
            "schemaVersion": results.SCHEMA_VERSION,
            "name": name,
            "configuration": effective_spec(cluster),
        }
    )


def interval_line(name: str, status: CompressionClusterStatus) -> str:
    """One line of `status --watch -o json`: the status's live figures now."""
    return json.dumps(
        {
            "kind": "Interval",
            "name": name,
            "foldedAt": status.reporting.folded_at,
            "phase": status.phase,
            "ready": status.ready,
            "runId": status.run.id,
            "throughputBytesPerSecond": status.throughput_bytes_per_second,
            "wireBytesPerSecond": status.wire_bytes_per_second,
            "batchesPerSecond": status.batches_per_second,
            "compressionRatio": status.compression_ratio,
            "cpuSecondsPerGb": status.cpu_seconds_per_gb,
            "memoryBytes": status.memory_bytes,
            "lostBatches": status.totals.lost_batches,
            "links": status.links.links,
            "linksStalled": status.links.stalled,
        }
    )
