"""The chart's NetworkPolicies enforced on the test bed, with packets (issue 22).

The bed's bridge CNI ignores NetworkPolicies; here kube-network-policies (built from
its Go module, `make netpol-bin`) runs on the host for the duration of this module
and decides every new connection from or to a pod (iptables' NFQUEUE target hands
them over: see tests/testbed/netpol/main.go). With the chart installed (the operator
as a pod) and a cluster running, it proves that:

- a pod outside the cluster cannot open the workers' data port or report port;
- the operator pod pulls the reports (the cluster streams with TLS certificates the
  operator hands out over that same port, and its status shows the figures);
- a pod of a monitoring namespace named in the values scrapes `/metrics`;
- another cluster's workers cannot reach this cluster's data port, while this
  cluster's own workers can.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.fixtures import Testbed
from testbed.paths import NODE_NAMES, STATE_ROOT

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[2] / "charts" / "w5xde"
ENFORCER = STATE_ROOT / "netpol" / "w5n-netpol"
OPERATOR_LABELS = "app.kubernetes.io/part-of=w5xde,app.kubernetes.io/component=operator"
DATA_PORT = 7070
METRICS_PORT = 9090

#: Try one TCP connect from inside a pod; prints "open" or the error (a dropped SYN
#: times out: the enforcer answers a refused connection with a drop).
CONNECT = textwrap.dedent("""\
    import socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
        print("open")
    except OSError as error:
        print(f"closed: {error}")
""")
SCRAPE = textwrap.dedent("""\
    import sys, urllib.request
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
            print(response.status, len(response.read()))
    except OSError as error:
        print(f"failed: {error}")
""")


def get_json(testbed: Testbed, *args: str) -> dict[str, Any]:
    result = testbed.kubectl("get", *args, "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


#: The queue the enforcer reads, and the chain that diverts packets into it.
QUEUE = 100
CHAIN = "W5N-NETPOL"
POD_NETWORK = "10.244.0.0/16"
#: New connections from or to a pod go to the enforcer, but for DNS and what root on
#: the host originates (the kubelet's probes, `kubectl exec` through the kubelet), as
#: upstream's own nftables rules do. No bypass: with the enforcer gone, nothing passes.
DIVERT = [
    ["-m", "conntrack", "!", "--ctstate", "NEW", "-j", "RETURN"],
    ["-p", "udp", "--dport", "53", "-j", "RETURN"],
    ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
    ["-d", POD_NETWORK, "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
    ["-s", POD_NETWORK, "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
]


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """iptables-legacy: this kernel has the NFQUEUE target but no nftables `queue`."""
    return subprocess.run(
        ["iptables-legacy", "-w", "-t", "mangle", *args],
        check=check,
        capture_output=True,
        text=True,
    )


def queue_bound() -> bool:
    try:
        lines = Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[:1] == [str(QUEUE)] for line in lines)


def undivert() -> None:
    iptables("-D", "POSTROUTING", "-j", CHAIN, check=False)
    iptables("-F", CHAIN, check=False)
    iptables("-X", CHAIN, check=False)


@pytest.fixture(scope="module")
def enforcer(testbed: Testbed) -> Iterator[subprocess.Popen[bytes]]:
    if not ENFORCER.exists():
        pytest.fail(f"{ENFORCER} is missing: run `make netpol-bin`", pytrace=False)
    if shutil.which("iptables-legacy") is None:
        pytest.fail("iptables-legacy is missing: run `make netpol-bin`", pytrace=False)
    log = (STATE_ROOT / "cluster" / "netpol.log").open("wb")
    process = subprocess.Popen(
        [str(ENFORCER), "--kubeconfig", str(testbed.kubeconfig), "--node", NODE_NAMES[0],
         "--nfqueue-id", str(QUEUE)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        testbed.wait_for(
            lambda: process.poll() is None and queue_bound(),
            60,
            f"the enforcer to read nfqueue {QUEUE}",
        )
        undivert()  # a chain left by an interrupted run
        iptables("-N", CHAIN)
        for rule in DIVERT:
            iptables("-A", CHAIN, *rule)
        iptables("-I", "POSTROUTING", "1", "-j", CHAIN)
        yield process
    finally:
        undivert()  # first: with the enforcer gone, diverted packets would be dropped
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture
def extra_namespace(testbed: Testbed) -> Iterator[Any]:
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}-{suffix}"
        testbed.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_cluster(testbed: Testbed, namespace: str, name: str) -> None:
    testbed.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=textwrap.dedent(f"""\
            apiVersion: w5xde.io/v1alpha1
            kind: CompressionCluster
            metadata:
              name: {name}
            spec:
              workers: 2
              statusIntervalSeconds: 2
              workload:
                rateLimitBytesPerSecond: 2000000
            """),
    )  # fmt: skip


def streaming(testbed: Testbed, namespace: str, name: str) -> dict[str, Any] | None:
    status = get_json(testbed, "cc", name, "-n", namespace).get("status") or {}
    if status.get("readyWorkers") == 2 and status.get("throughputBytesPerSecond", 0) > 0:
        return status
    return None


def pod_ip(testbed: Testbed, namespace: str, pod: str) -> str:
    ip = get_json(testbed, "pod", pod, "-n", namespace)["status"]["podIP"]
    assert ip, f"{namespace}/{pod} has no IP"
    return str(ip)


def run_in(testbed: Testbed, namespace: str, pod: str, script: str, *args: str) -> str:
    result = testbed.kubectl(
        "exec", "-n", namespace, pod, "--", "python", "-c", script, *args, timeout=60
    )
    return result.stdout.strip()


def start_probe_pod(testbed: Testbed, namespace: str, image: str) -> str:
    """A pod with the worker image that only waits (the tests exec into it)."""
    testbed.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=json.dumps({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "labels": {"app": "probe"}},
            "spec": {
                "containers": [{
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }],
                "terminationGracePeriodSeconds": 0,
            },
        }),
    )  # fmt: skip
    testbed.wait_for(
        lambda: (
            (get_json(testbed, "pod", "probe", "-n", namespace).get("status") or {}).get("phase")
            == "Running"
        ),
        90,
        f"pod {namespace}/probe Running",
    )
    return "probe"


def test_the_charts_network_policies_hold_on_the_wire(
    testbed: Testbed,
    namespace: str,
    extra_namespace: Any,
    enforcer: subprocess.Popen[bytes],
) -> None:
    testbed.wait_for(
        lambda: not get_json(testbed, "pods", "-A", "-l", OPERATOR_LABELS).get("items"),
        60,
        "no other W5XDE operator running",
    )
    served = extra_namespace("served")
    monitoring = extra_namespace("monitoring")
    outside = extra_namespace("outside")
    ours = testbed.kubectl("get", "crd", "compressionclusters.w5xde.io", check=False)
    kopf = testbed.kubectl("get", "crd", "kopfpeerings.kopf.dev", check=False)
    release = f"w5xde-{namespace}"
    testbed.helm(
        "install", release, str(CHART), "--namespace", namespace,
        "--values", str(CHART.parents[1] / "tests" / "chart_values" / "local-images.yaml"),
        "--set", f"crds.install={str(ours.returncode != 0).lower()}",
        "--set", f"crds.kopfPeering={str(kopf.returncode != 0).lower()}",
        "--set", f"watchNamespaces={{{served}}}",
        "--set", f"networkPolicy.monitoringNamespaces={{{monitoring}}}",
        "--wait", "--timeout", "3m",
        timeout=240,
    )  # fmt: skip
    try:
        apply_cluster(testbed, served, "demo")
        apply_cluster(testbed, served, "other")
        # The operator pod pulls the reports through the policy: without that the
        # workers would get no certificate, stream nothing, and show no figures.
        status = testbed.wait_for(
            lambda: streaming(testbed, served, "demo"), 240, "cc/demo streaming (reports pulled)"
        )
        assert status["phase"] == "Running"
        testbed.wait_for(lambda: streaming(testbed, served, "other"), 240, "cc/other streaming")
        assert get_json(testbed, "networkpolicy", "demo", "-n", served), "no policy for demo"
        target = pod_ip(testbed, served, "demo-0")
        image = get_json(testbed, "pod", "demo-0", "-n", served)["spec"]["containers"][0]["image"]

        # This cluster's own worker reaches the data port (the policy admits peers) ...
        assert run_in(testbed, served, "demo-1", CONNECT, target, str(DATA_PORT)) == "open"
        # ... another cluster's worker, in the same namespace, does not.
        other = run_in(testbed, served, "other-0", CONNECT, target, str(DATA_PORT))
        assert other.startswith("closed"), other

        # A pod outside the cluster: neither the data port nor the report port; it
        # does reach an unguarded pod (CoreDNS), so its network itself works.
        probe = start_probe_pod(testbed, outside, image)
        for port in (DATA_PORT, METRICS_PORT):
            answer = run_in(testbed, outside, probe, CONNECT, target, str(port))
            assert answer.startswith("closed"), (port, answer)
        dns = get_json(testbed, "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]
        dns_ip = dns[0]["status"]["podIP"]
        assert run_in(testbed, outside, probe, CONNECT, dns_ip, "53") == "open"

        # A pod of the monitoring namespace named in the values scrapes the worker.
        scraper = start_probe_pod(testbed, monitoring, image)
        scraped = run_in(testbed, monitoring, scraper, SCRAPE, f"http://{target}:9090/metrics")
        assert scraped.startswith("200 "), scraped

        # The operator keeps pulling: the cluster's figures keep moving.
        before = get_json(testbed, "cc", "demo", "-n", served)["status"]["totals"]["batches"]
        testbed.wait_for(
            lambda: (
                get_json(testbed, "cc", "demo", "-n", served)["status"]["totals"]["batches"]
                > before
            ),
            60,
            "cc/demo totals to move (the operator's pulls go through)",
        )
        assert enforcer.poll() is None, "the enforcer died"
    finally:
        testbed.kubectl(
            "delete", "cc", "--all", "-n", served, "--wait=true", "--timeout=60s", check=False
        )
        testbed.helm("uninstall", release, "--namespace", namespace, check=False)
