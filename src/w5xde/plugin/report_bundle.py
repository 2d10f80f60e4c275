"""`kubectl w5xde report NAME`: a support bundle, like `kubectl cnpg report`.

One `.tar.gz` with everything a maintainer asks for first: the CompressionCluster,
every object it owns (StatefulSet, pods, Services, ServiceAccount, RBAC,
NetworkPolicy, ConfigMaps, and Secrets as names and keys only), the Events about
them, the operator's and the workers' logs (and the previous container's, after a
restart), each worker's report pulled now, and the versions (plugin, operator
Deployments and chart, CRD, API server).  What could not be collected is listed in
`errors.txt` instead of failing the bundle.

Secret data never enters the bundle: Secrets are reduced to their metadata and key
names (and their `last-applied-configuration`, which would carry the data, is
dropped), and before the archive is written every member is checked against every
Secret value read, raw and base64, so a value that slipped in through another path
(a log line, an annotation) stops the bundle with an error rather than shipping.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from w5xde import __version__
from w5xde.api.v1alpha1 import GROUP, PLURAL, VERSION
from w5xde.plugin.source import OPERATOR_SELECTOR, ClusterSource, PluginError

LOG_TAIL_LINES = 5000
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Namespaced kinds a cluster owns, as (file prefix, list path under /api or /apis).
OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("statefulset", "/apis/apps/v1/namespaces/{ns}/statefulsets"),
    ("service", "/api/v1/namespaces/{ns}/services"),
    ("serviceaccount", "/api/v1/namespaces/{ns}/serviceaccounts"),
    ("configmap", "/api/v1/namespaces/{ns}/configmaps"),
    ("secret", "/api/v1/namespaces/{ns}/secrets"),
    ("role", "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
    ("rolebinding", "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
    ("networkpolicy", "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"),
    ("poddisruptionbudget", "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"),
)


class SecretLeakError(Exception):
    """A Secret's value was found in a bundle member: nothing is written."""


@dataclass
class Bundle:
    """The members of the archive, by path, and what could not be collected."""

    root: str
    files: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Every Secret value read while collecting (never written; checked against).
    secret_values: set[bytes] = field(default_factory=set)

    def add(self, path: str, content: str | bytes) -> None:
        self.files[f"{self.root}/{path}"] = (
            content.encode() if isinstance(content, str) else content
        )

    def add_yaml(self, path: str, document: Any) -> None:
        self.add(path, yaml.safe_dump(document, sort_keys=False, default_flow_style=False))

    def collect(self, what: str, step: Callable[[], None]) -> None:
        """Run one collection step; a failure becomes a line of errors.txt."""
        try:
            step()
        except PluginError as error:
            self.errors.append(f"{what}: {error}")
        except Exception as error:  # noqa: BLE001 - a bundle gathers what it can
            status = getattr(error, "status", None)
            reason = f"HTTP {status} {getattr(error, 'reason', '')}" if status else repr(error)
            self.errors.append(f"{what}: {reason}"[:300])


def redact_secret(secret: Mapping[str, Any], seen: set[bytes]) -> dict[str, Any]:
    """A Secret as metadata and key names; its values go to `seen` (for the leak check)."""
    data = dict(secret.get("data") or {})
    strings = dict(secret.get("stringData") or {})
    for value in data.values():
        _remember(seen, str(value).encode())
        with contextlib.suppress(ValueError):
            _remember(seen, base64.b64decode(str(value)))
    for value in strings.values():
        _remember(seen, str(value).encode())
        _remember(seen, base64.b64encode(str(value).encode()))
    metadata = dict(secret.get("metadata") or {})
    annotations = dict(metadata.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    metadata["annotations"] = annotations
    return {
        "apiVersion": secret.get("apiVersion", "v1"),
        "kind": "Secret",
        "metadata": metadata,
        "type": secret.get("type", ""),
        "dataKeys": sorted([*data, *strings]),
        "data": "<redacted: kubectl w5xde report never includes Secret data>",
    }


def _remember(seen: set[bytes], value: bytes) -> None:
    # Values this short occur in any text by chance ("1", "true"): only secrets worth
    # the name are checked, which the cluster key and CA material always are.
    if len(value) >= 8:
        seen.add(value)


def check_no_secret_data(bundle: Bundle) -> None:
    """Raise SecretLeakError if any member contains a Secret value read while collecting."""
    for path, content in bundle.files.items():
        for value in bundle.secret_values:
            if value in content:
                raise SecretLeakError(f"{path} contains Secret data: the bundle was not written")


def write_archive(bundle: Bundle) -> bytes:
    check_no_secret_data(bundle)
    if bundle.errors:
        bundle.add("errors.txt", "\n".join(bundle.errors) + "\n")
    out = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path, content in sorted(bundle.files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mtime = int(now)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def tidy(item: Mapping[str, Any]) -> dict[str, Any]:
    """Drop managedFields: noise to a reader, and large."""
    result = dict(item)
    metadata = dict(result.get("metadata") or {})
    metadata.pop("managedFields", None)
    result["metadata"] = metadata
    return result


def owned_by(item: Mapping[str, Any], uids: Iterable[str]) -> bool:
    wanted = set(uids)
    refs = (item.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") in wanted for ref in refs)


class Collector:
    """Reads what the bundle holds, through the user's kubeconfig, read-only."""

    def __init__(self, source: ClusterSource) -> None:
        self.source = source
        self.api = source._api
        self.namespace = source.namespace

    def get(self, path: str, **query: Any) -> Any:
        method, url, headers, _, _ = self.api.param_serialize(
            "GET", path, query_params=list(query.items()), auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, header_params=headers, _request_timeout=30)
        response.read()  # type: ignore[no-untyped-call]
        if response.status != 200:
            raise PluginError(f"GET {path}: HTTP {response.status}")
        return json.loads(response.data or b"{}")

    def log(self, namespace: str, pod: str, container: str, previous: bool) -> bytes:
        query: dict[str, Any] = {"container": container, "tailLines": LOG_TAIL_LINES}
        if previous:
            query["previous"] = "true"
        method, url, headers, _, _ = self.api.param_serialize(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            query_params=list(query.items()),
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, _request_timeout=30)
        response.read()  # type: ignore[no-untyped-call]
        if response.status != 200:
            raise PluginError(f"logs of {namespace}/{pod}: HTTP {response.status}")
        return bytes(response.data or b"")


def collect(source: ClusterSource, name: str) -> Bundle:
    """Everything the bundle holds; the cluster itself must be readable."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    bundle = Bundle(root=f"w5xde-report-{source.namespace}-{name}-{stamp}")
    collector = Collector(source)
    namespace = source.namespace
    cluster = source.cluster(name)
    bundle.add_yaml("cluster.yaml", tidy(cluster))
    uid = str(cluster["metadata"].get("uid", ""))
    owners = {uid}
    names = {name}

    def owned_objects() -> None:
        for prefix, path in OWNED_KINDS:

            def one_kind(prefix: str = prefix, path: str = path) -> None:
                listed = collector.get(path.format(ns=namespace))
                for item in listed.get("items") or []:
                    if not owned_by(item, owners):
                        continue
                    item_name = item["metadata"]["name"]
                    names.add(item_name)
                    if prefix == "statefulset":
                        owners.add(str(item["metadata"].get("uid", "")))
                    shown = (
                        redact_secret(item, bundle.secret_values) if prefix == "secret" else item
                    )
                    bundle.add_yaml(f"objects/{prefix}-{item_name}.yaml", tidy(shown))

            bundle.collect(f"list {prefix}s", one_kind)

    owned_objects()
    pods: list[dict[str, Any]] = []

    def worker_pods() -> None:
        listed = collector.get(f"/api/v1/namespaces/{namespace}/pods")
        for item in listed.get("items") or []:
            if owned_by(item, owners):
                pods.append(item)
                names.add(item["metadata"]["name"])
                bundle.add_yaml(f"objects/pod-{item['metadata']['name']}.yaml", tidy(item))

    bundle.collect("list pods", worker_pods)

    def events() -> None:
        listed = collector.get(f"/api/v1/namespaces/{namespace}/events")
        about = [
            tidy(item)
            for item in listed.get("items") or []
            if (item.get("involvedObject") or {}).get("name") in names
        ]
        about.sort(key=lambda item: str(item.get("lastTimestamp") or item.get("eventTime") or ""))
        bundle.add_yaml("events.yaml", about)

    bundle.collect("list events", events)

    for pod in pods:
        _add_logs(bundle, collector, pod, "logs/workers")

    def reports() -> None:
        pulled = source.worker_reports(name, sorted(p["metadata"]["name"] for p in pods))
        for pod, report in pulled.items():
            if isinstance(report, str):
                bundle.errors.append(f"report of {pod}: {report}")
            else:
                bundle.add(f"reports/{pod}.json", report.model_dump_json(by_alias=True, indent=2))

    bundle.collect("pull worker reports", reports)
    operator_pods: list[dict[str, Any]] = []

    def operators() -> None:
        listed = collector.get("/api/v1/pods", labelSelector=OPERATOR_SELECTOR)
        operator_pods.extend(listed.get("items") or [])

    bundle.collect("list operator pods", operators)
    for pod in operator_pods:
        _add_logs(bundle, collector, pod, "logs/operator")
    bundle.add_yaml("versions.yaml", _versions(bundle, collector, source))
    return bundle


def _add_logs(bundle: Bundle, collector: Collector, pod: Mapping[str, Any], folder: str) -> None:
    meta = pod["metadata"]
    statuses = {
        item.get("name"): item for item in (pod.get("status") or {}).get("containerStatuses") or []
    }
    for container in (pod.get("spec") or {}).get("containers") or []:
        cname = container["name"]
        base = f"{folder}/{meta['name']}-{cname}"

        def current(base: str = base, cname: str = cname) -> None:
            bundle.add(f"{base}.log", collector.log(meta["namespace"], meta["name"], cname, False))

        bundle.collect(f"logs of {meta['namespace']}/{meta['name']}/{cname}", current)
        if int((statuses.get(cname) or {}).get("restartCount", 0)) > 0:

            def previous(base: str = base, cname: str = cname) -> None:
                content = collector.log(meta["namespace"], meta["name"], cname, True)
                bundle.add(f"{base}.previous.log", content)

            bundle.collect(f"previous logs of {meta['name']}/{cname}", previous)


def _versions(bundle: Bundle, collector: Collector, source: ClusterSource) -> dict[str, Any]:
    versions: dict[str, Any] = {"plugin": __version__}

    def server() -> None:
        found = collector.get("/version")
        versions["apiServer"] = found.get("gitVersion", "")

    def crd() -> None:
        found = collector.get(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}"
        )
        meta = found.get("metadata") or {}
        versions["crd"] = {
            "name": meta.get("name"),
            "labels": meta.get("labels") or {},
            "helmRelease": {
                key: value
                for key, value in (meta.get("annotations") or {}).items()
                if key.startswith("meta.helm.sh/")
            },
            "generation": meta.get("generation"),
            "versions": [
                item.get("name") for item in (found.get("spec") or {}).get("versions") or []
            ],
            "storedVersions": (found.get("status") or {}).get("storedVersions") or [],
            "served": VERSION,
        }

    def operators() -> None:
        listed = collector.get("/apis/apps/v1/deployments", labelSelector=OPERATOR_SELECTOR)
        versions["operators"] = [
            {
                "deployment": f"{item['metadata']['namespace']}/{item['metadata']['name']}",
                "version": (item["metadata"].get("labels") or {}).get("app.kubernetes.io/version"),
                "chart": (item["metadata"].get("labels") or {}).get("helm.sh/chart"),
                "images": [c.get("image") for c in item["spec"]["template"]["spec"]["containers"]],
                "readyReplicas": (item.get("status") or {}).get("readyReplicas", 0),
                "replicas": item["spec"].get("replicas"),
            }
            for item in listed.get("items") or []
        ]

    bundle.collect("API server version", server)
    bundle.collect("CRD", crd)
    bundle.collect("operator Deployments", operators)
    return versions


def report_command(source: ClusterSource, name: str, output: str | None) -> str:
    """Collect, check, write; the path written."""
    bundle = collect(source, name)
    try:
        archive = write_archive(bundle)
    except SecretLeakError as error:
        raise PluginError(str(error)) from None
    path = output or f"{bundle.root}.tar.gz"
    with open(path, "wb") as handle:
        handle.write(archive)
    return path
