"""Pod volumes as directories under the pod's state dir, bind-mounted by the runtime.

Files are written to a temporary name and renamed, so a process reading a
configMap or the service-account token never sees half a file; the token is
refreshed through the TokenRequest API well before it expires.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.nodeagent.podenv import EnvError, field_value

Pod = dict[str, Any]
#: (kind, namespace, name) -> the object's files as bytes, or None when it does not exist.
FileLookup = Callable[[str, str, str], dict[str, bytes] | None]
#: (service account, audience or None, expiration seconds) -> a token bound to the pod.
TokenIssuer = Callable[[str, str | None, int], str]

DEFAULT_TOKEN_SECONDS = 3600


@dataclass
class _Token:
    path: Path
    audience: str | None
    seconds: int
    issued_at: float = 0.0


@dataclass
class PodVolumes:
    """The materialised volumes of one pod, by volume name."""

    root: Path
    paths: dict[str, Path] = field(default_factory=dict)
    _tokens: list[_Token] = field(default_factory=list)

    def refresh_tokens(self, pod: Pod, issue: TokenIssuer) -> None:
        """Re-issue tokens past 80 % of their lifetime, as the kubelet does."""
        now = time.monotonic()
        for token in self._tokens:
            if token.issued_at and now - token.issued_at < 0.8 * token.seconds:
                continue
            account = pod["spec"].get("serviceAccountName") or "default"
            _write(token.path, issue(account, token.audience, token.seconds).encode())
            token.issued_at = now


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    temporary.chmod(0o644)
    temporary.replace(path)


def _project(directory: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None) -> None:
    if items:
        for item in items:
            if item["key"] in data:
                _write(directory / item["path"], data[item["key"]])
        return
    for key, value in data.items():
        _write(directory / key, value)


def _object_files(
    kind: str, namespace: str, source: dict[str, Any], lookup: FileLookup, directory: Path
) -> None:
    name = source.get("name") or source.get("secretName") or ""
    data = lookup(kind, namespace, name)
    if data is None:
        if source.get("optional"):
            return
        raise EnvError(f"{kind} {namespace}/{name} not found (volume)")
    _project(directory, data, source.get("items"))


def _downward(pod: Pod, items: list[dict[str, Any]], directory: Path) -> None:
    for item in items:
        if "fieldRef" in item:
            _write(
                directory / item["path"], field_value(pod, item["fieldRef"]["fieldPath"]).encode()
            )


def prepare(pod: Pod, root: Path, lookup: FileLookup, issue: TokenIssuer) -> PodVolumes:
    namespace = pod["metadata"]["namespace"]
    volumes = PodVolumes(root=root)
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "hostPath" in volume:
            volumes.paths[name] = Path(volume["hostPath"]["path"])
            continue
        directory = root / name
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        directory.chmod(0o777 if "emptyDir" in volume else 0o755)
        volumes.paths[name] = directory
        if "configMap" in volume:
            _object_files("configMap", namespace, volume["configMap"], lookup, directory)
        elif "secret" in volume:
            _object_files("secret", namespace, volume["secret"], lookup, directory)
        elif "downwardAPI" in volume:
            _downward(pod, volume["downwardAPI"].get("items") or [], directory)
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    spec = source["serviceAccountToken"]
                    volumes._tokens.append(
                        _Token(
                            directory / spec["path"],
                            spec.get("audience"),
                            int(spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS),
                        )
                    )
                elif "configMap" in source:
                    _object_files("configMap", namespace, source["configMap"], lookup, directory)
                elif "secret" in source:
                    _object_files("secret", namespace, source["secret"], lookup, directory)
                elif "downwardAPI" in source:
                    _downward(pod, source["downwardAPI"].get("items") or [], directory)
    volumes.refresh_tokens(pod, issue)
    return volumes
