"""A container's environment, resolved as the kubelet does (downward API, refs, $(VAR))."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from testbed.paths import APISERVER_PORT, BRIDGE_IP, VENV_BIN

Pod = dict[str, Any]
#: (kind, namespace, name) -> the object's data (secrets already base64-decoded), or None.
Lookup = Callable[[str, str, str], dict[str, str] | None]

DEFAULT_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class EnvError(RuntimeError):
    """A reference that cannot be resolved (yet): the container waits, as with the kubelet."""


def field_value(pod: Pod, path: str) -> str:
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.hostIPs": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = metadata.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise EnvError(f"unsupported fieldRef {path!r}")


def resource_value(container: dict[str, Any], ref: dict[str, Any]) -> str:
    """Best effort: the limit or request as written, else the node's notional capacity."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        return "8" if name == "cpu" else str(16 * 1024**3)
    return str(value)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: unknown references stay as written, $$ escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)


def _from_ref(namespace: str, kind: str, ref: dict[str, Any], lookup: Lookup) -> str | None:
    data = lookup(kind, namespace, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise EnvError(f"{kind} {namespace}/{ref['name']} not found")
    if ref["key"] not in data:
        if optional:
            return None
        raise EnvError(f"key {ref['key']!r} not in {kind} {namespace}/{ref['name']}")
    return data[ref["key"]]


def container_env(pod: Pod, container: dict[str, Any], lookup: Lookup) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {
        "PATH": DEFAULT_PATH,
        "HOME": "/tmp",
        "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
        "KUBERNETES_SERVICE_HOST": BRIDGE_IP,
        "KUBERNETES_SERVICE_PORT": str(APISERVER_PORT),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(APISERVER_PORT),
        "KUBERNETES_PORT": f"tcp://{BRIDGE_IP}:{APISERVER_PORT}",
        "PYTHONUNBUFFERED": "1",
    }
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind in ("configMap", "secret"):
            ref = source.get(f"{kind}Ref")
            if ref is None:
                continue
            data = lookup(kind, namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f"{kind} {namespace}/{ref['name']} not found")
            env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source:
            value = _from_ref(namespace, "configMap", source["configMapKeyRef"], lookup)
        elif "secretKeyRef" in source:
            value = _from_ref(namespace, "secret", source["secretKeyRef"], lookup)
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (data or {}).items()}
