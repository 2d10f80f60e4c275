"""How the images tier runs the built images with podman (the test bed's nodes import them).

One storage (under `$W5XDE_CACHE/images`, overlay driver) is shared with
`make images`, so whatever it built is what runs here. Every container runs the
way a pod with the chart's security context does: numeric non-root user, read-only
root filesystem, no capabilities, and explicit ulimits inside this process's hard
limits (podman's defaults exceed them, and there is no CAP_SYS_RESOURCE to raise them).
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from w5xde import __version__

IMAGES_CACHE = Path(os.environ.get("W5XDE_CACHE", Path.home() / ".cache" / "w5xde")) / "images"
RUNROOT = "/run/w5xde-containers"
STORAGE_ARGS = (
    f"--root={IMAGES_CACHE / 'storage'}",
    f"--runroot={RUNROOT}",
    "--storage-driver=overlay",
)
#: --log-level=error: podman 4.3 warns on every call about its CNI config, which
#: no container here uses (they join existing namespaces or have none).
PODMAN = (
    "podman",
    "--log-level=error",
    *STORAGE_ARGS,
    "--runtime=runc",
    "--cgroup-manager=cgroupfs",
)
#: The uid:gid the Dockerfiles declare (`USER 10001:10001`).
IMAGE_USER = "10001:10001"
#: Cap for the per-container ulimits; the host's hard limit may be lower, and runc
#: here refused nproc=65536 although the hard limit read 96365.
ULIMIT_CEILING = 16384


def image_ref(kind: str) -> str:
    """`localhost/w5xde-worker:<version>` as `make images` tags it."""
    return f"localhost/w5xde-{kind}:{__version__}"


def ulimit_args() -> list[str]:
    """--ulimit values no higher than this process's hard limits."""
    args = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        value = ULIMIT_CEILING if hard == resource.RLIM_INFINITY else min(hard, ULIMIT_CEILING)
        args.append(f"--ulimit={name}={value}:{value}")
    return args


def hardened_args(user: str = IMAGE_USER) -> list[str]:
    """A pod's restricted security context, expressed as podman flags."""
    return [
        f"--user={user}",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        *ulimit_args(),
    ]


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one podman command in the project's storage; the caller checks the result."""
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
