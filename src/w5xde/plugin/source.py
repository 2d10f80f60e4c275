"""Where the plugin's data comes from: the API server, read-only, with clear failures."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urllib3.exceptions import HTTPError

from w5xde import kube_errors
from w5xde.api.v1alpha1 import GROUP, PLURAL, VERSION
from w5xde.contract import auth
from w5xde.contract.endpoints import METRICS_PORT, REPORT_PATH
from w5xde.contract.report import WorkerReport


class PluginError(Exception):
    """One line for the user, and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str


#: The labels the chart puts on the operator's Deployment (charts/w5xde/_helpers.tpl).
OPERATOR_SELECTOR = "app.kubernetes.io/part-of=w5xde,app.kubernetes.io/component=operator"


@dataclass(frozen=True)
class OperatorDeployment:
    namespace: str
    name: str
    version: str
    image: str
    desired: int
    ready: int


class ClusterSource:
    """Reads one namespace's CompressionClusters with the user's kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        from kubernetes import client, config

        if kubeconfig is not None and not Path(kubeconfig).is_file():
            raise PluginError(f"kubeconfig {kubeconfig} does not exist: check --kubeconfig")
        listed = [item for item in os.environ.get("KUBECONFIG", "").split(os.pathsep) if item]
        if kubeconfig is None and listed and not any(Path(item).is_file() for item in listed):
            raise PluginError(f"$KUBECONFIG names {', '.join(listed)}: no such file")
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (config.ConfigException, FileNotFoundError, OSError) as error:
            message = kube_errors.describe(error) or f"cannot load a kubeconfig: {error}"
            raise PluginError(message) from None
        if context is not None:
            active = next((item for item in contexts or [] if item.get("name") == context), active)
        chosen = namespace or ((active or {}).get("context") or {}).get("namespace") or "default"
        self.namespace: str = chosen
        self._api = client.ApiClient()
        self._custom = client.CustomObjectsApi(self._api)
        self._core = client.CoreV1Api(self._api)

    def cluster(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            found: Any = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as error:
            raise _api_error(error, f"compressioncluster {self.namespace}/{name}") from None
        except (OSError, HTTPError) as error:
            described = kube_errors.describe(error, kube_errors.api_server())
            raise PluginError(
                described or f"cannot reach the API server: {_short(error)}"
            ) from None
        return dict(found)

    def create_cluster(self, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Create (or, with dry_run, have the API server validate) a CompressionCluster."""
        from kubernetes.client.exceptions import ApiException

        name = f"compressioncluster {self.namespace}/{body['metadata']['name']}"
        try:
            created: Any = self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, dry_run="All" if dry_run else None
            )
        except ApiException as error:
            if error.status == 409:
                raise PluginError(
                    f"{name} already exists: delete it (kubectl delete cc) or choose another NAME"
                ) from None
            if error.status == 422:
                raise PluginError(f"the API server refused {name}: {_message(error)}") from None
            if error.status == 404:
                raise PluginError(
                    "the CompressionCluster CRD is not installed (helm install w5xde"
                    " charts/w5xde, README.md)"
                ) from None
            raise _api_error(error, name, verb="create") from None
        return dict(created)

    def delete_cluster(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise _api_error(error, f"compressioncluster {self.namespace}/{name}") from None

    def clusters(self, all_namespaces: bool) -> list[dict[str, Any]]:
        """Every CompressionCluster of the namespace (or of all namespaces), by name."""
        from kubernetes.client.exceptions import ApiException

        where = "all namespaces" if all_namespaces else f"namespace {self.namespace}"
        try:
            if all_namespaces:
                found: Any = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                found = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )
        except ApiException as error:
            raise _api_error(error, f"compressionclusters in {where}") from None
        items: list[dict[str, Any]] = list(found.get("items") or [])
        return sorted(
            items,
            key=lambda item: (item["metadata"].get("namespace", ""), item["metadata"]["name"]),
        )

    def operators(self) -> list[OperatorDeployment] | None:
        """The operator Deployments the chart installed (anywhere); None when not allowed
        to list Deployments, so the caller can say it does not know."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        apps = client.AppsV1Api(self._api)
        try:
            listed = apps.list_deployment_for_all_namespaces(
                label_selector=OPERATOR_SELECTOR, _request_timeout=10
            )
        except ApiException as error:
            if error.status not in (401, 403):
                raise
            try:
                listed = apps.list_namespaced_deployment(
                    self.namespace, label_selector=OPERATOR_SELECTOR, _request_timeout=10
                )
            except ApiException:
                return None
        found = []
        items: list[Any] = list(listed.items or [])
        for item in items:
            labels = item.metadata.labels or {}
            containers = item.spec.template.spec.containers or []
            found.append(
                OperatorDeployment(
                    namespace=item.metadata.namespace,
                    name=item.metadata.name,
                    version=labels.get("app.kubernetes.io/version", ""),
                    image=containers[0].image if containers else "",
                    desired=item.spec.replicas if item.spec.replicas is not None else 1,
                    ready=(item.status.ready_replicas or 0) if item.status else 0,
                )
            )
        return found

    def worker_reports(self, name: str, pods: list[str]) -> dict[str, WorkerReport | str]:
        """Each worker's report through the pod proxy, signed as the operator signs."""
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self._core.read_namespaced_secret(f"{name}-key", self.namespace)
        except ApiException as error:
            raise _api_error(error, f"the cluster key of {self.namespace}/{name}") from None
        import base64

        key = auth.report_key(base64.b64decode((secret.data or {}).get("key", "")))
        reports: dict[str, WorkerReport | str] = {}
        for pod in pods:
            nonce = auth.new_nonce()
            header = auth.authorization(key, "GET", REPORT_PATH, time.time(), nonce)
            try:
                method, url, headers, _, _ = self._api.param_serialize(
                    "GET",
                    f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{METRICS_PORT}"
                    f"/proxy{REPORT_PATH}",
                    header_params={auth.AUTHORIZATION_HEADER: header},
                    auth_settings=["BearerToken"],
                )
                response = self._api.call_api(
                    method, url, header_params=headers, _request_timeout=5
                )
                response.read()  # type: ignore[no-untyped-call]
                if response.status != 200:
                    reports[pod] = f"HTTP {response.status}"
                    continue
                data = response.data or b""
                signature = response.getheader(auth.SIGNATURE_HEADER)  # type: ignore[no-untyped-call]
                auth.verify_response(key, nonce, data, signature)
                reports[pod] = WorkerReport.model_validate_json(data)
            except ApiException as error:
                reports[pod] = f"HTTP {error.status}"
            except (auth.AuthError, ValueError, OSError, HTTPError) as error:
                # A worker that does not answer through the pod proxy (urllib3's
                # MaxRetryError, ReadTimeoutError): its row says so, no traceback.
                reports[pod] = _short(error)
        return reports


def _short(error: BaseException) -> str:
    """An error in one line: its type for urllib3's wrapped ones, at most 80 characters."""
    reason = getattr(error, "reason", None)
    if isinstance(error, HTTPError) and isinstance(reason, BaseException):
        error = reason  # MaxRetryError wraps the timeout or refusal that ended it
    text = str(error).split("\n", 1)[0]
    if isinstance(error, HTTPError):
        text = f"{type(error).__name__}: {text}"
    return text[:80]


def _message(error: Any) -> str:
    """The API server's own message (a Status body), else its HTTP reason."""
    try:
        message = str(json.loads(error.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        message = ""
    return message or str(getattr(error, "reason", "") or "")


def _api_error(error: Any, what: str, verb: str = "read") -> PluginError:
    status = getattr(error, "status", 0)
    if status == 404:
        return PluginError(f"{what} not found")
    if status == 401:
        return PluginError(kube_errors.describe(error, kube_errors.api_server()) or "unauthorized")
    if status == 403:
        return PluginError(f"not allowed to {verb} {what}: {_message(error) or 'forbidden'}")
    return PluginError(f"cannot read {what}: HTTP {status} {getattr(error, 'reason', '')}")
