"""Real network namespaces on a bridge for the worker tests (prefix `w5t-`, 10.231.0.0/24).

Each namespace gets a veth whose host end sits on the bridge `w5t-br0`; workers run
inside with `ip netns exec`, so every one has its own network stack and sysctls.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PREFIX = "w5t-"
BRIDGE = "w5t-br0"
SUBNET = "10.231.0"
HOST_ADDRESS = f"{SUBNET}.1"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def cleanup_stale() -> None:
    """Remove every namespace and link with our prefix (also from crashed runs)."""
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            run("ip", "netns", "del", name, check=False)
    links = json.loads(run("ip", "-j", "link", "show", check=False).stdout or "[]")
    for link in links:
        if link.get("ifname", "").startswith(("w5t", PREFIX)):
            run("ip", "link", "del", link["ifname"], check=False)


@dataclass
class Namespace:
    name: str
    address: str
    host_veth: str

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name, *args, check=check)


class Bed:
    """`count` namespaces on one bridge."""

    def __init__(self, count: int) -> None:
        cleanup_stale()
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        self.namespaces: list[Namespace] = []
        for index in range(count):
            name = f"{PREFIX}{index}"
            host_veth, inner = f"w5t{index}h", f"w5t{index}c"
            run("ip", "netns", "add", name)
            run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", inner)
            run("ip", "link", "set", inner, "netns", name)
            run("ip", "link", "set", host_veth, "master", BRIDGE)
            run("ip", "link", "set", host_veth, "up")
            namespace = Namespace(name, f"{SUBNET}.{10 + index}", host_veth)
            namespace.exec("ip", "link", "set", "lo", "up")
            namespace.exec("ip", "link", "set", inner, "name", "eth0")
            namespace.exec("ip", "addr", "add", f"{namespace.address}/24", "dev", "eth0")
            namespace.exec("ip", "link", "set", "eth0", "up")
            self.namespaces.append(namespace)

    def close(self) -> None:
        cleanup_stale()


@dataclass
class WorkerProcess:
    """A `w5xde worker` inside a namespace, with its JSON report lines collected."""

    name: str
    process: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append(json.loads(text))

    def _follow_errors(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            self.stderr.append(text)

    @property
    def latest(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else {"report": {}, "extras": {}}

    def report(self) -> dict[str, Any]:
        return dict(self.latest.get("report", {}))

    def extras(self) -> dict[str, Any]:
        return dict(self.latest.get("extras", {}))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> dict[str, Any]:
        """SIGTERM, wait, and return the final report line."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Where each thread is (the worker dumps its stacks on SIGUSR1), then gone.
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.process.kill()
            self.process.wait(10)
            for reader in self.readers:
                reader.join(5)
            raise AssertionError(
                f"{self.name} did not stop within {timeout} s of SIGTERM; stderr:\n"
                + "".join(self.stderr[-200:])
            ) from None
        # The readers end at the pipes' EOF, once every line the worker printed is in.
        for reader in self.readers:
            reader.join(timeout)
        finals = [line for line in self.lines if line.get("final")]
        assert finals, f"{self.name} printed no final report; stderr: {''.join(self.stderr)}"
        return finals[-1]


def stop_all(workers: list[WorkerProcess]) -> list[dict[str, Any]]:
    """Stop together, as a cluster does, so every stream can drain into a live peer."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    return [worker.stop() for worker in workers]


def start_worker(
    namespace: Namespace,
    *,
    name: str,
    peers: list[str],
    key: str,
    cluster_id: str = "netns-test",
    extra: dict[str, Any] | None = None,
) -> WorkerProcess:
    config: dict[str, Any] = {
        "name": name,
        "clusterId": cluster_id,
        "metricsPort": 0,
        "peers": peers,
        "logMode": "normal",
        "workload": {"batchBytes": 16384},
        "compression": {"level": 1},
    }
    config.update(extra or {})
    env = dict(os.environ, W5XDE_CONFIG=json.dumps(config), W5XDE_CLUSTER_KEY=key)
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            namespace.name,
            sys.executable,
            "-m",
            "w5xde",
            "worker",
            "--report-interval",
            "0.2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = WorkerProcess(name, process)
    worker.readers = [
        threading.Thread(target=worker._follow, daemon=True),
        threading.Thread(target=worker._follow_errors, daemon=True),
    ]
    for reader in worker.readers:
        reader.start()
    return worker


def wait_for(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
