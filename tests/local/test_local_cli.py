"""`w5xde local` and `w5xde worker` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

W5XDE = [sys.executable, "-m", "w5xde"]
RESULT_KEYS = {
    "schemaVersion",
    "kind",
    "runId",
    "startedAt",
    "completedAt",
    "outcome",
    "reason",
    "configuration",
    "versions",
    "environment",
    "figures",
    "workers",
    "links",
    "expectations",
    "passed",
}


def run(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*W5XDE, *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def tcp_received(pid: int) -> dict[int, int]:
    """Per child process of `pid`: the most bytes one of its TCP connections received
    (the kernel's own count, read with `ss -i`)."""
    children = children_of(pid)
    listing = subprocess.run(
        ["ss", "-Htinp", "state", "established"], capture_output=True, text=True, check=True
    ).stdout
    received: dict[int, int] = {}
    owner: int | None = None
    for line in listing.splitlines():
        if match := re.search(r"pid=(\d+)", line):
            owner = int(match.group(1))
        elif owner in children and (match := re.search(r"bytes_received:(\d+)", line)):
            received[owner] = max(received.get(owner, 0), int(match.group(1)))
            owner = None
    return received


def received_batches(base: str) -> float:
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
    except OSError:
        return 0.0
    values = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("w5xde_received_batches_total")
    ]
    return values[0] if values else 0.0


def test_local_json_prints_exactly_one_object_with_the_seed_figures() -> None:
    result = run("local", "--workers", "3", "--duration", "2", "--batch-bytes", "8192", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == RESULT_KEYS
    assert data["outcome"] == "Complete"
    assert data["passed"] is True
    figures = data["figures"]
    assert figures["workers"] == 3
    assert len(data["workers"]) == 3
    assert figures["batches"] > 100
    assert figures["throughputBytesPerSecond"] > 0
    assert 1.5 < figures["compressionRatio"] < 3.0
    assert figures["lostBatches"] == figures["corruptBatches"] == 0
    assert 0 < figures["rssMaxBytes"] < 200_000_000
    assert figures["cpu"]["cpuSecondsPerGb"] > 0
    assert data["configuration"]["workload"]["batchBytes"] == 8192
    for node in data["workers"]:
        assert node["batches"] > 0
        assert node["exitCode"] == 0


def test_local_table_with_a_file_source_and_verbose_logs(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("some text to send around " * 2000)
    result = run(
        "local",
        "--workers",
        "2",
        "--duration",
        "1",
        "--source",
        f"file:{tmp_path}",
        "--log-mode",
        "3",
        "--level",
        "1",
        "--batch-bytes",
        "4096",
    )
    assert result.returncode == 0, result.stderr
    assert "MB/s raw" in result.stdout
    assert "local-0" in result.stdout
    assert "local-1" in result.stdout
    # Verbose mode may log per batch; the batch lines prove the mode reached the workers.
    assert "verified" in result.stderr


def test_local_silent_mode_logs_nothing_per_batch() -> None:
    """Silent (the default) is ERROR only: a healthy run writes nothing at all to stderr,
    not even the WARNING-level start lines that normal mode shows (next test)."""
    result = run("local", "--workers", "2", "--duration", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["figures"]["batches"] > 0
    assert result.stderr == ""


def test_local_normal_mode_logs_warnings_but_nothing_per_batch() -> None:
    result = run("local", "--workers", "2", "--duration", "1", "--json", "--log-mode", "normal")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["figures"]["batches"] > 0
    for name in ("local-0", "local-1"):
        assert f"WARNING w5xde.worker: worker {name} " in result.stderr, result.stderr
    assert "verified" not in result.stderr
    assert " INFO " not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers"),
        (["--workers", "1"], "a ring of one sends nowhere"),
        (["--duration", "inf"], "--duration: must be a finite"),
        (["--duration", "nan"], "--duration"),
        (["--samples", "0"], "--samples"),
        (["--expect", "minThroughput=3"], "--expect: unknown expectation 'minThroughput'"),
        (["--expect", "maxLostBatches=-1"], "--expect maxLostBatches"),
        (["--expect", "minCompressionRatio"], "--expect minCompressionRatio: needs a number"),
        (["--codec", "none", "--expect", "minCompressionRatio=2"], "codec none"),
        (["--plot", "/does/not/exist/run.png"], "--plot: directory '/does/not/exist'"),
        (["--duration", "-1"], "--duration"),
        (["--level", "30"], "--level"),
        (["--batch-bytes", "10"], "--batch-bytes"),
        (["--source", "synthetic:nope"], "--source"),
        (["--source", "file:/does/not/exist"], "--source"),
        (["--topology", "star"], "--topology"),
        (["--log-mode", "7"], "--log-mode"),
        (["--socket-buffer", "-5"], "--socket-buffer"),
        (["--workers", "many"], "--workers"),
    ],
)
def test_local_bad_arguments_exit_2_naming_the_option(args: list[str], message: str) -> None:
    result = (
        run("local", *args, "--duration", "1") if "--duration" not in args else run("local", *args)
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--chunk-bytes", "8388608", "--socket-buffer", "65536"],
            "w5xde local: --chunk-bytes: must not be larger than --socket-buffer when a buffer"
            " is set",
        ),
        (["--level", "23"], "w5xde local: --level: must be an integer -7..22 or 'auto' (got 23)"),
    ],
)
def test_local_errors_name_the_option_once_without_pydantic_words(
    args: list[str], line: str
) -> None:
    """Issue 24: no `?` for the option, no `Value error,`, the field not named twice."""
    result = run("local", *args, "--duration", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == line


def test_local_typo_shows_locals_usage_and_help_shows_defaults_and_every_topology() -> None:
    typo = run("local", "--wrkers", "2")
    assert typo.returncode == 2
    assert typo.stderr.startswith("usage: w5xde local ")
    assert "unrecognized arguments: --wrkers 2" in typo.stderr
    shown = run("local", "--help").stdout
    assert "ring | all-to-all | pairs | mesh (default ring)" in shown
    assert "64..64 MiB (default 65536)" in " ".join(shown.split())
    assert "zstd | none (default zstd)" in shown


def test_local_stops_cleanly_on_ctrl_c_and_still_prints() -> None:
    process = subprocess.Popen(
        [*W5XDE, "local", "--workers", "2", "--duration", "60", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Interrupt a run in full flow: both workers have taken in a MiB over their streams.
        wait_for(
            lambda: (
                all(received >= 1 << 20 for received in tcp_received(process.pid).values())
                and len(tcp_received(process.pid)) == 2
            ),
            "both local workers to receive data",
        )
    finally:
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr
    assert process.returncode == 130
    data = json.loads(stdout)
    assert data["outcome"] == "Interrupted"
    assert data["reason"] == "stopped by SIGINT"
    assert data["passed"] is False
    assert data["figures"]["batches"] > 0
    assert data["figures"]["seconds"] < 30
    assert data["figures"]["lostBatches"] == 0
    assert all(node["exitCode"] == 0 for node in data["workers"])


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), {pid}
    while frontier:
        frontier = set().union(*(children_of(item) for item in frontier)) - found
        found |= frontier
    return found


def _workers_of_session(run_id: str) -> list[int]:
    """Worker processes whose config names this run (its cluster id), wherever they are
    parented now (an orphan is reparented to PID 1 or a subreaper)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if run_id.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_local_sigterm_stops_the_workers_and_prints_an_interrupted_result() -> None:
    """`timeout 5 w5xde local ...` sends SIGTERM: the workers stop (none left behind), the
    partial result is printed marked Interrupted, and the exit code is 143."""
    process = subprocess.Popen(
        [*W5XDE, "local", "--workers", "2", "--duration", "60", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                len(tcp_received(process.pid)) == 2
                and all(received >= 1 << 20 for received in tcp_received(process.pid).values())
            ),
            "both local workers to receive data",
        )
        workers = _descendants(process.pid)
        assert len(workers) >= 2
    finally:
        process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=40)
    assert "Traceback" not in stderr
    assert process.returncode == 143
    data = json.loads(stdout)
    assert data["outcome"] == "Interrupted"
    assert data["reason"] == "stopped by SIGTERM"
    assert data["figures"]["batches"] > 0
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert alive == [], f"orphaned workers: {alive}"
    assert _workers_of_session(data["runId"]) == []


def test_local_expect_exits_3_naming_the_missed_expectation() -> None:
    result = run(
        "local", "--workers", "2", "--duration", "1",
        "--expect", "minThroughputBytesPerSecond=1e12", "--expect", "maxLostBatches=0",
        "--json",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "missed minThroughputBytesPerSecond" in result.stderr
    assert "maxLostBatches" not in result.stderr  # it held
    data = json.loads(result.stdout)
    assert data["outcome"] == "Complete"
    assert data["passed"] is False
    checks = {item["expectation"]: item for item in data["expectations"]}
    assert checks["minThroughputBytesPerSecond"]["passed"] is False
    assert checks["minThroughputBytesPerSecond"]["expected"] == 1e12
    assert checks["maxLostBatches"]["passed"] is True
    # An expectation that holds exits 0.
    held = run("local", "--workers", "2", "--duration", "1", "--expect", "minCompressionRatio=1.2")
    assert held.returncode == 0, held.stderr
    assert "minCompressionRatio" in held.stdout


def test_local_three_samples_keep_three_results_and_a_confidence_interval() -> None:
    from w5xde.contract.results import RESULT_ADAPTER, SampleSet

    result = run(
        "local", "--workers", "2", "--duration", "1", "--samples", "3", "--json", timeout=120
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = RESULT_ADAPTER.validate_json(result.stdout)
    assert isinstance(document, SampleSet)
    assert [sample.outcome for sample in document.samples] == ["Complete"] * 3
    assert len({sample.run_id for sample in document.samples}) == 3
    throughput = document.summary["throughputBytesPerSecond"]
    assert throughput.samples == 3
    values = [sample.figures.throughput_bytes_per_second for sample in document.samples]
    assert throughput.min == min(values)
    assert abs(throughput.mean - sum(values) / 3) < 1
    assert throughput.ci95 > 0


def test_worker_with_bad_config_exits_2_naming_the_field() -> None:
    env = dict(
        os.environ,
        W5XDE_CONFIG=json.dumps({"name": "w-0", "clusterId": "c", "compression": {"level": 99}}),
        W5XDE_CLUSTER_KEY="k" * 32,
    )
    result = run("worker", env=env)
    assert result.returncode == 2
    assert "compression.level" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_without_a_key_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("W5XDE_")}
    env["W5XDE_CONFIG"] = json.dumps({"name": "w-0", "clusterId": "c"})
    result = run("worker", env=env)
    assert result.returncode == 2
    assert "W5XDE_CLUSTER_KEY" in result.stderr


def test_two_worker_processes_serve_probes_and_metrics_and_stop_on_sigterm() -> None:
    from w5xde.local.run import free_ports

    stream_ports = free_ports(2)
    metrics_ports = free_ports(2)
    peers = [f"127.0.0.1:{port}" for port in stream_ports]
    processes = []
    for index in range(2):
        config = {
            "name": f"pod-{index}",
            "clusterId": "probe-test",
            "listenHost": "127.0.0.1",
            "metricsPort": metrics_ports[index],
            "peers": peers,
            "workload": {"batchBytes": 8192},
        }
        env = dict(os.environ, W5XDE_CONFIG=json.dumps(config), W5XDE_CLUSTER_KEY="p" * 32)
        processes.append(
            subprocess.Popen(
                [*W5XDE, "worker", "--report-interval", "0.5"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        base = f"http://127.0.0.1:{metrics_ports[0]}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.2)
        # The metric counts batches as they are verified: wait for the first ones.
        wait_for(lambda: received_batches(base) > 0, "w5xde_received_batches_total > 0")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=30) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        final = json.loads(stdout.strip().splitlines()[-1])
        assert final["final"] is True
        assert final["report"]["lostBatches"] == 0
        assert final["report"]["batches"] > 0


def test_local_json_stream_prints_the_configuration_then_intervals_then_the_result() -> None:
    from w5xde.contract.results import RESULT_ADAPTER, RunResult

    result = run("local", "--workers", "2", "--duration", "2", "--json-stream")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["kind"] == "Configuration"
    assert lines[0]["configuration"]["workers"] == 2
    intervals = lines[1:-1]
    assert intervals
    assert all(line["kind"] == "Interval" for line in intervals)
    assert [line["seconds"] for line in intervals] == sorted(line["seconds"] for line in intervals)
    final = RESULT_ADAPTER.validate_python(lines[-1])
    assert isinstance(final, RunResult)
    assert final.run_id == intervals[0]["runId"]
