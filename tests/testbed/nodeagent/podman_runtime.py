"""Containers from the built images, run by podman inside the pod's network namespace.

The image mode of the node agent: where `ProcessRuntime` runs the venv's `w5xde`,
this runs the image itself (`make images`), so a journey exercises the Dockerfiles,
the image's user and entrypoint and its read-only root filesystem for real. The
agent has already made the pod's namespace and applied the pod's sysctls to it;
the container joins it with `--network ns:`. Volumes (service-account token,
ConfigMaps, Secrets, emptyDirs) are the agent's directories, bind-mounted, and so is
the pod's hosts file (which the agent rewrites in place) and resolv.conf.

As in Kubernetes, a read-only root gets no writable /tmp unless the pod declares
one: podman's implicit tmpfs mounts are turned off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

from images.containers import PODMAN, podman, ulimit_args
from testbed.nodeagent.podenv import DEFAULT_PATH
from testbed.nodeagent.runtime import ContainerSpec, ContainerStartError, spawn_logged

#: Every container of the agent is named with this, so cleanup finds exactly its own.
CONTAINER_PREFIX = "w5p-"
NETNS_DIR = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")
#: How long `start` waits for the container's process to appear (podman: ~0.5 s).
START_TIMEOUT = 30.0


def container_name(spec: ContainerSpec) -> str:
    """Stable per pod and container, so a restart replaces its predecessor."""
    digest = hashlib.sha256(f"{spec.netns}/{spec.name}".encode()).hexdigest()[:16]
    return f"{CONTAINER_PREFIX}{digest}"


def podman_run_args(spec: ContainerSpec, name: str, *, resolv_conf: bool = True) -> list[str]:
    """The `podman run` flags that give the container the pod's view of the world."""
    args = [
        "run",
        "--rm",
        "--replace",
        f"--name={name}",
        "--pull=never",
        "--log-driver=none",
        f"--network=ns:{NETNS_DIR / spec.netns}",
        "--no-hosts",
        f"--volume={NETNS_ETC / spec.netns / 'hosts'}:/etc/hosts:ro",
        *ulimit_args(),
    ]
    if resolv_conf:
        args.append(f"--volume={NETNS_ETC / spec.netns / 'resolv.conf'}:/etc/resolv.conf:ro")
    hostname = spec.env.get("HOSTNAME")
    if hostname:
        args.append(f"--hostname={hostname}")
    if spec.run_as_user is not None:
        user = str(spec.run_as_user)
        if spec.run_as_group is not None:
            user += f":{spec.run_as_group}"
        args.append(f"--user={user}")
    if spec.drop_all_capabilities:
        args += ["--cap-drop=ALL", "--security-opt=no-new-privileges"]
    if spec.read_only_root_filesystem:
        args += ["--read-only", "--read-only-tmpfs=false"]
    if spec.working_dir:
        args.append(f"--workdir={spec.working_dir}")
    for mount in spec.mounts:
        suffix = ":ro" if mount.read_only else ""
        args.append(f"--volume={mount.source}:{mount.target}{suffix}")
    for key, value in spec.env.items():
        # The agent's PATH is for local processes; the image's own PATH must win.
        if key == "PATH" and value == DEFAULT_PATH:
            continue
        args.append(f"--env={key}={value}")
    if spec.command:
        args.append(f"--entrypoint={json.dumps(list(spec.command))}")
    args.append(spec.image)
    args += list(spec.args)
    return args


class PodmanHandle:
    def __init__(self, process: subprocess.Popen[bytes], name: str, pid_path: Path | None):
        self._process = process
        self._name = name
        self._pid_path = pid_path

    @property
    def container_id(self) -> str:
        return f"podman://{self._name}"

    def poll(self) -> int | None:
        code = self._process.poll()
        if code is not None and self._pid_path is not None:
            self._pid_path.unlink(missing_ok=True)
        return code

    def stop(self, grace_seconds: float) -> int:
        code = self.poll()
        if code is not None:
            return code
        grace = max(int(grace_seconds + 0.999), 0)
        podman("stop", f"--time={grace}", self._name, timeout=grace + 30)
        try:
            self._process.wait(timeout=grace + 30)
        except subprocess.TimeoutExpired:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        podman("rm", "--force", self._name)
        return self.poll() or 0


def _container_pid(name: str) -> int:
    result = podman("inspect", "--type=container", "--format={{.State.Pid}}", name, timeout=30)
    if result.returncode != 0:
        return 0
    with contextlib.suppress(ValueError):
        return int(result.stdout.strip() or 0)
    return 0


class PodmanRuntime:
    """`ContainerRuntime` of the image mode; one `podman run` process per container."""

    def start(self, spec: ContainerSpec) -> PodmanHandle:
        if not (NETNS_DIR / spec.netns).exists():
            raise ContainerStartError("NetworkNotReady", f"no network namespace {spec.netns}")
        name = container_name(spec)
        resolv_conf = (NETNS_ETC / spec.netns / "resolv.conf").exists()
        argv = [*PODMAN, *podman_run_args(spec, name, resolv_conf=resolv_conf)]
        process = spawn_logged(argv, spec.log_path, f"podman run {spec.image} {name}")
        handle = PodmanHandle(process, name, spec.pid_path)
        # The pid file names the container's own process (what a fault test kills);
        # the launcher's cleanup kills its process group if the agent dies.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            pid = _container_pid(name)
            if pid > 0:
                if spec.pid_path is not None:
                    spec.pid_path.write_text(str(pid))
                break
            time.sleep(0.2)
        if process.poll() is not None and process.returncode in (125, 126, 127):
            tail = spec.log_path.read_text(errors="replace").splitlines()[-3:]
            raise ContainerStartError("CreateContainerError", " / ".join(tail))
        return handle


def remove_all_containers() -> None:
    """Remove every container of the image mode (after the agent stopped, or crashed)."""
    listed = podman("ps", "--all", "--format={{.Names}}", timeout=60)
    names = [n for n in listed.stdout.split() if n.startswith(CONTAINER_PREFIX)]
    if names:
        podman("rm", "--force", "--time=2", *names, timeout=120)
