"""httpGet and tcpSocket probes from the host to the pod IP (the bridge routes them)."""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from typing import Any


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"probe port {value!r} is not a named port of the container")


def check(probe: dict[str, Any], container: dict[str, Any], pod_ip: str) -> bool:
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            action = probe["httpGet"]
            host = action.get("host") or pod_ip
            port = _port(action["port"], container)
            connection_type = (
                http.client.HTTPSConnection
                if str(action.get("scheme", "HTTP")).upper() == "HTTPS"
                else http.client.HTTPConnection
            )
            connection = connection_type(host, port, timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
                connection.request("GET", action.get("path") or "/", headers=headers)
                status = connection.getresponse().status
            finally:
                connection.close()
            return 200 <= status < 400
        if "tcpSocket" in probe:
            action = probe["tcpSocket"]
            port = _port(action["port"], container)
            with socket.create_connection((action.get("host") or pod_ip, port), timeout=timeout):
                return True
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return True  # exec and grpc probes are not run: treated as passing


@dataclass
class ProbeState:
    """Success/failure thresholds over time, as the kubelet's prober counts them."""

    probe: dict[str, Any]
    started_at: float
    result: bool
    successes: int = 0
    failures: int = 0
    last_run: float = 0.0

    def due(self, now: float) -> bool:
        if now - self.started_at < float(self.probe.get("initialDelaySeconds") or 0):
            return False
        return now - self.last_run >= float(self.probe.get("periodSeconds") or 10)

    def record(self, ok: bool, now: float) -> bool:
        self.last_run = now
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold") or 1):
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.probe.get("failureThreshold") or 3):
                self.result = False
        return self.result


def new_state(probe: dict[str, Any] | None, initial: bool) -> ProbeState | None:
    if probe is None:
        return None
    return ProbeState(probe=probe, started_at=time.monotonic(), result=initial)
