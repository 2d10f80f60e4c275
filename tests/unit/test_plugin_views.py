"""`kubectl w5xde` renderings from a status, without a cluster."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.console import Console

from w5xde.plugin import views


def _run(
    run_id: str, mean: float, ci95: float, digest: str = "abc123", **extra: Any
) -> dict[str, Any]:
    return {
        "id": run_id,
        "outcome": "Completed",
        "generation": 2,
        "specDigest": digest,
        "seconds": 20.0,
        "throughputBytesPerSecond": mean,
        "compressionRatio": 2.0,
        "batchesPerSecond": 100.0,
        "totals": {"batches": 2000, "rawBytes": 4_000_000_000, "lostBatches": 0},
        "throughput": {"mean": mean, "ci95": ci95, "min": mean - 1, "max": mean + 1, "samples": 4},
        "batches": {"mean": 100.0, "ci95": 5.0, "min": 95, "max": 105, "samples": 4},
        **extra,
    }


STATUS = {
    "phase": "Completed",
    "ready": "0/2",
    "totals": {"batches": 4000},
    "runs": [_run("run-1", 200e6, 5e6), _run("run-2", 180e6, 4e6, digest="def456")],
}


def test_results_csv_parses_and_matches_the_status() -> None:
    rows = list(csv.DictReader(io.StringIO(views.results_csv(STATUS, None))))
    assert len(rows) == 1
    assert rows[0]["id"] == "run-2"  # the last run by default
    assert float(rows[0]["throughputBytesPerSecond"]) == 180e6
    assert float(rows[0]["throughputCi95"]) == 4e6
    assert int(rows[0]["batches"]) == 2000
    first = list(csv.DictReader(io.StringIO(views.results_csv(STATUS, "run-1"))))
    assert first[0]["specDigest"] == "abc123"


def test_find_run_by_id() -> None:
    chosen = views.find_run(STATUS, "run-1")
    assert chosen is not None
    assert chosen.throughput.mean == 200e6
    assert views.find_run(STATUS, "run-9") is None


def test_compare_says_the_specs_differ_first_and_whether_intervals_overlap() -> None:
    lines = views.compare_lines(STATUS["runs"][0], STATUS["runs"][1])
    assert lines[0].startswith("note: run-1 and run-2 measured different specs")
    throughput = next(line for line in lines if line.startswith("throughput"))
    assert "-10.0 %" in throughput
    assert "do not overlap" in throughput
    close = views.compare_lines(_run("a", 200e6, 15e6), _run("b", 190e6, 15e6))
    assert not close[0].startswith("note")
    assert "intervals overlap" in close[0]


def test_status_view_renders_every_part() -> None:
    status = {**STATUS, "notableWorkers": [{"name": "d-1", "reason": "Stale", "node": "n2"}]}
    console = Console(file=io.StringIO(), width=200)
    console.print(views.status_view("demo", status, {"demo-0": "HTTP 503"}))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for needle in ("CompressionCluster demo", "d-1", "Stale", "run-2", "HTTP 503", "0/2"):
        assert needle in text, needle


def test_status_view_shows_the_links_summary_notable_links_and_the_pulled_links() -> None:
    from w5xde.contract.report import LinkReport, PeerLoss, WorkerReport

    status = {
        **STATUS,
        "links": {
            "links": 6, "sharingNode": 2,
            "spread": {"minBytesPerSecond": 1e6, "p50BytesPerSecond": 2e6,
                       "maxBytesPerSecond": 3e6},
            "rttP99": {"minSeconds": 0.001, "p50Seconds": 0.002, "maxSeconds": 0.0125},
            "notable": [{"sender": "d-0", "receiver": "d-1", "senderNode": "n1",
                         "receiverNode": "n1", "sharedNode": True, "rttP99Seconds": 0.0125,
                         "reason": "SharedNode"}],
        },
    }  # fmt: skip
    reports: dict[str, WorkerReport | str] = {
        "d-0": WorkerReport(
            name="d-0", node="n1",
            links=[LinkReport(peer="d-1", raw_bytes_per_second=5e6, rtt_p50_seconds=0.0031,
                              rtt_p99_seconds=0.0042, rtt_samples=9)],
        ),
        "d-1": WorkerReport(
            name="d-1", node="n2", lost_from=[PeerLoss(peer="d-0", lost_batches=7)]
        ),
        "d-2": "HTTP 503",
    }  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    console.print(views.status_view("demo", status, reports))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "6 links, 2 sharing a node" in text
    assert "max 12.50 ms" in text
    notable = text.split("notable links")[1].split("workers (pulled now)")[0]
    assert "SharedNode" in notable
    assert "yes (n1)" in notable
    # The per-link table comes after the per-worker table: d-0 -> d-1 with its RTT and
    # the 7 batches d-1 found missing from d-0, on different nodes.
    pulled = text.split("links (pulled now)")[1]
    row = next(line for line in pulled.splitlines() if "d-0" in line)
    cells = row.replace("│", " ").split()
    assert cells[:2] == ["d-0", "d-1"]
    assert cells[2] == "5.0"
    assert cells[5] == "7"
    # RTT p50, p99, then the kernel's retransmits and srtt (none reported here), shared node.
    assert cells[7:12] == ["3.10", "4.20", "0", "0.00", "no"]


def test_a_worker_that_does_not_answer_is_an_error_in_its_row_not_a_traceback() -> None:
    """The pod proxy's urllib3 errors (MaxRetryError around a ReadTimeoutError) used to
    escape `status --workers` as a traceback (issue 19)."""
    import base64
    from types import SimpleNamespace

    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    from w5xde.plugin.source import ClusterSource

    class Api:
        def param_serialize(self, method: str, path: str, **_: Any) -> tuple[Any, ...]:
            return (method, path, {}, None, None)

        def call_api(self, method: str, url: str, **_: Any) -> Any:
            if "demo-1" in url:
                raise MaxRetryError(None, url, ReadTimeoutError(None, url, "Read timed out."))  # type: ignore[arg-type]
            raise ReadTimeoutError(None, url, "Read timed out. (read timeout=5)")  # type: ignore[arg-type]

    secret = SimpleNamespace(data={"key": base64.b64encode(b"k" * 32).decode()})
    source = ClusterSource.__new__(ClusterSource)
    source.namespace = "ns"
    source._api = Api()  # type: ignore[assignment]
    source._core = SimpleNamespace(read_namespaced_secret=lambda *_: secret)  # type: ignore[assignment]
    reports = source.worker_reports("demo", ["demo-0", "demo-1"])
    assert reports == {
        "demo-0": "ReadTimeoutError: None: Read timed out. (read timeout=5)",
        "demo-1": "ReadTimeoutError: None: Read timed out.",
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(views.status_view("demo", STATUS, reports))
    rows = console.file.getvalue().split("workers (pulled now)")[1]  # type: ignore[attr-defined]
    assert "demo-1" in rows
    assert "Read timed out" in rows


def test_links_that_do_not_flow_are_named_with_how_long_and_why() -> None:
    from w5xde.contract.report import LinkReport, WorkerReport

    status = {
        **STATUS,
        "restartCount": 2,
        "links": {
            "links": 2, "stalled": 1,
            "notable": [{"sender": "d-0", "receiver": "d-1", "reason": "Stalled",
                         "stateSeconds": 45, "message": "no ACK progress for 45 s"}],
        },
        "conditions": [{"type": "LinksStalled", "status": "True", "reason": "LinksStalled",
                        "message": "1 of 2 links not flowing"}],
    }  # fmt: skip
    reports: dict[str, WorkerReport | str] = {
        "d-0": WorkerReport(
            name="d-0",
            links=[LinkReport(peer="d-1", state="Stalled", state_seconds=45.2)],
        ),
    }
    console = Console(file=io.StringIO(), width=220)
    console.print(views.status_view("demo", status, reports))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    summary = text.split("notable links")[0]
    assert "1 stalled, 0 unreachable, 0 refused" in summary
    assert "LinksStalled: 1 of 2 links not flowing" in summary
    assert "2 worker container restarts" in summary
    assert "Stalled 45 s: no ACK progress for 45 s" in text.split("notable links")[1]
    pulled = text.split("links (pulled now)")[1]
    assert "Stalled 45 s" in next(line for line in pulled.splitlines() if "d-0" in line)
