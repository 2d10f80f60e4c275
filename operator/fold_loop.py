"""One loop folds every cluster's worker reports into its status, once per interval.

Not a kopf timer: a timer (or daemon) makes kopf put a finalizer on every cluster, and
an uninstalled operator would then leave clusters, and their namespaces, stuck in
Terminating.  The loop reads kopf indexes (clusters, worker pods, StatefulSets: no
API calls to list them), pulls each worker's report from its pod, folds, and writes
one status patch per cluster per interval.  Only the replica kopf peering makes
active folds (`PeeringGate`).

The loop only schedules, gathers, folds and writes: the cluster key and CA
(`cluster_keys`), certificate enrollment (`enrollment`), the per-cluster memory
(`cluster_memory`) and the owned objects (`apply.ensure_owned`, shared with the change
handlers) are their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    CompressionClusterSpec,
    CompressionClusterStatus,
    RunState,
    parse_status,
    status_patch,
)
from w5xde.operator import metrics
from w5xde.operator.apply import Runtime, ensure_owned, is_completed
from w5xde.operator.cluster_memory import (
    STARTING_FOLD_SECONDS,
    ClusterMemory,
    cluster_summary,
)
from w5xde.operator.enrollment import enroll
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Event,
    EventType,
    Fetched,
    Observation,
    PodState,
    Problem,
    Reason,
)
from w5xde.operator.observe import pod_states, statefulset_state
from w5xde.operator.peering_gate import PeeringGate
from w5xde.operator.reconcile import spec_problems
from w5xde.operator.report_client import ReportClient, report_timeout
from w5xde.operator.resources.metadata import ClusterRef, selector_labels
from w5xde.operator.resources.run_config import render_run_config
from w5xde.operator.runs import run_deadline
from w5xde.operator.sample_sets import wants_fresh_workers
from w5xde.operator.status_folding import completed_status, fold_status

__all__ = ["ClusterMemory", "FoldLoop", "changes", "cluster_summary"]

logger = logging.getLogger("w5xde.operator")

ClusterKey = tuple[str, str]  # (namespace, name)

#: How often the loop looks for clusters that are due (each has its own interval).
TICK_SECONDS = 1.0


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
                    memory,
                    body,
                    [dict(pod) for pod in pods[key]] if key in pods else [],
                    next(iter(statefulsets[key]), None) if key in statefulsets else None,
                )
                for key, body, memory in due
            )
        )

    async def _fold_safely(self, key: ClusterKey, memory: ClusterMemory, *gathered: Any) -> None:
        """`gathered`: the cluster's body, pods and StatefulSet from the indexes."""
        started = time.monotonic()
        try:
            await self.fold_cluster(key, *gathered, memory=memory)
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
        pods: list[dict[str, Any]],
        statefulset: dict[str, Any] | None,
        *,
        memory: ClusterMemory,
    ) -> None:
        body = memory.fresher(body)
        status = parse_status(body.get("status"))
        generation = int(body["metadata"].get("generation") or 0)
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
        if not await self._indexed(cluster, memory, pods):
            memory.next_due = time.monotonic() + TICK_SECONDS
            return  # after a start: no status from a half-filled pod index
        problems, fatal = spec_problems(spec, self.runtime.context)
        observation = Observation(
            now=datetime.now(UTC),
            generation=generation,
            applied_generation=status.observed_generation,
            statefulset=statefulset_state(statefulset),
            pods=pod_states(pods),
            problems=problems,
            fatal=fatal,
        )
        if is_completed(status, generation):
            await self._stop(cluster, spec, statefulset)
            await self._write(cluster, status, memory, completed_status(spec, status, observation))
            return
        await self._fold_running(
            cluster,
            body,
            memory,
            spec=spec,
            status=status,
            observation=observation,
            statefulset=statefulset,
        )

    async def _fold_running(
        self,
        cluster: ClusterRef,
        body: dict[str, Any],
        memory: ClusterMemory,
        *,
        spec: CompressionClusterSpec,
        status: CompressionClusterStatus,
        observation: Observation,
        statefulset: dict[str, Any] | None,
    ) -> None:
        kube = self.runtime.kube
        keys = memory.keys
        await keys.read(kube, cluster)
        await keys.rotate(kube, cluster, (body.get("metadata") or {}).get("annotations") or {})
        problems = (*observation.problems, *keys.problems(spec.security.operator_issued))
        statefulset, events = await self._repair(cluster, spec, statefulset, observation, problems)
        if events:  # re-created: its run ConfigMap was cleared with it, write it again
            memory.deadline_written = False
        states = observation.pods
        fetched = await self._fetch(memory, states, spec, observation.generation)
        # A pod without an address has not started: it will mount the new key anyway.
        await keys.finish_rotation(kube, cluster, fetched, sum(1 for p in states if p.ip))
        if spec.security.operator_issued and await enroll(
            kube, self.client, cluster, keys, states=states, fetched=fetched
        ):
            memory.next_due = time.monotonic() + STARTING_FOLD_SECONDS
        reported = memory.heard(states, fetched, spec.status_interval_seconds)
        metrics.REPORTS.labels(result="ok").inc(reported)
        metrics.REPORTS.labels(result="failed").inc(len(fetched) - reported)
        if memory.ledger is None:
            memory.ledger = Ledger.from_status(status.retired_totals, status.totals)
        observation = Observation(
            now=datetime.now(UTC),
            generation=observation.generation,
            applied_generation=observation.applied_generation,
            statefulset=statefulset_state(statefulset),
            pods=states,
            problems=problems,
            fatal=observation.fatal,
            fetched=tuple(fetched),
        )
        fold = fold_status(
            spec,
            status,
            observation,
            memory.ledger,
            memory.last_heard,
            restarts_before=memory.restarts if memory.restarts is not None else {},
        )
        memory.restarts = {pod.name: pod.restarts for pod in states}
        await self._write(cluster, status, memory, fold.status)
        memory.ledger = fold.ledger
        self.folds += 1
        metrics.FOLDS.inc()
        await self._post_events(body, [*events, *fold.events])
        await self._publish_deadline(cluster, memory, spec, fold.status.run)
        await self._workers_for_run(cluster, spec, statefulset, fold.status.run, fold.completed)

    async def _workers_for_run(
        self,
        cluster: ClusterRef,
        spec: CompressionClusterSpec,
        statefulset: dict[str, Any] | None,
        run: RunState,
        completed: bool,
    ) -> None:
        """A completed run, or a sample set between samples, keeps zero workers; the next
        sample gets fresh ones once the previous sample's pods are gone."""
        if completed:
            await asyncio.to_thread(
                ensure_owned, self.runtime, cluster, spec, statefulset, completed=True
            )
        elif run.awaiting_fresh_workers:
            await self._stop(cluster, spec, statefulset)
        elif statefulset is not None and wants_fresh_workers(run, _replicas(statefulset)):
            await asyncio.to_thread(
                ensure_owned, self.runtime, cluster, spec, statefulset, completed=False
            )

    async def _publish_deadline(
        self,
        cluster: ClusterRef,
        memory: ClusterMemory,
        spec: CompressionClusterSpec,
        run: RunState,
    ) -> None:
        """The run's one deadline into the run ConfigMap, for workers that start later."""
        moment = run_deadline(spec, run)
        deadline = moment.timestamp() if moment is not None else None
        if not memory.deadline_changed(deadline):
            return
        await asyncio.to_thread(self.runtime.kube.apply, render_run_config(cluster, deadline))
        memory.deadline, memory.deadline_written = deadline, True

    async def _indexed(
        self, cluster: ClusterRef, memory: ClusterMemory, pods: list[dict[str, Any]]
    ) -> bool:
        """After a start (or a takeover), whether the pod index has caught up with the API
        server for this cluster: one list call, on the first folds only."""
        if memory.indexed:
            return True
        listed = await asyncio.to_thread(
            self.runtime.kube.list_pods, cluster.namespace, selector_labels(cluster)
        )
        names = [pod["metadata"]["name"] for pod in listed]
        return memory.index_caught_up((pod["metadata"]["name"] for pod in pods), names)

    async def _repair(
        self,
        cluster: ClusterRef,
        spec: CompressionClusterSpec,
        statefulset: dict[str, Any] | None,
        observation: Observation,
        problems: tuple[Problem, ...],
    ) -> tuple[dict[str, Any] | None, list[Event]]:
        """The StatefulSet, re-created if it went missing (and may be started)."""
        if statefulset is not None:
            return statefulset, []
        if observation.fatal is not None or _refused(problems):
            return None, []
        kube = self.runtime.kube
        existing = await asyncio.to_thread(
            kube.read_statefulset, cluster.namespace, cluster.statefulset
        )
        if existing is not None:
            return existing, []
        owned = await asyncio.to_thread(
            ensure_owned, self.runtime, cluster, spec, None, completed=False
        )
        repaired = Event(
            EventType.NORMAL, Reason.REPAIRED, "re-created the missing worker StatefulSet"
        )
        return owned.statefulset, [repaired]

    async def _fetch(
        self,
        memory: ClusterMemory,
        states: tuple[PodState, ...],
        spec: CompressionClusterSpec,
        generation: int,
    ) -> list[Fetched]:
        """Every worker's report (and a resize, signed with the cluster's generation, to
        any worker that reports the wrong size): the one place the loop talks to the
        workers."""
        key = memory.keys.key
        if not any(pod.ip for pod in states) or key is None:
            return []
        return await self.client.fetch_all(
            states,
            key,
            spec.workers,
            report_timeout(spec.status_interval_seconds),
            previous_key=memory.keys.previous_key,
            generation=generation,
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

    async def _stop(
        self,
        cluster: ClusterRef,
        spec: CompressionClusterSpec,
        statefulset: Mapping[str, Any] | None,
    ) -> None:
        """A completed run keeps zero workers (scaled down once, and again if scaled up)."""
        if statefulset and int((statefulset.get("spec") or {}).get("replicas", 0)) > 0:
            await asyncio.to_thread(
                ensure_owned, self.runtime, cluster, spec, statefulset, completed=True
            )


def _replicas(statefulset: Mapping[str, Any]) -> int:
    return int((statefulset.get("spec") or {}).get("replicas", 0))


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
