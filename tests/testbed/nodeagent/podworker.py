"""One thread per pod: the pod's life from sandbox to deletion, as a kubelet lives it.

Sandbox (netns, IP, sysctls) -> volumes -> init containers in order -> containers
with restarts, back-off and probes -> stop with the grace period -> sandbox
removed -> the pod object deleted. After every step the status the API shows is
recomputed and patched when it changed.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed import network
from testbed.nodeagent import hosts, probes, sysctls
from testbed.nodeagent.kubeapi import now_rfc3339
from testbed.nodeagent.podenv import EnvError, container_env, expand
from testbed.nodeagent.runtime import (
    ContainerHandle,
    ContainerRuntime,
    ContainerSpec,
    ContainerStartError,
    Mount,
)
from testbed.nodeagent.volumes import PodVolumes, prepare
from testbed.paths import BRIDGE_IP, PODS_DIR

if TYPE_CHECKING:
    from testbed.nodeagent.agent import Agent

log = logging.getLogger("nodeagent.pod")

Pod = dict[str, Any]
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 20.0
BACKOFF_RESET_AFTER = 60.0
TICK = 0.25
DEFAULT_GRACE = 30.0
#: Nobody: the uid a `runAsNonRoot` container gets when it names no `runAsUser`
#: (our images run as 65532; a process has no image metadata to ask).
NON_ROOT_DEFAULT_UID = 65532


@dataclass
class Container:
    spec: dict[str, Any]
    init: bool = False
    handle: ContainerHandle | None = None
    restart_count: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    started_monotonic: float = 0.0
    next_start: float = 0.0
    backoff_level: int = 0
    done: bool = False  # exited and will not be restarted
    restarting: bool = False  # exited, to be started again after the back-off
    readiness: probes.ProbeState | None = None
    liveness: probes.ProbeState | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def ready(self) -> bool:
        if self.handle is None or "running" not in self.state:
            return False
        return self.readiness.result if self.readiness is not None else True


def _security(pod: Pod, container: dict[str, Any]) -> tuple[int | None, int | None, bool]:
    pod_context = pod["spec"].get("securityContext") or {}
    own = container.get("securityContext") or {}
    user = own.get("runAsUser", pod_context.get("runAsUser"))
    group = own.get("runAsGroup", pod_context.get("runAsGroup"))
    non_root = own.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if user is None and non_root:
        user = NON_ROOT_DEFAULT_UID
    drop_all = "ALL" in ((own.get("capabilities") or {}).get("drop") or [])
    return user, group, drop_all


class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: Pod, runtime: ContainerRuntime) -> None:
        metadata = pod["metadata"]
        super().__init__(name=f"pod-{metadata['namespace']}/{metadata['name']}", daemon=True)
        self.agent = agent
        self.runtime = runtime
        self.uid = str(metadata["uid"])
        self.namespace = str(metadata["namespace"])
        self.pod_name = str(metadata["name"])
        self.node = str(pod["spec"]["nodeName"])
        self.key = f"{self.namespace}/{self.pod_name}"
        self.dir = PODS_DIR / self.namespace / self.pod_name
        self._pod = pod
        self._lock = threading.Lock()
        self._gone = threading.Event()
        self.pod_ip: str | None = None
        self.netns: str | None = None
        self.volumes: PodVolumes | None = None
        self.containers: list[Container] = []
        self.init_containers: list[Container] = []
        self.start_time = now_rfc3339()
        self._phase = "Pending"
        self._reason: str | None = None
        self._message: str | None = None
        self._conditions: dict[str, dict[str, Any]] = {}
        self._last_status: dict[str, Any] | None = None
        self._waiting_message: str | None = None
        self._ever_started = False

    # called from the agent's watch thread
    def update(self, pod: Pod) -> None:
        with self._lock:
            self._pod = pod

    def forget(self) -> None:
        """The pod object is gone from the API (force-deleted): stop at once."""
        self._gone.set()

    @property
    def pod(self) -> Pod:
        with self._lock:
            return self._pod

    def _deleting(self) -> bool:
        return self._gone.is_set() or bool(self.pod["metadata"].get("deletionTimestamp"))

    def _grace(self) -> float:
        if self._gone.is_set():
            return 2.0
        metadata, spec = self.pod["metadata"], self.pod["spec"]
        grace = metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
        return float(grace)

    # the life of the pod
    def run(self) -> None:
        try:
            self._live()
        except Exception:
            log.exception("%s: pod worker failed", self.key)
            self._set_failed(
                "NodeAgentError", "the test bed's node agent failed; see nodeagent.log"
            )
            self._wait_for_deletion()
        finally:
            self._teardown()

    def _live(self) -> None:
        pod = self.pod
        self.dir.mkdir(parents=True, exist_ok=True)
        requested = (pod["spec"].get("securityContext") or {}).get("sysctls") or []
        refused = sysctls.forbidden(requested)
        if refused:
            message = f"Pod forbidden sysctl: {', '.join(repr(n) for n in refused)} not allowlisted"
            log.warning("%s: %s", self.key, message)
            self.agent.kube.event(pod, "SysctlForbidden", message)
            self._set_failed("SysctlForbidden", message)
            self._wait_for_deletion()
            return
        self.pod_ip = self.agent.ipam.allocate(self.node)
        self.netns = network.create_pod_network(
            self.uid,
            self.pod_ip,
            self.agent.hosts_for(pod, self.pod_ip),
            hosts.resolv_conf(self.namespace),
        )
        errors = sysctls.apply_in_netns(self.netns, requested)
        if errors:
            message = "; ".join(errors)
            self.agent.kube.event(pod, "FailedCreatePodSandBox", message)
            self._set_failed("SysctlFailed", message)
            self._wait_for_deletion()
            return
        self._set_condition("PodReadyToStartContainers", True)
        self.init_containers = [
            Container(c, init=True) for c in pod["spec"].get("initContainers") or []
        ]
        self.containers = [Container(c) for c in pod["spec"].get("containers") or []]
        self._publish()
        while not self._deleting():
            try:
                self.volumes = prepare(
                    self.pod, self.dir / "volumes", self.agent.kube.object_files, self._token
                )
                break
            except EnvError as error:
                self._waiting_message = str(error)
                self._set_waiting(self.containers, "ContainerCreating", str(error))
                self._publish()
                time.sleep(1.0)
        if self._deleting():
            return
        if not self._run_init_containers():
            self._wait_for_deletion()
            return
        self._set_condition("Initialized", True)
        self._run_containers()

    def _token(self, service_account: str, audience: str | None, seconds: int) -> str:
        return self.agent.kube.request_token(self.pod, service_account, audience, seconds)

    def _run_init_containers(self) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.init_containers:
            while not self._deleting():
                if not self._start(container):
                    time.sleep(1.0)
                    continue
                assert container.handle is not None
                while container.handle.poll() is None and not self._deleting():
                    self._publish()
                    time.sleep(TICK)
                if self._deleting():
                    return False
                code = self._exited(container, container.handle.poll() or 0)
                if code == 0:
                    container.done = True
                    break
                if policy == "Never":
                    self._set_failed(
                        "InitContainerFailed", f"init container {container.name} failed"
                    )
                    return False
                delay = self._backoff(container)
                container.state = {
                    "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay:.1f}s"}
                }
                self._publish()
                self._sleep_unless_deleting(delay)
                container.restart_count += 1
            if self._deleting():
                return False
        return True

    def _run_containers(self) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.containers:
            self._start(container)
        self._phase = "Running"
        while not self._deleting():
            now = time.monotonic()
            if self.volumes is not None:
                try:
                    self.volumes.refresh_tokens(self.pod, self._token)
                except Exception:
                    log.exception("%s: token refresh failed", self.key)
            for container in self.containers:
                self._tend(container, policy, now)
            if all(c.done for c in self.containers):
                codes = [
                    int(c.state.get("terminated", {}).get("exitCode", 0)) for c in self.containers
                ]
                self._phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            self._publish()
            time.sleep(TICK)

    def _tend(self, container: Container, policy: str, now: float) -> None:
        if container.done:
            return
        if container.handle is None:
            if now >= container.next_start and self._start(container) and container.restarting:
                container.restart_count += 1
                container.restarting = False
            return
        code = container.handle.poll()
        if code is None:
            self._probe(container, now)
            return
        self._exited(container, code)
        container.handle = None
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            container.done = True
            return
        delay = self._backoff(container)
        container.next_start = time.monotonic() + delay
        container.restarting = True
        container.last_state = {"terminated": container.state["terminated"]}
        container.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.1f}s restarting failed container={container.name}",
            }
        }

    def _probe(self, container: Container, now: float) -> None:
        if self.pod_ip is None:
            return
        if container.readiness is not None and container.readiness.due(now):
            ok = probes.check(container.readiness.probe, container.spec, self.pod_ip)
            container.readiness.record(ok, now)
        if container.liveness is not None and container.liveness.due(now):
            ok = probes.check(container.liveness.probe, container.spec, self.pod_ip)
            if not container.liveness.record(ok, now) and container.handle is not None:
                log.warning("%s: liveness probe of %s failed, restarting", self.key, container.name)
                self.agent.kube.event(
                    self.pod, "Unhealthy", f"Liveness probe failed: {container.name}"
                )
                container.handle.stop(self._termination_grace())

    def _termination_grace(self) -> float:
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE))

    def _backoff(self, container: Container) -> float:
        if time.monotonic() - container.started_monotonic >= BACKOFF_RESET_AFTER:
            container.backoff_level = 0
        delay = min(BACKOFF_FIRST * 2**container.backoff_level, BACKOFF_MAX)
        container.backoff_level += 1
        return float(delay)

    def _exited(self, container: Container, code: int) -> int:
        started = container.state.get("running", {}).get("startedAt", self.start_time)
        container.state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now_rfc3339(),
                "containerID": container.handle.container_id if container.handle else "",
            }
        }
        log.info("%s: container %s exited with %d", self.key, container.name, code)
        return code

    def _start(self, container: Container) -> bool:
        pod = self.pod
        spec = container.spec
        try:
            env = container_env(self._pod_with_ip(pod), spec, self.agent.kube.object_text)
        except EnvError as error:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(error)}
            }
            container.next_start = time.monotonic() + 1.0
            return False
        user, group, drop_all = _security(pod, spec)
        mounts = []
        assert self.volumes is not None
        for mount in spec.get("volumeMounts") or []:
            source = self.volumes.paths.get(mount["name"])
            if source is None:
                continue
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append(Mount(Path(source), mount["mountPath"], bool(mount.get("readOnly"))))
        container_spec = ContainerSpec(
            pod_key=self.key,
            name=container.name,
            image=str(spec.get("image", "")),
            command=tuple(expand(str(a), env) for a in spec.get("command") or []),
            args=tuple(expand(str(a), env) for a in spec.get("args") or []),
            env=env,
            working_dir=spec.get("workingDir"),
            netns=str(self.netns),
            hostname=str(pod["spec"].get("hostname") or self.pod_name),
            mounts=tuple(mounts),
            run_as_user=user,
            run_as_group=group,
            drop_all_capabilities=drop_all,
            read_only_root_filesystem=bool(
                (spec.get("securityContext") or {}).get("readOnlyRootFilesystem")
            ),
            log_path=self.dir / f"{container.name}.log",
            pid_path=self.dir / f"{container.name}.pid",
        )
        try:
            container.handle = self.runtime.start(container_spec)
        except ContainerStartError as error:
            container.state = {"waiting": {"reason": error.reason, "message": str(error)}}
            container.next_start = time.monotonic() + 5.0
            self.agent.kube.event(pod, "Failed", f"{container.name}: {error}")
            return False
        container.started_monotonic = time.monotonic()
        self._ever_started = True
        container.state = {"running": {"startedAt": now_rfc3339()}}
        container.readiness = probes.new_state(spec.get("readinessProbe"), initial=False)
        container.liveness = probes.new_state(spec.get("livenessProbe"), initial=True)
        log.info("%s: started %s (%s)", self.key, container.name, container.handle.container_id)
        return True

    def _pod_with_ip(self, pod: Pod) -> Pod:
        status = dict(pod.get("status") or {})
        status.setdefault("podIP", self.pod_ip)
        status.setdefault("hostIP", BRIDGE_IP)
        if not status.get("podIP"):
            status["podIP"] = self.pod_ip
        return {**pod, "status": status}

    # status
    def _set_condition(self, kind: str, value: bool, reason: str | None = None) -> None:
        status = "True" if value else "False"
        current = self._conditions.get(kind)
        if current is not None and current["status"] == status:
            return
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastTransitionTime": now_rfc3339(),
        }
        if reason:
            condition["reason"] = reason
        self._conditions[kind] = condition

    def _set_failed(self, reason: str, message: str) -> None:
        self._phase, self._reason, self._message = "Failed", reason, message
        self._publish()

    def _set_waiting(self, containers: list[Container], reason: str, message: str) -> None:
        for container in containers:
            if container.handle is None:
                container.state = {"waiting": {"reason": reason, "message": message}}

    def _container_status(self, container: Container) -> dict[str, Any]:
        # Every state key is written (null deletes it in a strategic merge patch),
        # otherwise the old `running` would survive next to a new `terminated`.
        state = {"waiting": None, "running": None, "terminated": None, **container.state}
        last = {"waiting": None, "running": None, "terminated": None, **container.last_state}
        status: dict[str, Any] = {
            "name": container.name,
            "image": container.spec.get("image", ""),
            "imageID": "",
            "ready": container.ready(),
            "started": "running" in container.state,
            "restartCount": container.restart_count,
            "state": state,
            "lastState": last,
        }
        if container.handle is not None:
            status["containerID"] = container.handle.container_id
        return status

    def _publish(self) -> None:
        ready = bool(self.containers) and all(c.ready() for c in self.containers)
        if self._phase in ("Running", "Pending"):
            self._set_condition("ContainersReady", ready)
            self._set_condition("Ready", ready)
        else:
            self._set_condition("ContainersReady", False, "PodCompleted")
            self._set_condition("Ready", False, "PodCompleted")
        self._conditions.setdefault("Initialized", {"type": "Initialized", "status": "False"})
        self._conditions.setdefault(
            "PodScheduled",
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.start_time},
        )
        phase = self._phase
        if phase == "Running" and not self._ever_started:
            phase = "Pending"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": BRIDGE_IP,
            "hostIPs": [{"ip": BRIDGE_IP}],
            "startTime": self.start_time,
            "conditions": sorted(self._conditions.values(), key=lambda c: str(c["type"])),
            "containerStatuses": [self._container_status(c) for c in self.containers],
            "reason": self._reason,
            "message": self._message,
        }
        if self.init_containers:
            status["initContainerStatuses"] = [
                self._container_status(c) for c in self.init_containers
            ]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if status == self._last_status:
            return
        try:
            self.agent.kube.patch_pod_status(self.namespace, self.pod_name, status)
            self._last_status = status
        except Exception as error:  # the pod may be gone; the next tick retries otherwise
            log.debug("%s: status patch failed: %s", self.key, error)

    # the end
    def _sleep_unless_deleting(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._deleting():
            time.sleep(TICK)

    def _wait_for_deletion(self) -> None:
        while not self._deleting():
            time.sleep(TICK)

    def _stop_all(self) -> None:
        grace = self._grace()
        running = [c for c in self.init_containers + self.containers if c.handle is not None]
        threads = []
        for container in running:
            handle = container.handle
            assert handle is not None
            thread = threading.Thread(target=handle.stop, args=(grace,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(grace + 10)

    def _teardown(self) -> None:
        # Wait for the deletion to be asked for, unless we got here by a failure of our own.
        self._stop_all()
        network.delete_pod_network(self.uid)
        if self.pod_ip is not None:
            self.agent.ipam.release(self.node, self.pod_ip)
        # The container logs stay (a recreated pod of the same name appends to them).
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)
        if not self._gone.is_set():
            try:
                self.agent.kube.delete_pod_now(self.namespace, self.pod_name, self.uid)
            except Exception:
                log.exception("%s: final delete failed", self.key)
        self.agent.worker_finished(self.uid)
        log.info("%s: torn down", self.key)
