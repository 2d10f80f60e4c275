"""The one results schema: one producer, its JSON Schema current and enforced, the gate,
the samples' CI and the compare rule (docs/results.md)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from w5xde.api.statistics import t_quantile_975
from w5xde.api.v1alpha1 import (
    EXPECT_NEEDS_DURATION,
    MAX_SAMPLES,
    RATIO_WITHOUT_CODEC,
    SAMPLES_NEED_DURATION,
    CompressionClusterSpec,
    ExpectSpec,
)
from w5xde.contract import results
from w5xde.contract.link_figures import link_rows
from w5xde.contract.report import LinkReport, PeerLoss, ReportLine, WorkerExtras, WorkerReport
from w5xde.contract.results import FigureSummary, Outcome, RunFigures, RunResult
from w5xde.local.summary import link_result, local_result, worker_result

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "results.schema.json"


def _line(name: str, peer: str, raw: int, *, lost_from_peer: int = 0) -> ReportLine:
    return ReportLine(
        name=name,
        final=True,
        elapsed_seconds=2.0,
        report=WorkerReport(
            name=name,
            node="n1",
            batches=raw // 1000,
            raw_bytes=raw,
            wire_bytes=raw // 2,
            lost_batches=lost_from_peer,
            cpu_seconds=1.5,
            links=[
                LinkReport(
                    peer=peer,
                    raw_bytes=raw,
                    wire_bytes=raw // 2,
                    batches=raw // 1000,
                    tcp_retransmitted_segments=4,
                    tcp_cwnd_bytes=65536,
                    tcp_srtt_seconds=0.0012345678,
                )
            ],
            lost_from=[PeerLoss(peer=peer, lost_batches=lost_from_peer)] if lost_from_peer else [],
        ),
        extras=WorkerExtras(rss_peak_bytes=80_000_000, compression_seconds_total=0.5),
    )


def _result(
    expect: ExpectSpec | None = None, lost: int = 0, outcome: Outcome = Outcome.COMPLETE
) -> RunResult:
    lines = [
        _line("w-0", "w-1", 300_000_000, lost_from_peer=lost),
        _line("w-1", "w-0", 100_000_000),
    ]
    workers = [worker_result(line.name, 0, line, line.elapsed_seconds) for line in lines]
    reports = [line.report for line in lines]
    by_key = {(r.name, link.peer): link for r in reports for link in r.links}
    links = [link_result(row, by_key[row.key], 2.0) for row in link_rows(reports)]
    moment = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    return local_result(
        run_id="local-test",
        started=moment,
        completed=moment,
        outcome=outcome,
        reason="" if outcome is Outcome.COMPLETE else "stopped by SIGTERM",
        configuration={"workers": 2},
        workers=workers,
        links=links,
        wall_seconds=2.0,
        expect=expect or ExpectSpec(),
    )


def test_committed_json_schema_is_what_the_models_generate() -> None:
    """`make crd` writes docs/results.schema.json; a model change without it fails here."""
    assert json.loads(SCHEMA_FILE.read_text()) == results.json_schema()


def test_a_result_validates_against_the_json_schema_and_a_wrong_key_does_not() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    document = results.dump(_result())
    jsonschema.validate(document, schema)
    sampled = results.dump(results.sample_set([_result(), _result()]))
    jsonschema.validate(sampled, schema)
    # One naming style: a snake_case key (the old `w5xde local --json`) is refused.
    broken = {**document, "figures": {**document["figures"], "throughput_bytes_per_s": 1.0}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "outcome": "Done"}, schema)


def test_result_carries_run_identity_versions_environment_and_camel_case_units() -> None:
    document = results.dump(_result())
    assert document["schemaVersion"] == results.SCHEMA_VERSION
    assert document["startedAt"] == "2026-12-06T12:00:00.000Z"
    assert set(document["versions"]) == {
        "w5xde", "zstandard", "libzstd", "openssl", "python", "kernel",
    }  # fmt: skip
    assert document["versions"]["libzstd"].count(".") == 2
    assert document["environment"]["nodes"][0]["cpuCount"] >= 1
    keys: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                keys.append(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk({k: v for k, v in document.items() if k != "configuration"})
    assert not [key for key in keys if "_" in key], keys
    link = document["links"][0]
    assert link["tcpSrttSeconds"] == 0.001235  # rounded to the microsecond
    assert link["tcpRetransmittedSegments"] == 4
    assert document["figures"]["tcpRetransmittedSegments"] == 8


def test_figures_are_the_workers_counters_over_the_run() -> None:
    figures = _result().figures
    assert figures.throughput_bytes_per_second == 200_000_000.0  # 400 MB over 2 s
    assert figures.compression_ratio == 2.0
    # 3 CPU seconds for 0.4 GB received: 7.5 s/GB, 1 s of it the codec's (2.5 s/GB).
    assert figures.cpu.cpu_seconds_per_gb == 7.5
    assert figures.cpu.compression_cpu_seconds_per_gb == 2.5
    assert figures.cpu.other_cpu_seconds_per_gb == 5.0


def test_a_missed_minimum_fails_the_run_naming_the_expectation_and_both_figures() -> None:
    result = _result(ExpectSpec(min_throughput_bytes_per_second=3e8))
    assert result.passed is False
    missed = results.missed_message(result.expectations)
    assert "minThroughputBytesPerSecond" in missed
    assert "3e+08" in missed
    assert "2e+08" in missed
    assert "maxLostBatches" not in missed


def test_lost_batches_fail_by_default_and_unset_expectations_are_not_checked() -> None:
    assert _result().passed is True
    assert [item.expectation for item in _result().expectations] == ["maxLostBatches"]
    lossy = _result(lost=3)
    assert lossy.passed is False
    assert "maxLostBatches" in results.missed_message(lossy.expectations)
    assert _result(ExpectSpec(max_lost_batches=5), lost=3).passed is True


def test_cpu_and_ratio_expectations() -> None:
    assert _result(ExpectSpec(max_cpu_seconds_per_gb=7.0)).passed is False
    assert _result(ExpectSpec(max_cpu_seconds_per_gb=8.0)).passed is True
    assert _result(ExpectSpec(min_compression_ratio=2.0)).passed is True
    assert _result(ExpectSpec(min_compression_ratio=2.1)).passed is False


def test_an_interrupted_run_never_passes() -> None:
    assert _result(outcome=Outcome.INTERRUPTED).passed is False


def test_samples_summary_is_mean_and_students_t_interval_over_complete_samples() -> None:
    def sample(rate: float, outcome: Outcome = Outcome.COMPLETE) -> RunResult:
        base = _result(outcome=outcome)
        return base.model_copy(
            update={"figures": RunFigures(throughput_bytes_per_second=rate, seconds=2)}
        )

    samples = [sample(100.0), sample(110.0), sample(120.0), sample(5.0, Outcome.FAILED)]
    document = results.sample_set(samples)
    assert len(document.samples) == 4  # the failed one is kept, with its reason
    assert document.outcome is Outcome.FAILED
    assert document.passed is False
    summary = document.summary["throughputBytesPerSecond"]
    assert summary.samples == 3
    assert summary.mean == 110.0
    assert summary.ci95 == round(t_quantile_975(2) * 10.0 / math.sqrt(3), 1)
    assert (summary.min, summary.max) == (100.0, 120.0)


def test_slower_only_when_outside_both_intervals() -> None:
    base = FigureSummary(mean=100.0, ci95=5.0, samples=3)
    assert not results.interval_overlap_slower(base, FigureSummary(mean=92.0, ci95=4.0), 0.0)
    assert results.interval_overlap_slower(base, FigureSummary(mean=80.0, ci95=4.0), 0.0)
    # 5 % tolerance: 84 + 4 = 88 is below 95 * 0.95 = 90.25 (slower); 88 + 4 = 92 is not.
    assert results.interval_overlap_slower(base, FigureSummary(mean=84.0, ci95=4.0), 0.05)
    assert not results.interval_overlap_slower(base, FigureSummary(mean=88.0, ci95=4.0), 0.05)
    with pytest.raises(ValueError, match="tolerance"):
        results.interval_overlap_slower(base, base, -1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"expect": {"minThroughputBytesPerSecond": 1e8}}, EXPECT_NEEDS_DURATION),
        (
            {
                "duration": "10s",
                "compression": {"codec": "none"},
                "expect": {"minCompressionRatio": 2},
            },
            RATIO_WITHOUT_CODEC,
        ),
    ],
)
def test_contradictory_expectations_are_refused_with_the_api_servers_message(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.split(":", maxsplit=1)[0]):
        CompressionClusterSpec.model_validate(spec)


def test_unknown_expectation_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"expect\.minThroughput"):
        CompressionClusterSpec.model_validate({"duration": "10s", "expect": {"minThroughput": 1}})


def test_the_crd_carries_the_expectation_rules_and_bounds() -> None:
    from w5xde.api import crd

    schema = crd.crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    rules = {rule["message"] for rule in spec["x-kubernetes-validations"]}
    assert {EXPECT_NEEDS_DURATION, RATIO_WITHOUT_CODEC, SAMPLES_NEED_DURATION} <= rules
    samples = spec["properties"]["samples"]
    assert (samples["default"], samples["minimum"], samples["maximum"]) == (1, 1, MAX_SAMPLES)
    expect = spec["properties"]["expect"]["properties"]
    assert expect["maxLostBatches"]["minimum"] == 0
    assert set(expect) == {
        "minThroughputBytesPerSecond", "minCompressionRatio", "maxLostBatches",
        "maxCpuSecondsPerGb",
    }  # fmt: skip


def test_expect_does_not_change_the_runs_spec_digest() -> None:
    from w5xde.operator.runs import spec_digest

    plain = CompressionClusterSpec.model_validate({"duration": "10s"})
    judged = CompressionClusterSpec.model_validate(
        {"duration": "10s", "expect": {"minCompressionRatio": 2}}
    )
    assert spec_digest(plain) == spec_digest(judged)


def test_cpu_cost_splits_the_process_cpu_into_codec_tls_and_the_rest() -> None:
    split = results.cpu_cost(10.0, 4.0, 2e9, tls_seconds=2.0)
    assert (split.cpu_seconds_per_gb, split.compression_cpu_seconds_per_gb) == (5.0, 2.0)
    assert (split.tls_cpu_seconds_per_gb, split.other_cpu_seconds_per_gb) == (1.0, 2.0)
    # Timers are wall seconds: together they never claim more than the process spent.
    capped = results.cpu_cost(10.0, 8.0, 1e9, tls_seconds=5.0)
    assert (capped.compression_cpu_seconds_per_gb, capped.tls_cpu_seconds_per_gb) == (8.0, 2.0)
    assert capped.other_cpu_seconds_per_gb == 0.0
