"""Start and stop the test bed: etcd, kube-apiserver, controller manager, scheduler, and
two real nodes (containerd + kubelet each, one kube-proxy, CoreDNS; see `nodes.py`).

Every component is a process group of its own whose pid goes into `state.json`, so
`down` (from pytest or from a shell) kills exactly what `up` started, even after a
crash of the process that started it; what the nodes leave on the host (containers,
mounts, cgroups, network namespaces, nftables, sysctls) is found and removed by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testbed import network, nodes
from testbed.paths import (
    ADMIN_KUBECONFIG,
    APISERVER_PORT,
    BIN_DIR,
    BRIDGE_IP,
    CLUSTER_DIR,
    CLUSTER_DOMAIN,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    KUBERNETES_SERVICE_IP,
    NODE_NAMES,
    NODES_DIR,
    RUN_DIR,
    SERVICE_ACCOUNT_ISSUER,
    SERVICE_CIDR,
    STATE_FILE,
    STATE_ROOT,
    apiserver_url,
)
from testbed.pki import CertificateAuthority, write_kubeconfig, write_service_account_keys

#: The bridge, its address and the ports belong to the whole machine, so the lock and
#: the record of which work tree's bed is up are machine-wide too (a CI clone and the
#: shared tree must take turns, not kill each other's beds).
LOCK_FILE = Path("/run/lock/w5n-testbed.lock")
OWNER_FILE = Path("/run/w5n-testbed.owner")
USERS_DIR = CLUSTER_DIR.parent / "users"
OTHER_TREE_WAIT_SECONDS = 1800.0
#: The user `make cluster-up` registers: a cluster started by hand stays up until `down`.
MANUAL_USER = "manual"

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_COMPONENTS = (
    *(f"containerd-{node.short}" for node in nodes.NODES),
    *(f"kubelet-{node.short}" for node in nodes.NODES),
    "kube-proxy",
)
COMPONENTS = (*CONTROL_PLANE, *NODE_COMPONENTS)
#: Stop order: pods and nodes first, the API server before etcd (the API server takes
#: about a minute to stop on SIGTERM while etcd is gone).
STOP_ORDER = (
    "kube-proxy",
    *(f"kubelet-{node.short}" for node in nodes.NODES),
    *(f"containerd-{node.short}" for node in nodes.NODES),
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


class ControlPlaneError(RuntimeError):
    pass


@dataclass
class ControlPlane:
    """Handle on a running test bed; `owned` is False when it reuses one already up."""

    pids: dict[str, int] = field(default_factory=dict)
    owned: bool = True

    @property
    def kubeconfig(self) -> Path:
        return ADMIN_KUBECONFIG


def log_path(component: str) -> Path:
    return CLUSTER_DIR / f"{component}.log"


def _alive(pid: int) -> bool:
    """A process that runs; one that exited but was not reaped yet (a zombie: the bed's
    components are children of the pytest process that started it) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        _reap(pid)
        return False
    return True


def _read_state() -> dict[str, int]:
    if not STATE_FILE.exists():
        return {}
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.get("pids", {}).items()}


def _write_state(pids: dict[str, int]) -> None:
    STATE_FILE.write_text(json.dumps({"pids": pids, "code": code_version()}, indent=2))


def code_version() -> str:
    """A hash of the test bed's own Python code, so a bed running older code is noticed."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _running_code() -> str | None:
    try:
        return str(json.loads(STATE_FILE.read_text()).get("code"))
    except (OSError, ValueError):
        return None


def _ssl_context() -> ssl.SSLContext:
    pki = CLUSTER_DIR / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def apiserver_ready(timeout: float = 2.0) -> bool:
    if not (CLUSTER_DIR / "pki" / "admin.crt").exists():
        return False
    try:
        with urllib.request.urlopen(
            f"{apiserver_url()}/readyz", timeout=timeout, context=_ssl_context()
        ) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def running() -> ControlPlane | None:
    """The test bed that is already up, if all its processes live and the apiserver answers."""
    pids = _read_state()
    if not pids or set(pids) != set(COMPONENTS):
        return None
    if not all(_alive(pid) for pid in pids.values()):
        return None
    if not apiserver_ready():
        return None
    return ControlPlane(pids=pids, owned=False)


def _binary(name: str) -> str:
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        raise ControlPlaneError(f"{path} missing: run `make testbed-bin` first")
    return str(path)


def _spawn(component: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    log = log_path(component).open("ab")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=CLUSTER_DIR,
    )
    log.close()
    return process.pid


def _write_pki() -> None:
    pki = CLUSTER_DIR / "pki"
    ca = CertificateAuthority(pki)
    ca.issue(
        "apiserver",
        "kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
        ),
        ip_addresses=("127.0.0.1", BRIDGE_IP, KUBERNETES_SERVICE_IP),
        server=True,
    )
    server = apiserver_url()
    clients = {
        "admin": ("kubernetes-admin", "system:masters"),
        "controller-manager": ("system:kube-controller-manager", None),
        "scheduler": ("system:kube-scheduler", None),
    }
    for name, (common_name, organization) in clients.items():
        issued = ca.issue(name, common_name, organization=organization)
        write_kubeconfig(
            CLUSTER_DIR / f"{name}.kubeconfig",
            server=server,
            ca=ca.cert_path,
            client=issued,
            user=common_name,
        )
    write_service_account_keys(pki)
    nodes.write_node_pki(ca, server)


def _start_components() -> dict[str, int]:
    pki = CLUSTER_DIR / "pki"
    pids: dict[str, int] = {}
    etcd_client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    etcd_peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    pids["etcd"] = _spawn(
        "etcd",
        [
            _binary("etcd"),
            "--name=testbed",
            f"--data-dir={CLUSTER_DIR / 'etcd'}",
            f"--listen-client-urls={etcd_client}",
            f"--advertise-client-urls={etcd_client}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster=testbed={etcd_peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    pids["kube-apiserver"] = _spawn(
        "kube-apiserver",
        [
            _binary("kube-apiserver"),
            f"--etcd-servers={etcd_client}",
            f"--bind-address={BRIDGE_IP}",
            f"--advertise-address={BRIDGE_IP}",
            f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            # Logs, exec and port-forward go to the kubelet by the node's InternalIP
            # (the node names do not resolve), with a client certificate of ours.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={pki}",
            "--v=1",
        ],
    )
    return pids


def _start_controller_manager(pids: dict[str, int]) -> None:
    pki = CLUSTER_DIR / "pki"
    kcm = str(CLUSTER_DIR / "controller-manager.kubeconfig")
    pids["kube-controller-manager"] = _spawn(
        "kube-controller-manager",
        [
            _binary("kube-controller-manager"),
            f"--kubeconfig={kcm}",
            f"--authentication-kubeconfig={kcm}",
            f"--authorization-kubeconfig={kcm}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--concurrent-statefulset-syncs=5",
            "--v=1",
        ],
    )


def _start_scheduler(pids: dict[str, int]) -> None:
    scheduler = str(CLUSTER_DIR / "scheduler.kubeconfig")
    pids["kube-scheduler"] = _spawn(
        "kube-scheduler",
        [
            _binary("kube-scheduler"),
            f"--kubeconfig={scheduler}",
            f"--authentication-kubeconfig={scheduler}",
            f"--authorization-kubeconfig={scheduler}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        ],
    )


#: What a real control plane's supervisor (the kubelet of static pods, systemd) starts
#: again when it exits; the API server and etcd are left to the fault tests that stop
#: them on purpose.
_SUPERVISED = {
    "kube-controller-manager": _start_controller_manager,
    "kube-scheduler": _start_scheduler,
}


def revive_managers() -> list[str]:
    """Start again the controller manager or scheduler if it exited.

    kube-scheduler exits by design when it finds its cache corrupt ("Pod updated on a
    different node than previously added to"), counting on its supervisor: seen on the
    bed after the fault tier's kube-apiserver restart, which left every later test
    without a scheduler (pods Pending, no events).
    """
    with _exclusive():
        pids = _read_state()
        revived = []
        for name, start in _SUPERVISED.items():
            pid = pids.get(name)
            if pid is not None and not _alive(pid):
                start(pids)
                revived.append(name)
        if revived:
            _write_state(pids)
            print(f"test bed: started {', '.join(revived)} again (it had exited)", file=sys.stderr)
        return revived


class Supervisor:
    """Checks the supervised components every `interval` seconds, in a daemon thread."""

    def __init__(self, interval: float = 2.0) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testbed-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError, ValueError):
                revive_managers()


def _node_env() -> dict[str, str]:
    """containerd finds its shim on PATH; runc and nft come from the host."""
    env = dict(os.environ)
    env["PATH"] = (
        f"{BIN_DIR.resolve()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    return env


def _start_containerds(pids: dict[str, int]) -> None:
    for node in nodes.NODES:
        pids[f"containerd-{node.short}"] = _spawn(
            f"containerd-{node.short}",
            [_binary("containerd"), f"--config={node.directory / 'containerd.toml'}"],
            env=_node_env(),
        )


def _containerds_ready() -> bool:
    return all(nodes.ctr(node, "version", timeout=5).returncode == 0 for node in nodes.NODES)


def _start_kubelets(pids: dict[str, int]) -> None:
    for node in nodes.NODES:
        pids[f"kubelet-{node.short}"] = _spawn(
            f"kubelet-{node.short}",
            [
                _binary("kubelet"),
                f"--config={node.directory / 'kubelet.yaml'}",
                f"--kubeconfig={CLUSTER_DIR / f'kubelet-{node.short}.kubeconfig'}",
                f"--root-dir={node.directory / 'kubelet'}",
                f"--cert-dir={node.directory / 'kubelet' / 'pki'}",
                f"--hostname-override={node.name}",
                f"--node-ip={BRIDGE_IP}",
                # What the chart's node-tuning test selects the bed's nodes by.
                f"--node-labels={nodes.NODE_LABEL}=true",
                "--v=1",
            ],
            env=_node_env(),
        )
    pids["kube-proxy"] = _spawn(
        "kube-proxy",
        [_binary("kube-proxy"), f"--config={CLUSTER_DIR / 'kube-proxy.yaml'}", "--v=1"],
        env=_node_env(),
    )


def _wait(predicate: object, timeout: float, what: str, pids: dict[str, int]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        dead = [name for name, pid in pids.items() if not _alive(pid)]
        if dead:
            raise ControlPlaneError(f"{', '.join(dead)} exited while waiting for {what}\n" + tail())
        time.sleep(0.3)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}\n" + tail())


def _kubectl_ok(*args: str) -> bool:
    result = subprocess.run(
        [str(BIN_DIR / "kubectl"), f"--kubeconfig={ADMIN_KUBECONFIG}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def _nodes_ready() -> bool:
    result = subprocess.run(
        [
            str(BIN_DIR / "kubectl"),
            f"--kubeconfig={ADMIN_KUBECONFIG}",
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}="
            '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    ready = {line.split("=")[0] for line in result.stdout.split() if line.endswith("=True")}
    return ready >= set(NODE_NAMES)


def _coredns_available() -> bool:
    result = subprocess.run(
        [
            str(BIN_DIR / "kubectl"),
            f"--kubeconfig={ADMIN_KUBECONFIG}",
            "get",
            "deployment",
            "coredns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() == "1"


def missing_tools() -> list[str]:
    """Host tools the nodes need, with how to get them."""
    needs = {
        "ip": "apt-get install iproute2",
        "nft": "apt-get install nftables (kube-proxy runs in nftables mode)",
        "runc": "apt-get install runc (the OCI runtime under containerd)",
        "umount": "apt-get install mount",
        "podman": "`make images` installs it (the project's images are saved from its storage)",
    }
    missing = [f"{tool}: {how}" for tool, how in needs.items() if shutil.which(tool) is None]
    for binary in ("kube-apiserver", "kubelet", "kube-proxy", "containerd", "coredns", "pause"):
        if not os.access(BIN_DIR / binary, os.X_OK):
            missing.append(f"{BIN_DIR / binary}: run `make testbed-bin`")
    if not os.access(BIN_DIR / "cni" / "bridge", os.X_OK):
        missing.append(f"{BIN_DIR / 'cni' / 'bridge'}: run `make testbed-bin`")
    return missing


def up(timeout: float = 180.0) -> ControlPlane:
    """Start a fresh test bed, or return the one already running."""
    existing = running()
    if existing is not None:
        return existing
    missing = missing_tools()
    if missing:
        raise ControlPlaneError("missing tools:\n  " + "\n  ".join(missing))
    down()
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    archives = nodes.project_image_archives() + nodes.testbed_image_archives()
    _write_pki()
    network.ensure_bridge()
    nodes.record_sysctls()
    nodes.write_configs()
    nodes.prepare_cgroups()
    pids = _start_components()
    _start_containerds(pids)
    _write_state(pids)
    try:
        _wait(_containerds_ready, timeout, "containerd on every node", pids)
        nodes.import_images(archives)
        _wait(apiserver_ready, timeout, "kube-apiserver /readyz", pids)
        for start_manager in _SUPERVISED.values():
            start_manager(pids)
        _start_kubelets(pids)
        _write_state(pids)
        _wait(
            lambda: _kubectl_ok("get", "serviceaccount", "default", "-n", "default", "-o", "name"),
            timeout,
            "the controller manager (default service account)",
            pids,
        )
        _wait(_nodes_ready, timeout, f"nodes {', '.join(NODE_NAMES)} Ready", pids)
        applied = subprocess.run(
            [str(BIN_DIR / "kubectl"), f"--kubeconfig={ADMIN_KUBECONFIG}", "apply", "-f", "-"],
            input=nodes.coredns_manifest(),
            capture_output=True,
            text=True,
            check=False,
        )
        if applied.returncode != 0:
            raise ControlPlaneError(f"CoreDNS manifest refused: {applied.stderr}")
        _wait(_coredns_available, timeout, "CoreDNS available", pids)
    except BaseException:
        down()
        raise
    elapsed = time.monotonic() - started
    print(f"test bed up in {elapsed:.1f}s: KUBECONFIG={ADMIN_KUBECONFIG}", file=sys.stderr)
    return ControlPlane(pids=pids, owned=True)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop(pid: int, grace: float) -> None:
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    _kill_group(pid, signal.SIGKILL)
    _reap(pid)


def down(grace: float = 10.0) -> None:
    """Stop everything `up` started and remove what the nodes left on the host.

    Order: kube-proxy and the kubelets (nothing restarts containers any more), the
    containers (every process in the nodes' cgroups), containerd and its shims, the
    control plane (API server before etcd), then mounts under the nodes' directories,
    the cgroups deepest first, network namespaces, links, nftables, host sysctls.
    """
    pids = _read_state()
    for name in STOP_ORDER:
        if name.startswith("containerd-"):
            nodes.kill_cgroup_processes()
        pid = pids.get(name)
        if pid is not None:
            _stop(pid, grace)
    nodes.kill_cgroup_processes()
    for pid in _stray_processes():
        _kill_group(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    nodes.kill_cgroup_processes()
    nodes.unmount_under(NODES_DIR, RUN_DIR)
    nodes.remove_cgroups()
    network.delete_all()
    if network.ip("link", "show", "w5n-br0", check=False).returncode == 0:
        network.ip("link", "del", "w5n-br0", check=False)
    nodes.delete_nftables()
    nodes.restore_sysctls()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    for node in nodes.NODES:
        # The container logs stay for the post-mortem (`up` clears them); the image
        # store and the pods' volumes go.
        for sub in ("containerd", "kubelet", "opt"):
            shutil.rmtree(node.directory / sub, ignore_errors=True)
    if STATE_FILE.exists():
        STATE_FILE.unlink()
    for stale in ("etcd",):
        shutil.rmtree(CLUSTER_DIR / stale, ignore_errors=True)


def _stray_processes() -> list[int]:
    """Test bed processes no state file knows of (a crashed or raced `up`, another work
    tree's bed that no one uses any more): anything running from a test bed binary
    directory (`<cache>/testbed/<hash>/bin`, any hash), containerd's shims included."""
    cache_root = str(BIN_DIR.resolve().parent.parent) + "/"
    strays = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            exe = os.readlink(proc / "exe")
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The node agent of beds before issue 11 (another work tree may still run one).
        agent = b"testbed.nodeagent" in cmdline
        if agent or (exe.startswith(cache_root) and "/bin/" in exe[len(cache_root) :]):
            strays.append(int(proc.name))
    return strays


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One `up`/`down` at a time across processes: several pytest sessions share one bed."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_users(users_dir: Path = USERS_DIR) -> list[str]:
    if not users_dir.exists():
        return []
    users = []
    for entry in users_dir.iterdir():
        if entry.name != MANUAL_USER and entry.name.isdigit() and not _alive(int(entry.name)):
            entry.unlink(missing_ok=True)
            continue
        users.append(entry.name)
    return users


def _other_tree_in_use() -> Path | None:
    """The state dir of another work tree whose bed is up and has live users."""
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except OSError:
        return None
    if owner == STATE_ROOT.resolve() or not _live_users(owner / "users"):
        return None
    return owner


def acquire(user: str | None = None) -> ControlPlane:
    """Bring the test bed up (or join the running one) and register as one of its users.

    If another work tree's bed is in use, wait for it to be released first.
    """
    deadline = time.monotonic() + OTHER_TREE_WAIT_SECONDS
    while True:
        with _exclusive():
            other = _other_tree_in_use()
            if other is None:
                stale = running() is not None and _running_code() != code_version()
                if stale and not _live_users():
                    # Nobody is using a bed that runs older code of ours: restart it.
                    down()
                plane = up()
                OWNER_FILE.write_text(str(STATE_ROOT.resolve()))
                USERS_DIR.mkdir(parents=True, exist_ok=True)
                (USERS_DIR / (user or str(os.getpid()))).touch()
                return plane
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"the test bed of {other} stayed in use; gave up waiting")
        print(f"waiting for the test bed of {other} to be released", file=sys.stderr)
        time.sleep(5.0)


def release(user: str | None = None) -> bool:
    """Unregister; the last user takes the test bed down. Returns True if it went down."""
    with _exclusive():
        (USERS_DIR / (user or str(os.getpid()))).unlink(missing_ok=True)
        if _live_users():
            return False
        down()
        OWNER_FILE.unlink(missing_ok=True)
        return True


def force_down() -> None:
    with _exclusive():
        down()
        OWNER_FILE.unlink(missing_ok=True)
        shutil.rmtree(USERS_DIR, ignore_errors=True)


def tail(lines: int = 30) -> str:
    """The last lines of every component log, for failure messages."""
    chunks = []
    for component in COMPONENTS:
        path = log_path(component)
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
    return "\n".join(chunks)
