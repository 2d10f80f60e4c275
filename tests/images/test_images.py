"""The built images as a platform team would check them: metadata, contents, hardening."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from images.containers import hardened_args, image_ref, podman, ulimit_args
from w5xde import __version__

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".images" / "wheelhouse"
KINDS = ("worker", "operator")


def test_the_wheel_carries_every_module_of_the_mapped_packages(tmp_path: Path) -> None:
    """`worker/` and `operator/` reach the wheel through a package-dir mapping and symlinks."""
    if not any(WHEELHOUSE.glob("setuptools-*.whl")):
        pytest.fail("the wheelhouse is empty: run `make images` (or `make wheelhouse`) first")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--quiet",
         f"--find-links={WHEELHOUSE}", f"--wheel-dir={tmp_path}", str(REPO)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("w5xde-*.whl")
    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    expected = {
        f"w5xde/{path.relative_to(REPO / folder).as_posix()}"
        if folder == "src/w5xde"
        else f"w5xde/{folder}/{path.relative_to(REPO / folder).as_posix()}"
        for folder in ("src/w5xde", "worker", "operator")
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
        and not (folder == "src/w5xde" and path.relative_to(REPO / folder).parts[0]
                 in {"worker", "operator"})
    }  # fmt: skip
    assert "w5xde/worker/__init__.py" in expected
    assert expected <= in_wheel, sorted(expected - in_wheel)


@pytest.mark.parametrize("kind", KINDS)
def test_image_metadata(kind: str, image_config: dict[str, dict[str, Any]]) -> None:
    config = image_config[kind]["Config"]
    labels = config["Labels"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["w5xde"]
    assert config["Cmd"] == [kind]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.title"] == f"w5xde-{kind}"


def image_default_user_args() -> list[str]:
    """The hardened flags without `--user`: the uid is then the one the image declares,
    which is what these tests check (passing `--user` would make them check the flag).
    `--read-only-tmpfs=false`: podman's `--read-only` otherwise mounts a writable tmpfs on
    /tmp (the image's HOME), which a pod's readOnlyRootFilesystem does not."""
    args = [arg for arg in hardened_args() if not arg.startswith("--user")]
    return [*args, "--read-only-tmpfs=false"]


@pytest.mark.parametrize("kind", KINDS)
def test_version_runs_as_non_root_on_a_read_only_root(kind: str) -> None:
    result = podman(
        "run", "--rm", "--network=none", *image_default_user_args(), image_ref(kind), "--version"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"w5xde {__version__}"
    probe = (
        "import os;"
        "attempts = []\n"
        "for path in ('/probe', '/usr/probe', os.path.expanduser('~') + '/probe'):\n"
        "    try:\n"
        "        open(path, 'w').close(); attempts.append('wrote ' + path)\n"
        "    except OSError as error:\n"
        "        attempts.append(error.errno)\n"
        "print(os.getuid(), os.getgid(), attempts)"
    )
    result = podman(
        "run", "--rm", "--network=none", *image_default_user_args(), "--entrypoint=python3",
        image_ref(kind), "-c", probe,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The image's own user (not root), and every write refused: EROFS (30) or EACCES (13).
    uid, gid, attempts = result.stdout.strip().split(" ", 2)
    assert (uid, gid) == ("10001", "10001")
    assert all(code in ("30", "13") for code in attempts.strip("[]").split(", ")), attempts


def test_no_build_tools_or_caches_in_the_runtime_image() -> None:
    probe = (
        "import importlib.util as u, os, shutil;"
        "mods = [m for m in ('pip', 'setuptools', 'wheel', 'ensurepip') if u.find_spec(m)];"
        "tools = [t for t in ('pip', 'pip3', 'gcc', 'cc', 'make') if shutil.which(t)];"
        "paths = ['/wheels', '/src', '/root/.cache', '/tmp/dist'];"
        "paths = [p for p in paths if os.path.exists(p)];"
        "apt = os.listdir('/var/lib/apt/lists') if os.path.isdir('/var/lib/apt/lists') else [];"
        "print(mods, tools, paths, [a for a in apt if a not in ('partial', 'lock')],"
        " os.getuid(), os.getgid())"
    )  # fmt: skip
    # Without --user: the uid printed is the image's default, not an echo of a flag.
    result = podman(
        "run", "--rm", "--network=none", *image_default_user_args(), "--entrypoint=python3",
        image_ref("worker"), "-c", probe,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] [] [] [] 10001 10001"


def _changes_after(name: str, *args: str) -> list[str]:
    """Paths a writable container changed outside /tmp (its tmpfs) after running `args`."""
    podman("rm", "--force", name)
    try:
        result = podman(
            "run", f"--name={name}", "--network=none", "--user=10001:10001", "--cap-drop=ALL",
            *ulimit_args(), "--tmpfs=/tmp", "--env=W5XDE_CLUSTER_KEY=0123456789abcdef0123",
            *args,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        changed = podman("diff", "--format=json", name)
        assert changed.returncode == 0, changed.stderr
        return sorted(
            path
            for path in re.findall(r'"(/[^"]*)"', changed.stdout)
            if not path.startswith("/tmp")
        )
    finally:
        podman("rm", "--force", name)


def test_the_root_filesystem_stays_untouched_while_a_worker_runs() -> None:
    """Writable this time: a worker must change nothing beyond what podman itself changes."""
    baseline = _changes_after("w5i-diff-base", image_ref("worker"), "--version")
    config = '{"name": "solo-0", "clusterId": "w5i", "durationSeconds": 2, "metricsPort": 9090}'
    after_run = _changes_after(
        "w5i-diff-run", f"--env=W5XDE_CONFIG={config}", image_ref("worker"),
        "worker", "--report-interval=1",
    )  # fmt: skip
    assert after_run == baseline
