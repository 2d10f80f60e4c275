"""Publishes this worker's own `status.workers.<name>` entry on its CompressionCluster.

A daemon thread, so the data path never waits on the API server: every
`interval_seconds` (with jitter, so a hundred workers do not patch in lock-step) it
JSON-merge-patches its one key on the `status` subresource.  Errors back off
exponentially.  The patch response carries the whole object, which is how a worker
learns that `kubectl scale` changed `spec.workers`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from w5xde.api.v1alpha1 import GROUP, PLURAL, VERSION, WorkerReport
from w5xde.worker.config import StatusTarget

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

logger = logging.getLogger("w5xde.status")

MERGE_PATCH = "application/merge-patch+json"
JITTER = 0.2
MAX_BACKOFF_SECONDS = 120.0
BACKOFF_FLOOR_SECONDS = 30.0
REQUEST_TIMEOUT = (5.0, 10.0)


def in_cluster_client() -> ApiClient:
    """The pod's service-account credentials (token refreshed as the kubelet rotates it)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def status_patch(worker_name: str, report: WorkerReport, now: datetime) -> dict[str, Any]:
    """Only this worker's key; `stale: false` comes along and clears the operator's flag."""
    entry = report.model_copy(
        update={"last_report": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "stale": False}
    )
    return {"status": {"workers": {worker_name: entry.model_dump(mode="json", by_alias=True)}}}


def next_delay(interval: float, failures: int, rng: random.Random) -> float:
    """The interval with ±20 % jitter; doubled per consecutive failure, capped.

    The cap stays near the interval (the operator calls a worker stale after three
    silent intervals) while still easing an API server that is in trouble.
    """
    base = interval * float(1 << min(failures, 16))
    cap = min(MAX_BACKOFF_SECONDS, max(2 * interval, BACKOFF_FLOOR_SECONDS))
    return min(base, max(cap, interval)) * rng.uniform(1 - JITTER, 1 + JITTER)


class StatusPublisher:
    """Publishes `report()` every interval; calls `on_spec_workers(n)` on the first
    response and whenever `spec.workers` changes."""

    def __init__(
        self,
        target: StatusTarget,
        worker_name: str,
        report: Callable[[], WorkerReport],
        on_spec_workers: Callable[[int], None],
        *,
        api_client_factory: Callable[[], ApiClient] = in_cluster_client,
    ) -> None:
        self.target = target
        self.worker_name = worker_name
        self.report = report
        self.on_spec_workers = on_spec_workers
        self.api_client_factory = api_client_factory
        self.published = 0
        self.failures = 0
        self._spec_workers: int | None = None
        self._api: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()  # noqa: S311 - jitter, not secrets

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"status-publisher-{self.worker_name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and publish one last time, so the final figures are kept."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.publish_once()

    def publish_once(self) -> bool:
        """One patch; False (and logged) on any error, never raised to the caller."""
        with self._lock:
            try:
                body = status_patch(self.worker_name, self.report(), datetime.now(UTC))
                response = self._custom_api().patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    self.target.namespace,
                    PLURAL,
                    self.target.cluster,
                    body,
                    _content_type=MERGE_PATCH,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except Exception as error:  # noqa: BLE001 - any failure only delays the next report
                self.failures += 1
                level = logging.WARNING if self.failures == 1 else logging.DEBUG
                logger.log(level, "status publish failed (%d in a row): %s", self.failures, error)
                return False
            if self.failures:
                logger.warning("status publish recovered after %d failures", self.failures)
            self.failures = 0
            self.published += 1
        self._notice_spec(response)
        return True

    def _custom_api(self) -> Any:
        if self._api is None:
            from kubernetes import client

            self._api = client.CustomObjectsApi(self.api_client_factory())
        return self._api

    def _notice_spec(self, response: Any) -> None:
        try:
            workers = int(response["spec"]["workers"])
        except (KeyError, TypeError, ValueError):
            return
        if workers == self._spec_workers:
            return
        self._spec_workers = workers
        try:
            self.on_spec_workers(workers)
        except Exception:  # a callback bug must not stop the reports
            logger.exception("on_spec_workers(%d) failed", workers)

    def _run(self) -> None:
        # The first report goes out soon, so a new worker shows up (and learns the
        # current worker count) without waiting a whole interval.
        delay = self._rng.uniform(0, min(1.0, self.target.interval_seconds))
        while not self._stop.wait(delay):
            self.publish_once()
            delay = next_delay(self.target.interval_seconds, self.failures, self._rng)
