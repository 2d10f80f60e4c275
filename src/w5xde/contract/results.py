"""The one results schema (docs/results.md): what a finished run measured, self-described.

`w5xde local --json`, `kubectl w5xde results -o json|csv`, the run summaries and the
bench scripts all print a `RunResult` (or a `SampleSet` of them), made by the functions
here and nowhere else.  camelCase keys as in the CR, units in the key names, values
rounded to what they mean (bytes/s to 0.1, seconds to 1 ms, ratios to 0.01).

`SCHEMA_VERSION` changes when a key changes meaning or goes away; new keys may be added
within a version, so readers ignore keys they do not know.
"""

from __future__ import annotations

import math
import os
import platform
import socket
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import Field, TypeAdapter

from w5xde.api.statistics import SampleStats
from w5xde.api.v1alpha1 import (
    ApiModel,
    ExpectationCheck,
    ExpectSpec,
    LinkState,
    RunOutcome,
    RunSummary,
)
from w5xde.contract.versions import running_versions

#: The version of this schema; `schemaVersion` of every result.
SCHEMA_VERSION: Final = "w5xde.io/results/v1"
#: Decimal gigabytes, the unit of `cpuSecondsPerGb` (as the worker reports it).
GB = 1e9


class ResultModel(ApiModel):
    """camelCase keys, frozen; unknown keys refused when a result is read back (the
    API's own model conventions, so a result's configuration reads like the CR)."""


class Outcome(StrEnum):
    COMPLETE = "Complete"
    """The run reached its duration and every worker drained."""
    INTERRUPTED = "Interrupted"
    """Stopped early (Ctrl-C, SIGTERM, a spec change): the figures cover the part that ran."""
    FAILED = "Failed"
    """A worker failed or the run could not be measured; `reason` says why."""


class Versions(ResultModel):
    """What ran (empty where the producer cannot know: a cluster's finished run)."""

    w5xde: str = Field("", alias="w5xde")
    zstandard: str = ""
    libzstd: str = ""
    openssl: str = ""
    python: str = ""
    kernel: str = ""


class NodeEnvironment(ResultModel):
    name: str
    cpu_model: str = ""
    cpu_count: int = Field(0, ge=0)


class Environment(ResultModel):
    nodes: list[NodeEnvironment] = Field(default_factory=list)
    #: Links whose two ends ran on one node (their figures are loopback figures).
    links_sharing_node: int = Field(0, ge=0)
    #: Every link had both ends on one node (`w5xde local`: always).
    peers_share_node: bool = False


class CpuCost(ResultModel):
    """Process CPU (user + system, from the kernel) per decimal GB of raw data received,
    split by the worker's own timers into the codec, TLS (encrypting, decrypting, the
    copies through OpenSSL's buffers) and everything else (network, framing,
    bookkeeping)."""

    cpu_seconds: float = Field(0, ge=0)
    cpu_seconds_per_gb: float = Field(0, ge=0)
    compression_cpu_seconds_per_gb: float = Field(0, ge=0)
    tls_cpu_seconds_per_gb: float = Field(0, ge=0)
    other_cpu_seconds_per_gb: float = Field(0, ge=0)


class WorkerResult(ResultModel):
    name: str
    node: str = ""
    exit_code: int | None = None
    elapsed_seconds: float = Field(0, ge=0)
    batches: int = Field(0, ge=0)
    raw_bytes: int = Field(0, ge=0)
    wire_bytes: int = Field(0, ge=0)
    throughput_bytes_per_second: float = Field(0, ge=0)
    batches_per_second: float = Field(0, ge=0)
    compression_ratio: float = Field(0, ge=0)
    network_seconds: float = Field(0, ge=0)
    compression_seconds: float = Field(0, ge=0)
    tls_seconds: float = Field(0, ge=0)
    cpu: CpuCost = Field(default_factory=CpuCost)
    rss_max_bytes: int = Field(0, ge=0)
    lost_batches: int = Field(0, ge=0)
    corrupt_batches: int = Field(0, ge=0)
    resent_batches: int = Field(0, ge=0)
    duplicate_batches: int = Field(0, ge=0)
    refused_connections: int = Field(0, ge=0)
    socket_buffer_requested_bytes: int = Field(0, ge=0)
    socket_buffer_effective_send_bytes: int = Field(0, ge=0)
    socket_buffer_effective_receive_bytes: int = Field(0, ge=0)


class LinkResult(ResultModel):
    """One sender -> receiver link over the sender's elapsed time; TCP facts from the
    kernel's TCP_INFO of the sender's sockets."""

    sender: str
    receiver: str
    shared_node: bool = False
    state: LinkState = LinkState.FLOWING
    raw_bytes: int = Field(0, ge=0)
    raw_bytes_per_second: float = Field(0, ge=0)
    wire_bytes_per_second: float = Field(0, ge=0)
    batches_per_second: float = Field(0, ge=0)
    lost_batches: int = Field(0, ge=0)
    resent_batches: int = Field(0, ge=0)
    rtt_p50_seconds: float = Field(0, ge=0)
    rtt_p99_seconds: float = Field(0, ge=0)
    tcp_retransmitted_segments: int = Field(0, ge=0)
    tcp_cwnd_bytes: int = Field(0, ge=0)
    tcp_srtt_seconds: float = Field(0, ge=0)
    tcp_delivery_rate_bytes_per_second: float = Field(0, ge=0)


class RunFigures(ResultModel):
    """The cluster's figures: counters over the run's length (the longest worker's)."""

    seconds: float = Field(0, ge=0)
    workers: int = Field(0, ge=0)
    throughput_bytes_per_second: float = Field(0, ge=0)
    wire_bytes_per_second: float = Field(0, ge=0)
    batches: int = Field(0, ge=0)
    batches_per_second: float = Field(0, ge=0)
    compression_ratio: float = Field(0, ge=0)
    network_seconds_per_worker: float = Field(0, ge=0)
    compression_seconds_per_worker: float = Field(0, ge=0)
    cpu: CpuCost = Field(default_factory=CpuCost)
    rss_max_bytes: int = Field(0, ge=0)
    lost_batches: int = Field(0, ge=0)
    corrupt_batches: int = Field(0, ge=0)
    resent_batches: int = Field(0, ge=0)
    tcp_retransmitted_segments: int = Field(0, ge=0)


#: One expectation and the figure it was held against (the API's model: `status.runs`
#: carries the same checks).
Check = ExpectationCheck


class RunResult(ResultModel):
    """One run (or one sample of a `SampleSet`)."""

    schema_version: Literal["w5xde.io/results/v1"] = SCHEMA_VERSION
    kind: Literal["Run"] = "Run"
    run_id: str
    started_at: str = Field(json_schema_extra={"format": "date-time"})
    completed_at: str = Field(json_schema_extra={"format": "date-time"})
    outcome: Outcome
    #: Why the run is not Complete (empty when it is).
    reason: str = ""
    #: The effective configuration after defaulting, as a CompressionCluster spec.
    configuration: dict[str, Any] = Field(default_factory=dict)
    versions: Versions
    environment: Environment = Field(default_factory=Environment)
    figures: RunFigures = Field(default_factory=RunFigures)
    workers: list[WorkerResult] = Field(default_factory=list)
    links: list[LinkResult] = Field(default_factory=list)
    expectations: list[Check] = Field(default_factory=list)
    #: Every expectation held and the run is Complete (docs/results.md, "Passed").
    passed: bool = False


class FigureSummary(ResultModel):
    """One figure across samples: mean and the 95 % CI half-width (Student's t)."""

    mean: float = 0
    ci95: float = 0
    min: float = 0
    max: float = 0
    samples: int = Field(0, ge=0)


class SampleSet(ResultModel):
    """N runs back to back with one configuration, each kept, and their summary."""

    schema_version: Literal["w5xde.io/results/v1"] = SCHEMA_VERSION
    kind: Literal["SampleSet"] = "SampleSet"
    #: Complete when every sample is; a failed sample still counts with its reason.
    outcome: Outcome
    passed: bool = False
    samples: list[RunResult]
    #: Per figure (the `figures` keys, `cpuSecondsPerGb` for the CPU cost), over the
    #: Complete samples.
    summary: dict[str, FigureSummary] = Field(default_factory=dict)


Result = Annotated[RunResult | SampleSet, Field(discriminator="kind")]
RESULT_ADAPTER: TypeAdapter[RunResult | SampleSet] = TypeAdapter(Result)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a results document (docs/results.schema.json)."""
    schema = RESULT_ADAPTER.json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://w5xde.io/results/v1/schema.json",
        "title": "W5XDE results",
        **schema,
    }


def dump(result: RunResult | SampleSet) -> dict[str, Any]:
    """The published JSON object of a result."""
    return result.model_dump(mode="json", by_alias=True)


# -- Versions and environment ------------------------------------------------------


def versions() -> Versions:
    """This process's versions (the worker image has the same in a cluster)."""
    return Versions.model_validate(running_versions().model_dump(by_alias=True))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The first CPU's model name ("" when it cannot be read)."""
    try:
        with open(cpuinfo) as source:
            for line in source:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


def this_node() -> NodeEnvironment:
    return NodeEnvironment(
        name=socket.gethostname(), cpu_model=cpu_model(), cpu_count=os.cpu_count() or 0
    )


# -- Figures -------------------------------------------------------------------------


def rate(value: float, seconds: float) -> float:
    """Per second over `seconds`, to 0.1 (0 over no time)."""
    return round(value / seconds, 1) if seconds > 0 else 0.0


def ratio(raw_bytes: float, wire_bytes: float) -> float:
    return round(raw_bytes / wire_bytes, 2) if wire_bytes > 0 else 0.0


def cpu_cost(
    cpu_seconds: float, compression_seconds: float, raw_bytes: float, tls_seconds: float = 0.0
) -> CpuCost:
    """CPU per GB of `raw_bytes`; the codec's and TLS's seconds are part of the process's
    (timed in wall seconds, so each is capped at what the process spent)."""
    gigabytes = raw_bytes / GB
    if gigabytes <= 0:
        return CpuCost(cpu_seconds=round(cpu_seconds, 3))
    total = cpu_seconds / gigabytes
    compression = min(compression_seconds, cpu_seconds) / gigabytes
    tls = min(tls_seconds, max(0.0, cpu_seconds - compression_seconds)) / gigabytes
    return CpuCost(
        cpu_seconds=round(cpu_seconds, 3),
        cpu_seconds_per_gb=round(total, 3),
        compression_cpu_seconds_per_gb=round(compression, 3),
        tls_cpu_seconds_per_gb=round(tls, 3),
        other_cpu_seconds_per_gb=round(max(0.0, total - compression - tls), 3),
    )


def run_figures(
    workers: Sequence[WorkerResult], links: Sequence[LinkResult], seconds: float
) -> RunFigures:
    """The run's figures from its workers' (the one fold of a result)."""
    count = max(1, len(workers))
    raw = sum(worker.raw_bytes for worker in workers)
    wire = sum(worker.wire_bytes for worker in workers)
    batches = sum(worker.batches for worker in workers)
    compression_seconds = sum(worker.compression_seconds for worker in workers)
    tls_seconds = sum(worker.tls_seconds for worker in workers)
    return RunFigures(
        seconds=round(seconds, 3),
        workers=len(workers),
        throughput_bytes_per_second=rate(raw, seconds),
        wire_bytes_per_second=rate(wire, seconds),
        batches=batches,
        batches_per_second=rate(batches, seconds),
        compression_ratio=ratio(raw, wire),
        network_seconds_per_worker=round(sum(w.network_seconds for w in workers) / count, 3),
        compression_seconds_per_worker=round(compression_seconds / count, 3),
        cpu=cpu_cost(
            sum(worker.cpu.cpu_seconds for worker in workers), compression_seconds, raw, tls_seconds
        ),
        rss_max_bytes=max((worker.rss_max_bytes for worker in workers), default=0),
        lost_batches=sum(worker.lost_batches for worker in workers),
        corrupt_batches=sum(worker.corrupt_batches for worker in workers),
        resent_batches=sum(worker.resent_batches for worker in workers),
        tcp_retransmitted_segments=sum(link.tcp_retransmitted_segments for link in links),
    )


# -- Expectations --------------------------------------------------------------------

#: Expectation (the `spec.expect` key) -> (the figure it reads, True if a minimum).
_EXPECTATIONS: dict[str, tuple[str, bool]] = {
    "minThroughputBytesPerSecond": ("throughputBytesPerSecond", True),
    "minCompressionRatio": ("compressionRatio", True),
    "maxLostBatches": ("lostBatches", False),
    "maxCpuSecondsPerGb": ("cpuSecondsPerGb", False),
}


def figure_values(figures: RunFigures) -> dict[str, float]:
    """The figures expectations read, by their result names."""
    return {
        "throughputBytesPerSecond": figures.throughput_bytes_per_second,
        "compressionRatio": figures.compression_ratio,
        "lostBatches": float(figures.lost_batches),
        "cpuSecondsPerGb": figures.cpu.cpu_seconds_per_gb,
    }


def summary_values(summary: RunSummary) -> dict[str, float]:
    """The same figures of a finished run in `status.runs` (CPU: its intervals' mean)."""
    return {
        "throughputBytesPerSecond": summary.throughput_bytes_per_second,
        "compressionRatio": summary.compression_ratio,
        "lostBatches": float(summary.totals.lost_batches),
        "cpuSecondsPerGb": summary.cpu_seconds_per_gb.mean,
    }


def check(expect: ExpectSpec, figures: RunFigures | Mapping[str, float]) -> list[Check]:
    """Each expectation that is set (a 0 minimum or CPU maximum is unset; `maxLostBatches`
    always holds, default 0) against the run's figure."""
    values = figure_values(figures) if isinstance(figures, RunFigures) else figures
    wanted = expect.model_dump(by_alias=True)
    checks = []
    for key, (figure, is_minimum) in _EXPECTATIONS.items():
        expected = float(wanted[key])
        if key != "maxLostBatches" and expected <= 0:
            continue
        actual = float(values.get(figure, 0.0))
        passed = actual >= expected if is_minimum else actual <= expected
        checks.append(Check(expectation=key, expected=expected, actual=actual, passed=passed))
    return checks


def judge(summary: RunSummary, expect: ExpectSpec) -> RunSummary:
    """A completed run's summary with its checks and verdict (the `Passed` condition)."""
    checks = check(expect, summary_values(summary))
    return summary.model_copy(
        update={"expectations": checks, "passed": all(item.passed for item in checks)}
    )


def verdict(outcome: Outcome, checks: Sequence[Check]) -> bool:
    return outcome is Outcome.COMPLETE and all(item.passed for item in checks)


def missed_message(checks: Sequence[Check]) -> str:
    """`minThroughputBytesPerSecond: 1.2e+08 < 3e+08; ...` for the missed ones."""
    return "; ".join(
        f"{item.expectation}: expected {'>=' if item.expectation.startswith('min') else '<='} "
        f"{item.expected:g}, measured {item.actual:g}"
        for item in checks
        if not item.passed
    )


# -- A cluster's kept run ------------------------------------------------------------

_RUN_OUTCOMES = {
    RunOutcome.COMPLETED: (Outcome.COMPLETE, ""),
    RunOutcome.SPEC_CHANGED: (Outcome.INTERRUPTED, "the spec changed, so a new run began"),
    RunOutcome.FAILED: (Outcome.FAILED, "the run failed"),
}


def from_run_summary(
    summary: RunSummary, configuration: Mapping[str, Any], versions: Versions
) -> RunResult:
    """One kept run of `status.runs` (judged by `judge` when it ended) as a `RunResult`."""
    outcome, reason = _RUN_OUTCOMES.get(summary.outcome, (Outcome.FAILED, str(summary.outcome)))
    totals = summary.totals
    figures = RunFigures(
        seconds=summary.seconds,
        workers=summary.workers,
        throughput_bytes_per_second=summary.throughput_bytes_per_second,
        wire_bytes_per_second=summary.wire_bytes_per_second,
        batches=totals.batches,
        batches_per_second=summary.batches_per_second,
        compression_ratio=summary.compression_ratio,
        cpu=CpuCost(cpu_seconds_per_gb=summary.cpu_seconds_per_gb.mean),
        lost_batches=totals.lost_batches,
        corrupt_batches=totals.corrupt_batches,
        resent_batches=totals.resent_batches,
    )
    return RunResult(
        run_id=summary.id,
        started_at=summary.started_at or "",
        completed_at=summary.completed_at or "",
        outcome=outcome,
        reason=reason,
        configuration=dict(configuration),
        versions=versions,
        environment=Environment(
            links_sharing_node=summary.links_sharing_node,
            peers_share_node=summary.links > 0 and summary.links == summary.links_sharing_node,
        ),
        figures=figures,
        expectations=list(summary.expectations),
        passed=bool(summary.passed) and outcome is Outcome.COMPLETE,
    )


# -- Samples -------------------------------------------------------------------------


def _summary_values(result: RunResult) -> Mapping[str, float]:
    figures = result.figures
    return {
        "throughputBytesPerSecond": figures.throughput_bytes_per_second,
        "wireBytesPerSecond": figures.wire_bytes_per_second,
        "batchesPerSecond": figures.batches_per_second,
        "compressionRatio": figures.compression_ratio,
        "cpuSecondsPerGb": figures.cpu.cpu_seconds_per_gb,
        "rssMaxBytes": float(figures.rss_max_bytes),
        "lostBatches": float(figures.lost_batches),
    }


def sample_values(summary: RunSummary) -> dict[str, float]:
    """The figures a cluster's sample set summarises, of one kept run (`status.runs`):
    the `summarize_samples` keys a cluster run has (no RSS: its workers are gone)."""
    return {
        "throughputBytesPerSecond": summary.throughput_bytes_per_second,
        "wireBytesPerSecond": summary.wire_bytes_per_second,
        "batchesPerSecond": summary.batches_per_second,
        "compressionRatio": summary.compression_ratio,
        "cpuSecondsPerGb": summary.cpu_seconds_per_gb.mean,
        "lostBatches": float(summary.totals.lost_batches),
    }


def add_sample(
    stats: Mapping[str, SampleStats], values: Mapping[str, float]
) -> dict[str, SampleStats]:
    """`stats` with one more Complete sample's figures."""
    added = dict(stats)
    for name, value in values.items():
        added[name] = added.get(name, SampleStats()).add(value)
    return added


#: Figures summarised with more digits than the default 0.1.
_SUMMARY_DIGITS = {"compressionRatio": 3, "cpuSecondsPerGb": 3}


def figure_summaries(stats: Mapping[str, SampleStats]) -> dict[str, FigureSummary]:
    """Mean, 95 % CI half-width (Student's t), min and max of each figure: the one
    summary of a sample set, for `w5xde local --samples` and `status.samples` alike."""
    return {
        name: FigureSummary(
            mean=round(item.mean, _SUMMARY_DIGITS.get(name, 1)),
            ci95=round(item.ci95, _SUMMARY_DIGITS.get(name, 1)),
            min=round(item.min, _SUMMARY_DIGITS.get(name, 1)),
            max=round(item.max, _SUMMARY_DIGITS.get(name, 1)),
            samples=item.count,
        )
        for name, item in stats.items()
    }


def summarize_samples(samples: Sequence[RunResult]) -> dict[str, FigureSummary]:
    """Mean and 95 % CI per figure over the Complete samples."""
    stats: dict[str, SampleStats] = {}
    for sample in samples:
        if sample.outcome is Outcome.COMPLETE:
            stats = add_sample(stats, _summary_values(sample))
    return figure_summaries(stats)


def sample_set(
    samples: Sequence[RunResult], summary: Mapping[str, FigureSummary] | None = None
) -> SampleSet:
    """The set of `samples`; `summary` when it is known beyond the samples at hand (a
    cluster keeps its set's statistics in `status.samples`, its last 10 runs only)."""
    outcomes = {sample.outcome for sample in samples}
    outcome = (
        Outcome.COMPLETE
        if outcomes == {Outcome.COMPLETE}
        else Outcome.INTERRUPTED
        if Outcome.INTERRUPTED in outcomes
        else Outcome.FAILED
    )
    return SampleSet(
        outcome=outcome,
        passed=bool(samples) and all(sample.passed for sample in samples),
        samples=list(samples),
        summary=dict(summary) if summary is not None else summarize_samples(samples),
    )


def interval_overlap_slower(
    baseline: FigureSummary, candidate: FigureSummary, tolerance: float
) -> bool:
    """The candidate is slower than the baseline by more than `tolerance` (0.05 = 5 %)
    even at the ends of both 95 % intervals: its upper bound below the baseline's lower
    bound times (1 - tolerance)."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError("tolerance must be a fraction >= 0")
    upper = candidate.mean + candidate.ci95
    lower = baseline.mean - baseline.ci95
    return upper < lower * (1 - tolerance)


def write_schema(path: str) -> None:
    """Write the JSON Schema (`make crd` keeps docs/results.schema.json current)."""
    import json

    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":  # pragma: no cover - `make crd`
    import sys

    write_schema(sys.argv[1] if len(sys.argv) > 1 else "docs/results.schema.json")
