"""`make bench-status`: the reporting path at 10, 100 and 1,000 workers on the real API server.

The test bed's kube-apiserver and etcd, the real operator (`w5xde operator`) folding,
and simulated workers (`status_sim.py`: the product's own report endpoint on each
pod's IP; only the data plane is simulated).  The pods are real API objects made by
the real StatefulSet controller and scheduler, placed on KWOK nodes, which set them
Running with loopback IPs; nothing runs them.  Each row runs `--duration` seconds
once every worker is folded, then stops the operator for a baseline of the same
cluster without reporting.  Prints a table and writes JSON (`--json PATH`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from testbed import controlplane  # noqa: E402
from testbed.paths import ADMIN_KUBECONFIG, BIN_DIR  # noqa: E402
from w5xde.contract.figures import percentile  # noqa: E402

W5XDE = str(Path(sys.executable).with_name("w5xde"))
KWOK_NODES = 10
KWOK_POD_CIDR = "127.64.0.1/16"
KWOK_NODE_IP = "127.63.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRITE_VERBS = {"PATCH", "UPDATE", "APPLY", "POST", "PUT", "DELETE"}
BASELINE_SECONDS = 20.0


@dataclass
class Row:
    workers: int
    interval_s: float
    duration_s: float
    reports_folded_per_s: float = 0.0
    fold_lag_p50_s: float = 0.0
    fold_lag_p99_s: float = 0.0
    fold_lag_max_s: float = 0.0
    folds_observed: int = 0
    incomplete_folds: int = 0
    api_writes_per_s: float = 0.0
    api_errors: int = 0
    cr_status_bytes: int = 0
    cr_object_bytes: int = 0
    etcd_db_growth_bytes: int = 0
    apiserver_cpu_s: float = 0.0
    apiserver_baseline_cpu_s: float = 0.0
    apiserver_reporting_cpu_s_per_interval: float = 0.0
    operator_cpu_s: float = 0.0
    operator_rss_bytes: int = 0
    pods_ready_s: float = 0.0
    all_folded_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def env() -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(ADMIN_KUBECONFIG)}


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(BIN_DIR / "kubectl"), *args],
        input=input,
        capture_output=True,
        text=True,
        env=env(),
        check=False,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def wait_for(predicate: Any, timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def process_by_exe(name: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "exe")).name == name:
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError(f"no running {name}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def etcd_db_size() -> int:
    pid = process_by_exe("etcd")
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    data_dir = next(a.split(b"=", 1)[1] for a in args if a.startswith(b"--data-dir="))
    return (Path(data_dir.decode()) / "member" / "snap" / "db").stat().st_size


def api_counters() -> tuple[int, int]:
    """(writes, errors) the API server counted for w5xde.io objects so far."""
    writes = errors = 0
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        if not line.startswith("apiserver_request_total{") or 'group="w5xde.io"' not in line:
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(
            part.split("=", 1)
            for part in labels[labels.index("{") + 1 : -1].split(",")
            if "=" in part
        )
        verb = fields.get("verb", "").strip('"')
        code = fields.get("code", "").strip('"')
        count = int(float(value))
        if verb in WRITE_VERBS:
            writes += count
        if code == "409" or code.startswith("5"):
            errors += count
    return writes, errors


def operator_fold_errors(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith('w5xde_operator_errors_total{stage="fold"}')
    )


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class StatusWatcher(threading.Thread):
    """Watches one CompressionCluster; records each status version as it arrives."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(daemon=True)
        self.namespace, self.name = namespace, name
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        process = subprocess.Popen(
            [str(BIN_DIR / "kubectl"), "get", "cc", self.name, "-n", self.namespace,
             "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, text=True, env=env(),
        )  # fmt: skip
        assert process.stdout is not None
        buffer = ""
        depth = 0
        try:
            for line in process.stdout:
                if self.stop.is_set():
                    break
                buffer += line
                depth += line.count("{") - line.count("}")
                if depth == 0 and buffer.strip():
                    event = json.loads(buffer)
                    buffer = ""
                    self.samples.append((time.time(), event["object"].get("status") or {}))
        finally:
            process.terminate()
            process.wait(10)


def start_kwok(kwok: str, log: Path) -> subprocess.Popen[bytes]:
    stages = sorted(str(path) for path in (Path(kwok).parent / "stages").glob("*.yaml"))
    if not stages:
        raise RuntimeError(f"no kwok stages next to {kwok}: rebuild it with `make bench-status`")
    process = subprocess.Popen(
        [kwok, f"--kubeconfig={ADMIN_KUBECONFIG}", "--manage-all-nodes=false",
         "--manage-nodes-with-label-selector=type=kwok", f"--cidr={KWOK_POD_CIDR}",
         f"--node-ip={KWOK_NODE_IP}", "--server-address=",
         *(f"--config={stage}" for stage in stages)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env(),
    )  # fmt: skip
    for index in range(KWOK_NODES):
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-{index}",
                "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-{index}"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake",
                                 "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                       "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"}},
        }  # fmt: skip
        kubectl("apply", "-f", "-", input=json.dumps(node))

    def ready() -> bool:
        nodes = json.loads(kubectl("get", "nodes", "-l", "type=kwok", "-o", "json"))["items"]
        return len(nodes) == KWOK_NODES and all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
            for n in nodes
        )

    wait_for(ready, 120, "KWOK nodes Ready")
    return process


def stop(process: subprocess.Popen[Any] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def run_row(workers: int, interval: float, duration: float, logs: Path, metrics_port: int) -> Row:
    row = Row(workers=workers, interval_s=interval, duration_s=duration)
    namespace = f"bench-status-{workers}"
    name = "scale"
    kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=300s")
    kubectl("create", "namespace", namespace)
    operator = subprocess.Popen(
        [W5XDE, "operator", "--namespace", namespace, "--standalone", "--log-mode", "normal",
         "--liveness", "0", "--metrics-port", str(metrics_port),
         "--worker-image", "localhost/w5xde-worker:bench"],
        stdout=(logs / f"operator-{workers}.log").open("w"), stderr=subprocess.STDOUT, env=env(),
    )  # fmt: skip
    sims: list[subprocess.Popen[bytes]] = []
    watcher = StatusWatcher(namespace, name)
    try:
        manifest = {
            "apiVersion": "w5xde.io/v1alpha1",
            "kind": "CompressionCluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "workers": workers,
                "statusIntervalSeconds": int(interval),
                "spreadAcrossNodes": False,
                "nodeSelector": {"type": "kwok"},
                "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists",
                                 "effect": "NoSchedule"}],
            },
        }  # fmt: skip
        applied = time.monotonic()
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait_for(
            lambda: kubectl("get", "secret", f"{name}-key", "-n", namespace, check=False),
            60,
            "the cluster key Secret",
        )
        shards = max(1, min(4, workers // 100))
        for shard in range(shards):
            sims.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "bench" / "status_sim.py"),
                        "--namespace",
                        namespace,
                        "--cluster",
                        name,
                        "--kubectl",
                        str(BIN_DIR / "kubectl"),
                        "--shard",
                        str(shard),
                        "--shards",
                        str(shards),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(logs / f"sim-{workers}-{shard}.log").open("w"),
                    env=env(),
                )
            )

        def pods_running() -> bool:
            items = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
            running = [p for p in items if (p.get("status") or {}).get("podIP")]
            return len(running) >= workers

        wait_for(pods_running, 900, f"{workers} pods Running on KWOK nodes", every=3)
        row.pods_ready_s = round(time.monotonic() - applied, 1)

        def all_folded() -> bool:
            status = json.loads(kubectl("get", "cc", name, "-n", namespace, "-o", "json")).get(
                "status", {}
            )
            return bool(status.get("reporting", {}).get("workersReporting") == workers)

        wait_for(all_folded, 300, f"all {workers} workers folded", every=1)
        row.all_folded_s = round(time.monotonic() - applied, 1)

        apiserver = process_by_exe("kube-apiserver")
        writes0, errors0 = api_counters()
        fold_errors0 = operator_fold_errors(metrics_port)
        db0 = etcd_db_size()
        api_cpu0, op_cpu0 = cpu_seconds(apiserver), cpu_seconds(operator.pid)
        watcher.start()
        time.sleep(duration)
        watcher.stop.set()
        api_cpu1, op_cpu1 = cpu_seconds(apiserver), cpu_seconds(operator.pid)
        writes1, errors1 = api_counters()
        fold_errors1 = operator_fold_errors(metrics_port)
        row.etcd_db_growth_bytes = etcd_db_size() - db0
        row.operator_rss_bytes = rss_bytes(operator.pid)
        row.apiserver_cpu_s = round(api_cpu1 - api_cpu0, 2)
        row.operator_cpu_s = round(op_cpu1 - op_cpu0, 2)
        row.api_writes_per_s = round((writes1 - writes0) / duration, 2)
        row.api_errors = (errors1 - errors0) + (fold_errors1 - fold_errors0)
        obj = json.loads(kubectl("get", "cc", name, "-n", namespace, "-o", "json"))
        row.cr_status_bytes = len(json.dumps(obj.get("status") or {}, separators=(",", ":")))
        row.cr_object_bytes = len(json.dumps(obj, separators=(",", ":")))

        lags, folded, seen = [], 0, set()
        for observed, status in watcher.samples:
            reporting = status.get("reporting") or {}
            stamp = reporting.get("foldedAt")
            if not stamp or stamp in seen or not reporting.get("oldestReportAt"):
                continue
            seen.add(stamp)
            lags.append(observed - parse_rfc3339(reporting["oldestReportAt"]))
            folded += int(reporting.get("workersReporting") or 0)
            if reporting.get("workersReporting") != workers:
                row.incomplete_folds += 1
        row.folds_observed = len(lags)
        row.reports_folded_per_s = round(folded / duration, 1)
        row.fold_lag_p50_s = round(percentile(sorted(lags), 0.5), 3)
        row.fold_lag_p99_s = round(percentile(sorted(lags), 0.99), 3)
        row.fold_lag_max_s = round(max(lags, default=0.0), 3)

        # Baseline: the same cluster and pods, nobody folding.
        stop(operator)
        base0 = cpu_seconds(apiserver)
        time.sleep(BASELINE_SECONDS)
        row.apiserver_baseline_cpu_s = round(
            (cpu_seconds(apiserver) - base0) * duration / BASELINE_SECONDS, 2
        )
        reporting_per_s = max(0.0, (row.apiserver_cpu_s - row.apiserver_baseline_cpu_s) / duration)
        row.apiserver_reporting_cpu_s_per_interval = round(reporting_per_s * interval, 3)
    finally:
        watcher.stop.set()
        for sim in sims:
            stop(sim)
        stop(operator)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return row


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'workers':>7} {'folded/s':>9} {'lag p50':>8} {'lag p99':>8} {'writes/s':>9} "
        f"{'errors':>6} {'status B':>9} {'etcd +B':>9} {'api cpu':>8} {'api/intv':>9} "
        f"{'op cpu':>7} {'op RSS MB':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.workers:>7} {r.reports_folded_per_s:>9.1f} {r.fold_lag_p50_s:>8.2f} "
            f"{r.fold_lag_p99_s:>8.2f} {r.api_writes_per_s:>9.2f} {r.api_errors:>6} "
            f"{r.cr_status_bytes:>9} {r.etcd_db_growth_bytes:>9} {r.apiserver_cpu_s:>8.2f} "
            f"{r.apiserver_reporting_cpu_s_per_interval:>9.3f} {r.operator_cpu_s:>7.2f} "
            f"{r.operator_rss_bytes / 1e6:>9.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="10,100,1000", help="comma-separated row sizes")
    parser.add_argument("--interval", type=float, default=10.0, help="statusIntervalSeconds")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per row")
    parser.add_argument("--kwok", required=True, help="the kwok binary")
    parser.add_argument("--json", default="bench/status-results.json")
    args = parser.parse_args()
    try:
        sizes = [int(part) for part in args.workers.split(",")]
    except ValueError:
        print("bench-status: --workers must be comma-separated integers", file=sys.stderr)
        return 2
    if any(not 1 <= size <= 1000 for size in sizes) or args.duration <= 0:
        print("bench-status: each row is 1..1000 workers; --duration > 0", file=sys.stderr)
        return 2
    logs = ROOT / ".testbed" / "bench-status"
    logs.mkdir(parents=True, exist_ok=True)
    controlplane.acquire()
    kwok = None
    rows: list[Row] = []
    try:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        kwok = start_kwok(args.kwok, logs / "kwok.log")
        for index, size in enumerate(sizes):
            rows.append(run_row(size, args.interval, args.duration, logs, 19100 + index))
            print_table(rows[-1:] if index else rows)
    finally:
        kubectl("delete", "nodes", "-l", "type=kwok", "--wait=false", check=False)
        stop(kwok)
        controlplane.release()
    print()
    print_table(rows)
    Path(args.json).write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
