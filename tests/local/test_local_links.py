"""`w5xde local` with real worker processes: every link timed, link bytes add up."""

from __future__ import annotations

import json
import math
import subprocess
import sys

W5XDE = [sys.executable, "-m", "w5xde"]


def _local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*W5XDE, "local", "--workers", "3", "--duration", "3", "--topology", "all-to-all",
         "--batch-bytes", "16384", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_local_reports_every_link_with_a_round_trip_and_bytes_that_add_up() -> None:
    result = _local("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    links = data["links"]
    pairs = {(link["from"], link["to"]) for link in links}
    names = {f"local-{index}" for index in range(3)}
    assert pairs == {(a, b) for a in names for b in names if a != b}
    for link in links:
        assert 0 < link["rtt_p50_s"] <= link["rtt_p99_s"] < 5.0, link
        assert math.isfinite(link["rtt_p99_s"])
        assert link["raw_bytes_per_s"] > 0
        assert link["lost_batches"] == 0
        # Every local worker runs on this machine.
        assert link["shared_node"] is True
    # What the links delivered (acknowledged) is what the workers received and verified.
    delivered = sum(link["raw_bytes"] for link in links)
    received = sum(node["raw_bytes"] for node in data["nodes"])
    # (All workers drain before they close: at most a few ACKs go unread.)
    assert 0 < delivered <= received <= delivered * 1.01


def test_local_table_prints_a_row_per_link() -> None:
    result = _local()
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "RTT p99 ms" in line)
    rows = result.stdout.split(header)[1].strip().splitlines()
    assert len(rows) == 6
    for row in rows:
        cells = row.split()
        assert cells[0] != cells[1]
        assert float(cells[7]) > 0  # RTT p50 in ms
        assert cells[-1] == "yes"
