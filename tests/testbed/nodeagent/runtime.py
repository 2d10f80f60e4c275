"""What the node agent needs from a container runtime, so runtimes can be swapped.

The pod worker resolves everything Kubernetes-specific (env, volumes, users, the
network namespace) into a `ContainerSpec`; a runtime only has to start it, report
its exit and stop it. `process_runtime.ProcessRuntime` runs local processes; a
podman runtime can implement the same protocol for real images.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    pod_key: str  # namespace/name, for logs
    name: str
    image: str
    command: tuple[str, ...]  # the container's `command` (entrypoint override), may be empty
    args: tuple[str, ...]  # the container's `args`, already $(VAR)-expanded
    env: dict[str, str]
    working_dir: str | None
    netns: str
    hostname: str | None = None
    mounts: tuple[Mount, ...] = ()
    run_as_user: int | None = None
    run_as_group: int | None = None
    drop_all_capabilities: bool = False
    read_only_root_filesystem: bool = False
    log_path: Path = field(default=Path("/dev/null"))
    pid_path: Path | None = None


class ContainerStartError(RuntimeError):
    """The container could not be started; `reason` becomes the waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ContainerHandle(Protocol):
    @property
    def container_id(self) -> str: ...

    def poll(self) -> int | None:
        """The exit code once the container has exited, else None."""

    def stop(self, grace_seconds: float) -> int:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""


class ContainerRuntime(Protocol):
    def start(self, spec: ContainerSpec) -> ContainerHandle: ...


def spawn_logged(
    argv: list[str], log_path: Path, banner: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a container's process in its own session, its output appended to the pod log.

    Every runtime needs the same: a banner line per start (restarts stay readable),
    no stdin, and a process group the agent can signal as a whole.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"--- {time.strftime('%H:%M:%S')} {banner}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd="/",
            )
        except OSError as error:
            raise ContainerStartError("StartError", str(error)) from error
