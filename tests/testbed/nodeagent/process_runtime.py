"""Containers as local processes inside the pod's network namespace.

`ip netns exec` already gives the process a private mount namespace (with the
pod's /etc/hosts bind-mounted over /etc/hosts), so the volume bind mounts happen
in that same shell before it execs the command, and never show on the host;
`unshare --uts` gives it the pod's hostname.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from testbed.nodeagent.runtime import ContainerSpec, ContainerStartError, spawn_logged
from testbed.paths import REPO_ROOT, VENV_BIN

#: Images of this project: their entrypoint is the `w5xde` command.
OWN_IMAGE_MARKER = "w5xde"


def resolve_argv(spec: ContainerSpec) -> list[str]:
    """The image's entrypoint as a local command (Kubernetes' command/args rules)."""
    w5xde = str(VENV_BIN / "w5xde")
    if spec.command:
        argv = list(spec.command) + list(spec.args)
        if argv[0] == "w5xde":
            argv[0] = w5xde
        return argv
    if OWN_IMAGE_MARKER in spec.image:
        return [w5xde, *spec.args]
    if spec.args:
        return list(spec.args)
    raise ContainerStartError(
        "NoEntrypoint",
        f"image {spec.image!r} has no entrypoint in the process runtime: give it a command",
    )


def _mount_script(spec: ContainerSpec) -> str:
    """Bash that sets the hostname, bind-mounts the volumes, then execs the command.

    Every source is opened first and mounted from /proc/self/fd: the pod's files live
    on the host's filesystem, and a mount target such as /work or /var would
    otherwise hide the sources of the mounts after it. `--no-canonicalize` keeps
    mount(8) from turning the fd back into a path, which may by then be hidden.
    """
    lines = ["set -e"]
    if spec.hostname:
        # A UTS namespace of its own (unshare below), as each pod has with a kubelet.
        lines.append(f"echo {shlex.quote(spec.hostname)} > /proc/sys/kernel/hostname")
    for index, mount in enumerate(spec.mounts):
        lines.append(f"exec {{source_{index}}}<{shlex.quote(str(mount.source))}")
    # The "image" is this work tree (its venv): a volume over one of its parents, like
    # an emptyDir on /tmp with the tree in /tmp/clone, must not take it away.
    image_root = str(REPO_ROOT)
    hidden = any(
        image_root == m.target.rstrip("/") or image_root.startswith(m.target.rstrip("/") + "/")
        for m in spec.mounts
    )
    if hidden:
        lines.append(f"exec {{image_root}}<{shlex.quote(image_root)}")
    for index, mount in enumerate(spec.mounts):
        target = shlex.quote(mount.target)
        if mount.source.is_dir():
            lines.append(f"mkdir -p {target}")
        else:
            lines.append(f'mkdir -p "$(dirname {target})"; [ -e {target} ] || touch {target}')
        lines.append(f'mount --no-canonicalize --bind "/proc/self/fd/${{source_{index}}}" {target}')
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    if hidden:
        quoted = shlex.quote(image_root)
        lines.append(f"mkdir -p {quoted}")
        lines.append(f'mount --no-canonicalize --bind "/proc/self/fd/${{image_root}}" {quoted}')
        lines.append("exec {image_root}<&-")
    for index in range(len(spec.mounts)):
        lines.append(f"exec {{source_{index}}}<&-")
    if spec.working_dir:
        lines.append(f"cd {shlex.quote(spec.working_dir)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


class ProcessHandle:
    def __init__(self, process: subprocess.Popen[bytes], pid_path: Path | None) -> None:
        self._process = process
        self._pid_path = pid_path

    @property
    def container_id(self) -> str:
        return f"process://{self._process.pid}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> int | None:
        code = self._process.poll()
        if code is not None and self._pid_path is not None:
            self._pid_path.unlink(missing_ok=True)
        return None if code is None else _exit_code(code)

    def stop(self, grace_seconds: float) -> int:
        code = self.poll()
        if code is not None:
            return code
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + max(grace_seconds, 0.0)
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                return code
            time.sleep(0.05)
        self._signal(signal.SIGKILL)
        self._process.wait()
        self.poll()
        return _exit_code(self._process.returncode)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)


def _exit_code(returncode: int) -> int:
    """Popen reports death by signal N as -N; container runtimes report 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class ProcessRuntime:
    def start(self, spec: ContainerSpec) -> ProcessHandle:
        argv = resolve_argv(spec)
        user: list[str] = []
        if spec.run_as_user is not None or spec.drop_all_capabilities:
            user = ["setpriv"]
            if spec.run_as_user is not None:
                group = spec.run_as_group if spec.run_as_group is not None else spec.run_as_user
                user += [f"--reuid={spec.run_as_user}", f"--regid={group}", "--clear-groups"]
            if spec.drop_all_capabilities:
                user += ["--inh-caps=-all", "--bounding-set=-all"]
            user.append("--")
        full = [
            "ip",
            "netns",
            "exec",
            spec.netns,
            "unshare",
            "--uts",
            "bash",
            "-c",
            _mount_script(spec),
            "container",
            *user,
            *argv,
        ]
        process = spawn_logged(full, spec.log_path, f"start {shlex.join(argv)}", env=spec.env)
        if spec.pid_path is not None:
            spec.pid_path.write_text(str(process.pid))
        return ProcessHandle(process, spec.pid_path)
