"""One loop folds every cluster's worker reports into its status, once per interval.

Not a kopf timer: a timer (or daemon) makes kopf put a finalizer on every cluster, and
an uninstalled operator would then leave clusters, and their namespaces, stuck in
Terminating.  The loop reads kopf indexes (clusters, worker pods, StatefulSets: no
API calls to list them), pulls each worker's report from its pod, folds, and writes
one status patch per cluster per interval.  Only the replica kopf peering makes
active folds (`PeeringGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    CompressionClusterSpec,
    CompressionClusterStatus,
    Phase,
    parse_status,
    status_patch,
)
from w5xde.contract.certificates import Authority, CertificateRequestError, sign_request
from w5xde.operator import metrics
from w5xde.operator.apply import Runtime, apply_desired, desired_for
from w5xde.operator.certificate_authority import ensure_authority, read_authority
from w5xde.operator.key_secret import (
    completion_patch,
    key_of,
    key_problem,
    previous_key_of,
    rotation_patch,
)
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Event,
    EventType,
    Observation,
    PodState,
    Problem,
    Reason,
)
from w5xde.operator.observe import pod_states, statefulset_state
from w5xde.operator.peering_gate import PeeringGate
from w5xde.operator.reconcile import spec_problems
from w5xde.operator.report_client import ReportClient, report_timeout
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.secret import new_cluster_key
from w5xde.operator.status_folding import completed_status, fold_status

logger = logging.getLogger("w5xde.operator")

ClusterKey = tuple[str, str]  # (namespace, name)

#: How often the loop looks for clusters that are due (each has its own interval).
TICK_SECONDS = 1.0
#: While a cluster is coming up (more workers answer each time), fold this often, so
#: the first figures show within seconds rather than a whole interval.
STARTING_FOLD_SECONDS = 2.0
#: ...but a cluster none of whose workers ever answers goes back to its interval.
STARTING_WINDOW_SECONDS = 120.0
#: A cluster key Secret is read again after this long (every fold during a rotation).
KEY_CACHE_SECONDS = 300.0


def cluster_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the loop keeps of a CompressionCluster (a copy: kopf reuses its bodies)."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            key: copy.deepcopy(metadata.get(key))
            for key in ("name", "namespace", "uid", "generation", "resourceVersion", "annotations")
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _revision(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class ClusterMemory:
    """What the loop remembers of one cluster between folds."""

    uid: str
    ledger: Ledger | None = None
    last_heard: dict[str, float] = field(default_factory=dict)
    next_due: float = 0.0
    reported_last: int = 0  # reports pulled by the previous fold
    since: float = field(default_factory=time.monotonic)  # first seen by this loop
    seen_generations: tuple[int, int] = (0, 0)
    written: dict[str, Any] | None = None  # our last status patch's result
    #: The cluster's key Secret as last read or patched; None if absent or not its own.
    key_secret: dict[str, Any] | None = None
    key_problem: Problem | None = None
    key_read_at: float = float("-inf")
    authority: Authority | None = None
    ca_problem: Problem | None = None

    @property
    def key(self) -> bytes | None:
        return key_of(self.key_secret) if self.key_secret is not None else None

    @property
    def previous_key(self) -> bytes | None:
        """The key being rotated out, while a rotation is under way."""
        return previous_key_of(self.key_secret) if self.key_secret is not None else None


class FoldLoop:
    """Owns the per-cluster memory; `run()` until cancelled."""

    def __init__(self, runtime: Runtime, gate: PeeringGate, client: ReportClient) -> None:
        self.runtime = runtime
        self.gate = gate
        self.client = client
        self._memory: dict[ClusterKey, ClusterMemory] = {}
        self._wake = asyncio.Event()
        self.folds = 0

    def notice(self, key: ClusterKey, body: Mapping[str, Any]) -> None:
        """Called by the cluster index on every change: a new generation folds at once."""
        metadata = body.get("metadata") or {}
        status = body.get("status") or {}
        pair = (int(metadata.get("generation") or 0), int(status.get("observedGeneration") or 0))
        memory = self._memory.get(key)
        if memory is None or memory.seen_generations != pair:
            if memory is not None:
                memory.next_due = 0.0
            self._wake.set()

    async def run(
        self,
        clusters: Mapping[Any, Iterable[Any]],
        pods: Mapping[Any, Iterable[Any]],
        statefulsets: Mapping[Any, Iterable[Any]],
    ) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
                self._wake.clear()
                if not await self.gate.active():
                    self._memory.clear()  # a later takeover starts from the status
                    continue
                await self.fold_due(clusters, pods, statefulsets)
        finally:
            await self.client.close()

    async def fold_due(
        self,
        clusters: Mapping[Any, Iterable[Any]],
        pods: Mapping[Any, Iterable[Any]],
        statefulsets: Mapping[Any, Iterable[Any]],
    ) -> None:
        now = time.monotonic()
        present: dict[ClusterKey, dict[str, Any]] = {}
        for key in list(clusters):
            for body in clusters[key]:
                present[key] = body
        for gone in [key for key in self._memory if key not in present]:
            del self._memory[gone]
        due = []
        for key, body in present.items():
            memory = self._memory.get(key)
            uid = str(body["metadata"].get("uid"))
            if memory is None or memory.uid != uid:
                memory = self._memory[key] = ClusterMemory(uid=uid)
            if now >= memory.next_due:
                due.append((key, body, memory))
        if not due:
            return
        await asyncio.gather(
            *(
                self._fold_safely(
                    key,
                    body,
                    memory,
                    [dict(pod) for pod in pods[key]] if key in pods else [],
                    next(iter(statefulsets[key]), None) if key in statefulsets else None,
                )
                for key, body, memory in due
            )
        )

    async def _fold_safely(
        self,
        key: ClusterKey,
        body: dict[str, Any],
        memory: ClusterMemory,
        pods: list[dict[str, Any]],
        statefulset: dict[str, Any] | None,
    ) -> None:
        started = time.monotonic()
        try:
            await self.fold_cluster(key, body, memory, pods, statefulset)
        except ApiException as error:
            metrics.ERRORS.labels(stage="fold").inc()
            logger.warning("fold of %s/%s: API error %s %s", *key, error.status, error.reason)
            memory.next_due = time.monotonic() + 2.0
        except Exception:  # the loop must survive any one cluster's surprise
            metrics.ERRORS.labels(stage="fold").inc()
            logger.exception("fold of %s/%s failed", *key)
            memory.next_due = time.monotonic() + 5.0
        finally:
            metrics.FOLD_SECONDS.observe(time.monotonic() - started)

    async def fold_cluster(
        self,
        key: ClusterKey,
        body: dict[str, Any],
        memory: ClusterMemory,
        pods: list[dict[str, Any]],
        statefulset: dict[str, Any] | None,
    ) -> None:
        if memory.written is not None and _revision(memory.written) > _revision(body):
            body = {**body, "status": memory.written.get("status") or {}}
        status = parse_status(body.get("status"))
        metadata = body["metadata"]
        generation = int(metadata.get("generation") or 0)
        memory.seen_generations = (generation, status.observed_generation)
        try:
            spec = CompressionClusterSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            memory.next_due = time.monotonic() + 30.0  # the change handler reported it
            return
        memory.next_due = time.monotonic() + spec.status_interval_seconds
        if status.observed_generation == 0:
            return  # not reconciled yet: nothing to fold
        if status.observed_generation < generation:
            # The change handler is applying a new spec; folding now would judge the
            # new generation by the old run (and could end it). It wakes us when done.
            memory.next_due = time.monotonic() + STARTING_FOLD_SECONDS
            return
        cluster = ClusterRef.from_body(body)
        runtime = self.runtime
        if status.phase is Phase.COMPLETED and status.observed_generation >= generation:
            await asyncio.to_thread(self._ensure_stopped, cluster, spec, statefulset)
            problems, fatal = spec_problems(spec, runtime.context)
            observation = Observation(
                now=datetime.now(UTC),
                generation=generation,
                applied_generation=status.observed_generation,
                statefulset=statefulset_state(statefulset),
                pods=pod_states(pods),
                problems=problems,
                fatal=fatal,
            )
            await self._write(cluster, status, memory, completed_status(spec, status, observation))
            return

        problems, fatal = spec_problems(spec, runtime.context)
        await self._read_key(cluster, memory)
        await self._rotate_key(cluster, body, memory)
        if memory.key_problem is not None:
            problems = (*problems, memory.key_problem)
        if memory.ca_problem is not None and spec.security.operator_issued:
            problems = (*problems, memory.ca_problem)
        events: list[Event] = []
        if statefulset is None and fatal is None and not _refused(problems):
            existing = await asyncio.to_thread(
                runtime.kube.read_statefulset, cluster.namespace, cluster.statefulset
            )
            if existing is None:
                if spec.security.operator_issued:  # its pods mount the CA certificate
                    await asyncio.to_thread(ensure_authority, runtime.kube, cluster)
                statefulset = await asyncio.to_thread(
                    apply_desired, runtime.kube, desired_for(runtime, cluster, spec, None)
                )
                events.append(
                    Event(
                        EventType.NORMAL,
                        Reason.REPAIRED,
                        "re-created the missing worker StatefulSet",
                    )
                )
            else:
                statefulset = existing

        states = pod_states(pods)
        fetched = await self._fetch(cluster, memory, states, spec)
        # A pod without an address has not started: it will mount the new key anyway.
        await self._finish_rotation(cluster, memory, fetched, sum(1 for p in states if p.ip))
        if spec.security.operator_issued and await self._enroll(cluster, memory, states, fetched):
            memory.next_due = time.monotonic() + STARTING_FOLD_SECONDS
        clock = time.time()
        reported = {item.name for item in fetched if item.report is not None}
        for pod in states:
            if pod.name in reported or pod.name not in memory.last_heard:
                memory.last_heard[pod.name] = clock
        for name in [name for name in memory.last_heard if name not in {p.name for p in states}]:
            del memory.last_heard[name]
        starting = time.monotonic() - memory.since < STARTING_WINDOW_SECONDS
        if len(reported) > memory.reported_last or (starting and states and not reported):
            memory.next_due = time.monotonic() + min(
                STARTING_FOLD_SECONDS, spec.status_interval_seconds
            )
        memory.reported_last = len(reported)
        metrics.REPORTS.labels(result="ok").inc(len(reported))
        metrics.REPORTS.labels(result="failed").inc(len(fetched) - len(reported))

        if memory.ledger is None:
            memory.ledger = Ledger.from_status(status.retired_totals, status.totals)
        observation = Observation(
            now=datetime.now(UTC),
            generation=generation,
            applied_generation=status.observed_generation,
            statefulset=statefulset_state(statefulset),
            pods=states,
            problems=problems,
            fatal=fatal,
            fetched=tuple(fetched),
        )
        fold = fold_status(spec, status, observation, memory.ledger, memory.last_heard)
        await self._write(cluster, status, memory, fold.status)
        memory.ledger = fold.ledger
        self.folds += 1
        metrics.FOLDS.inc()
        await self._post_events(body, [*events, *fold.events])
        if fold.completed:
            await asyncio.to_thread(
                apply_desired,
                runtime.kube,
                desired_for(runtime, cluster, spec, statefulset, completed=True),
            )

    async def _fetch(
        self,
        cluster: ClusterRef,
        memory: ClusterMemory,
        states: tuple[PodState, ...],
        spec: CompressionClusterSpec,
    ) -> list[Any]:
        if not any(pod.ip for pod in states) or memory.key is None:
            return []
        return await self.client.fetch_all(
            states,
            memory.key,
            spec.workers,
            report_timeout(spec.status_interval_seconds),
            previous_key=memory.previous_key,
        )

    async def _enroll(
        self,
        cluster: ClusterRef,
        memory: ClusterMemory,
        states: tuple[PodState, ...],
        fetched: list[Any],
    ) -> int:
        """Sign the certificate requests in the reports; how many workers got one.

        A request is signed only for the name of the pod it was pulled from (by the
        pod's IP from the pod index), so no worker can obtain another's identity.
        """
        requests = [
            item
            for item in fetched
            if item.report is not None
            and item.report.certificate is not None
            and item.report.certificate.request
        ]
        if not requests or memory.key is None:
            return 0
        if memory.authority is None:
            memory.authority, problem = await asyncio.to_thread(
                read_authority, self.runtime.kube, cluster
            )
            if memory.authority is None:
                logger.warning("cluster %s has no usable CA yet: %s", cluster.cluster_id, problem)
                return 0
        by_name = {pod.name: pod for pod in states}
        signed = 0
        for item in requests:
            pod = by_name.get(item.name)
            if pod is None or not pod.ip:
                continue
            try:
                certificate = sign_request(
                    memory.authority,
                    item.report.certificate.request.encode(),
                    expected_name=pod.name,
                )
            except CertificateRequestError as error:
                metrics.CERTIFICATES.labels(result="refused").inc()
                logger.error("certificate request of %s refused: %s", pod.name, error)
                continue
            outcome, detail = await self.client.put_certificate(pod, memory.key, certificate)
            metrics.CERTIFICATES.labels(result=outcome).inc()
            if outcome == "issued":
                signed += 1
            else:
                logger.warning("certificate for %s not installed: %s %s", pod.name, outcome, detail)
        return signed

    async def _rotate_key(
        self, cluster: ClusterRef, body: Mapping[str, Any], memory: ClusterMemory
    ) -> None:
        """Start a rotation the cluster's annotation asks for (see key_secret)."""
        if memory.key_secret is None:
            return
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        patch = rotation_patch(annotations, memory.key_secret, new_cluster_key())
        if patch is None:
            return
        secret = await asyncio.to_thread(
            self.runtime.kube.patch_secret, cluster.namespace, cluster.key_secret, patch
        )
        memory.key_secret = secret
        logger.warning("cluster %s: cluster key rotation started", cluster.cluster_id)

    async def _finish_rotation(
        self, cluster: ClusterRef, memory: ClusterMemory, fetched: list[Any], workers: int
    ) -> None:
        """Drop the previous key once every worker reports it uses the new one."""
        if memory.key_secret is None or memory.previous_key is None:
            return
        fingerprints = [item.report.key_fingerprint for item in fetched if item.report is not None]
        patch = completion_patch(memory.key_secret, fingerprints, workers)
        if patch is None:
            return
        memory.key_secret = await asyncio.to_thread(
            self.runtime.kube.patch_secret, cluster.namespace, cluster.key_secret, patch
        )
        logger.warning("cluster %s: cluster key rotation done", cluster.cluster_id)

    async def _read_key(self, cluster: ClusterRef, memory: ClusterMemory) -> None:
        """The cluster key, re-read every few minutes; never one the cluster does not own."""
        cached = time.monotonic() - memory.key_read_at < KEY_CACHE_SECONDS
        settled = memory.ca_problem is None and memory.previous_key is None
        if memory.key is not None and settled and cached:
            return  # a problem or a rotation is looked at again every fold
        secret = await asyncio.to_thread(
            self.runtime.kube.read_secret, cluster.namespace, cluster.key_secret
        )
        memory.key_read_at = time.monotonic()
        memory.key_problem = key_problem(secret, cluster)
        usable = secret is not None and memory.key_problem is None and key_of(secret) is not None
        memory.key_secret = secret if usable else None
        memory.authority, memory.ca_problem = await asyncio.to_thread(
            read_authority, self.runtime.kube, cluster
        )

    async def _write(
        self,
        cluster: ClusterRef,
        current: CompressionClusterStatus,
        memory: ClusterMemory,
        folded: CompressionClusterStatus,
    ) -> None:
        if not changes(current, folded):
            return
        written = await asyncio.to_thread(
            self.runtime.kube.patch_cluster_status,
            cluster.namespace,
            cluster.name,
            status_patch(folded),
        )
        memory.written = written
        oldest = folded.reporting.oldest_report_at if "reporting" in folded.model_fields_set else ""
        if oldest:
            lag = time.time() - datetime.fromisoformat(oldest.replace("Z", "+00:00")).timestamp()
            metrics.FOLD_LAG_SECONDS.observe(max(0.0, lag))

    async def _post_events(self, body: Mapping[str, Any], events: list[Event]) -> None:
        for event in events:
            metrics.EVENTS.labels(reason=event.reason).inc()
            try:
                await asyncio.to_thread(
                    self.runtime.kube.post_event, body, event.type, event.reason, event.message
                )
            except ApiException as error:  # an Event is worth a try, not a failed fold
                logger.warning(
                    "cannot post Event %s: %s %s", event.reason, error.status, error.reason
                )

    def _ensure_stopped(
        self,
        cluster: ClusterRef,
        spec: CompressionClusterSpec,
        statefulset: Mapping[str, Any] | None,
    ) -> None:
        if statefulset and int((statefulset.get("spec") or {}).get("replicas", 0)) > 0:
            apply_desired(
                self.runtime.kube,
                desired_for(self.runtime, cluster, spec, statefulset, completed=True),
            )


def _refused(problems: Iterable[Any]) -> bool:
    """Problems that keep the workers from being started at all."""
    refusing = (Reason.UNSAFE_SYSCTLS, Reason.KEY_SECRET_NOT_OWNED, Reason.CA_SECRET_NOT_OWNED)
    return any(problem.reason in refusing for problem in problems)


#: Fields whose change alone is not worth a write (they move on every fold).
_VOLATILE = frozenset({"reporting"})


def changes(
    current: CompressionClusterStatus | Mapping[str, Any],
    folded: CompressionClusterStatus | Mapping[str, Any],
) -> bool:
    """Whether writing `folded` (the fields set on it) would change anything users read
    in `current` (condition transition times aside).  Both are typed statuses in the
    loop; the stored JSON shapes are accepted too."""
    before = (
        current.model_dump(mode="json", by_alias=True)
        if isinstance(current, CompressionClusterStatus)
        else current
    )
    after = status_patch(folded) if isinstance(folded, CompressionClusterStatus) else folded
    for key, value in after.items():
        if key in _VOLATILE:
            continue
        if key == "conditions":
            if _without_times(before.get(key)) != _without_times(value):
                return True
        elif before.get(key) != value:
            return True
    return False


def _without_times(conditions: Any) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in item.items() if k != "lastTransitionTime"} for item in conditions or []
    ]
