"""The operator's few calls to the API server, on plain dicts.

Owned objects go through server-side apply with one field manager: applying the same
object twice is a no-op, and objects left by an earlier operator process are adopted
(their fields re-owned) instead of conflicting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from w5xde.api.v1alpha1 import GROUP, PLURAL, VERSION

FIELD_MANAGER = "w5xde-operator"
APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"


class Kube:
    """Typed-client calls keyed by kind, returning the server's JSON as dicts."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.version = client.VersionApi(api_client)

    def _patchers(self) -> dict[str, Callable[..., Any]]:
        return {
            "ServiceAccount": self.core.patch_namespaced_service_account,
            "Service": self.core.patch_namespaced_service,
            "Secret": self.core.patch_namespaced_secret,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Role": self.rbac.patch_namespaced_role,
            "RoleBinding": self.rbac.patch_namespaced_role_binding,
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
            "NetworkPolicy": self.networking.patch_namespaced_network_policy,
        }

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply; the operator takes over fields other managers set."""
        patch = self._patchers()[obj["kind"]]
        meta = obj["metadata"]
        response = patch(
            meta["name"],
            meta["namespace"],
            dict(obj),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,
        )
        return _json(response)

    def create_if_absent(self, obj: Mapping[str, Any]) -> bool:
        """True if created; an existing object (e.g. the cluster key) is left untouched."""
        if obj["kind"] != "Secret":
            raise ValueError(f"create_if_absent is only for Secrets, not {obj['kind']}")
        try:
            body: Any = dict(obj)  # the client accepts plain dicts despite its V1Secret hint
            self.core.create_namespaced_secret(
                obj["metadata"]["namespace"],
                body,
                field_manager=FIELD_MANAGER,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def read_statefulset(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.apps.read_namespaced_stateful_set(
                name, namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        response = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        items: list[dict[str, Any]] = _json(response).get("items", [])
        return items

    def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of a Secret the operator owns (a key rotation)."""
        response = self.core.patch_namespaced_secret(
            name, namespace, dict(patch), _content_type=MERGE_PATCH, _preload_content=False
        )
        return _json(response)

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret read by name (the operator never lists Secrets); None if absent."""
        try:
            response = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def patch_cluster_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the CompressionCluster's `status`; the object as stored."""
        response = self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        return _json(response)

    def read_peering_status(self, name: str, namespace: str | None) -> dict[str, Any]:
        """The `status` of kopf's peering object: every replica's priority and last sign."""
        if namespace is None:
            response = self.custom.get_cluster_custom_object(
                PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", name, _preload_content=False
            )
        else:
            response = self.custom.get_namespaced_custom_object(
                PEERING_GROUP,
                PEERING_VERSION,
                namespace,
                "kopfpeerings",
                name,
                _preload_content=False,
            )
        status: dict[str, Any] = _json(response).get("status") or {}
        return status

    def delete_if_present(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object an earlier version owned; False if it was not there."""
        deleters: dict[str, Callable[..., Any]] = {
            "Role": self.rbac.delete_namespaced_role,
            "RoleBinding": self.rbac.delete_namespaced_role_binding,
        }
        try:
            deleters[kind](name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status in (403, 404):
                # 403: RBAC that never allowed it (a chart without the rule) — the old
                # object is then harmless leftovers, not a reason to fail a reconcile.
                return False
            raise
        return True

    def delete_if_owned(self, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete an object only if `owner_uid` is its controller; False if nothing went.

        A same-named object someone else made is left alone.  The delete is conditional
        on the uid read, so an object re-created in between is not taken either.
        """
        readers: dict[str, Callable[..., Any]] = {
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
            "Service": self.core.read_namespaced_service,
        }
        deleters: dict[str, Callable[..., Any]] = {
            "NetworkPolicy": self.networking.delete_namespaced_network_policy,
            "Service": self.core.delete_namespaced_service,
        }
        try:
            found = _json(readers[kind](name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        metadata = found.get("metadata") or {}
        owners = metadata.get("ownerReferences") or []
        if not any(ref.get("uid") == owner_uid and ref.get("controller") for ref in owners):
            return False
        body: Any = {"preconditions": {"uid": metadata.get("uid")}}
        try:
            deleters[kind](name, namespace, body=body, _preload_content=False)
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    def post_event(
        self, regarding: Mapping[str, Any], type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about a CompressionCluster, as `kubectl describe` shows them.

        The fold loop runs outside kopf's handlers, where kopf's own event queue is not
        available, so it posts through the API directly.
        """
        metadata = regarding["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion") or f"{GROUP}/{VERSION}",
                "kind": regarding.get("kind") or "CompressionCluster",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.core.create_namespaced_event(metadata["namespace"], body, _preload_content=False)

    def server_version(self) -> tuple[str, str]:
        info = self.version.get_code()
        return str(info.major), str(info.minor)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data or b"{}")
    return data
