"""The few API calls the node agent makes, on plain dicts (the JSON the API server speaks)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
REQUEST_TIMEOUT = 30


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(response: Any) -> Obj:
    return dict(json.loads(response.data))


class _ReadingApi:
    """Reads every response to its end and gives the connection back to the pool.

    A raw (`_preload_content=False`) response left unread is closed when it is
    garbage-collected; the API server then sees a broken pipe and may abort the
    request (a status patch silently lost).
    """

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
            response = method(*args, **kwargs)
            if kwargs.get("_preload_content") is False:
                _ = response.data
                response.release_conn()
            return response

        return call


class Kube:
    def __init__(self, kubeconfig: Path) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        self.api_client = client.ApiClient(configuration)
        #: Unwrapped, for the pod watch (a stream must not be read to its end first).
        self.core_api = client.CoreV1Api(self.api_client)
        self.core = _ReadingApi(self.core_api)
        self.coordination = _ReadingApi(client.CoordinationV1Api(self.api_client))

    # pods
    def list_pods(self) -> tuple[list[Obj], str]:
        data = _json(self.core.list_pod_for_all_namespaces(_preload_content=False))
        return list(data.get("items") or []), str(data["metadata"]["resourceVersion"])

    def patch_pod_status(self, namespace: str, name: str, status: Obj) -> None:
        self.core.patch_namespaced_pod_status(
            name, namespace, {"status": status}, _preload_content=False
        )

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name,
                namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                _preload_content=False,
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def event(self, pod: Obj, reason: str, message: str, kind: str = "Warning") -> None:
        metadata = pod["metadata"]
        body = {
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": now_rfc3339(),
            "lastTimestamp": now_rfc3339(),
            "count": 1,
        }
        with contextlib.suppress(ApiException):  # events are best effort, as with the kubelet
            self.core.create_namespaced_event(metadata["namespace"], body, _preload_content=False)

    # what pods refer to
    def headless_services(self) -> set[tuple[str, str]]:
        data = _json(self.core.list_service_for_all_namespaces(_preload_content=False))
        return {
            (s["metadata"]["namespace"], s["metadata"]["name"])
            for s in data.get("items") or []
            if (s.get("spec") or {}).get("clusterIP") == "None"
        }

    def object_files(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            if kind == "secret":
                data = _json(
                    self.core.read_namespaced_secret(name, namespace, _preload_content=False)
                )
                return {k: base64.b64decode(v) for k, v in (data.get("data") or {}).items()}
            data = _json(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        files = {k: str(v).encode() for k, v in (data.get("data") or {}).items()}
        files.update({k: base64.b64decode(v) for k, v in (data.get("binaryData") or {}).items()})
        return files

    def object_text(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        files = self.object_files(kind, namespace, name)
        if files is None:
            return None
        return {k: v.decode(errors="replace") for k, v in files.items()}

    def request_token(
        self, pod: Obj, service_account: str, audience: str | None, seconds: int
    ) -> str:
        metadata = pod["metadata"]
        spec: Obj = {
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "uid": metadata["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        response = self.core.create_namespaced_service_account_token(
            service_account,
            metadata["namespace"],
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            _preload_content=False,
        )
        return str(_json(response)["status"]["token"])
