"""The agent: keeps the nodes alive, hands every pod bound to them to a pod worker.

A watch on all pods (the test bed's nodes are the only nodes) drives the workers;
a full re-list after each watch window catches anything a watch missed. The
hosts files of all pods are refreshed from the same pod cache.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kubernetes import watch

from testbed import network
from testbed.nodeagent import hosts, nodes
from testbed.nodeagent.ipam import Ipam
from testbed.nodeagent.kubeapi import Kube
from testbed.nodeagent.podworker import PodWorker
from testbed.nodeagent.runtime import ContainerRuntime

log = logging.getLogger("nodeagent")

LEASE_RENEW_SECONDS = 10.0
STATUS_REPORT_SECONDS = 30.0
WATCH_SECONDS = 30


class Agent:
    def __init__(
        self,
        kube: Kube,
        node_names: tuple[str, ...],
        runtime: ContainerRuntime,
        first_node_index: int = 0,
    ) -> None:
        self.kube = kube
        self.nodes = node_names
        self.runtime = runtime
        # A second agent (the image mode) numbers its nodes after the launcher's.
        self.first_node_index = first_node_index
        self.ipam = Ipam(node_names, first_node_index)
        self._workers: dict[str, PodWorker] = {}
        self._pods: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._entries: dict[str, list[tuple[str, list[str]]]] = {}

    # pods
    def hosts_for(self, pod: dict[str, Any], pod_ip: str) -> str:
        return hosts.hosts_file(pod, pod_ip, self._entries)

    def worker_finished(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        uid = str(metadata["uid"])
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = pod
            worker = self._workers.get(uid)
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        if worker is not None:
            if kind == "DELETED":
                worker.forget()
            else:
                worker.update(pod)
            return
        if kind == "DELETED" or self._stopping.is_set():
            return
        if metadata.get("deletionTimestamp"):
            # Bound here but never started (or started by an agent that died): nothing to stop.
            self.kube.delete_pod_now(metadata["namespace"], metadata["name"], uid)
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self, pod, self.runtime)
        with self._lock:
            self._workers[uid] = worker
        log.info(
            "pod %s/%s bound to %s",
            metadata["namespace"],
            metadata["name"],
            pod["spec"]["nodeName"],
        )
        worker.start()

    def _relist(self) -> str:
        items, resource_version = self.kube.list_pods()
        seen = set()
        for pod in items:
            seen.add(pod["metadata"]["uid"])
            self._handle("MODIFIED", pod)
        with self._lock:
            for uid in list(self._pods):
                if uid not in seen:
                    self._pods.pop(uid)
            orphaned = [w for uid, w in self._workers.items() if uid not in seen]
        for worker in orphaned:
            worker.forget()
        return resource_version

    def _watch_pods(self) -> None:
        while not self._stopping.is_set():
            try:
                resource_version = self._relist()
                stream = watch.Watch().stream(
                    self.kube.core_api.list_pod_for_all_namespaces,
                    resource_version=resource_version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=False,
                )
                for event in stream:
                    if self._stopping.is_set():
                        break
                    raw = event.get("raw_object") or {}
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and "metadata" in raw:
                        self._handle(str(event["type"]), raw)
            except Exception:
                log.exception("pod watch failed; re-listing")
                time.sleep(1.0)

    # nodes and hosts
    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(LEASE_RENEW_SECONDS):
            try:
                for name in self.nodes:
                    nodes.renew_lease(self.kube, name)
                if time.monotonic() - last_status >= STATUS_REPORT_SECONDS:
                    for name in self.nodes:
                        nodes.report_status(self.kube, name)
                    last_status = time.monotonic()
            except Exception:
                log.exception("node heartbeat failed")

    def _refresh_hosts(self) -> None:
        while not self._stopping.wait(1.0):
            try:
                services = self.kube.headless_services()
                with self._lock:
                    pods = list(self._pods.values())
                    workers = list(self._workers.values())
                self._entries = hosts.dns_entries(pods, services)
                for worker in workers:
                    if worker.pod_ip and worker.netns:
                        network.write_hosts(worker.uid, self.hosts_for(worker.pod, worker.pod_ip))
            except Exception:
                log.exception("hosts refresh failed")

    def run(self) -> None:
        network.ensure_bridge()
        for index, name in enumerate(self.nodes):
            nodes.register(self.kube, name, self.first_node_index + index)
            nodes.renew_lease(self.kube, name)
        log.info("nodes registered: %s", ", ".join(self.nodes))
        for target in (self._heartbeat, self._refresh_hosts):
            threading.Thread(target=target, name=target.__name__, daemon=True).start()
        self._watch_pods()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop every pod's processes (the control plane goes down next, so no API calls)."""
        self._stopping.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.forget()
        deadline = time.monotonic() + grace_seconds
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
