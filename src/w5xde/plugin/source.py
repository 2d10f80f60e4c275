"""Where the plugin's data comes from: the API server, read-only, with clear failures."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from urllib3.exceptions import HTTPError

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


class ClusterSource:
    """Reads one namespace's CompressionClusters with the user's kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (config.ConfigException, FileNotFoundError, OSError) as error:
            raise PluginError(f"cannot load a kubeconfig: {error}") from None
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
            raise PluginError(f"cannot reach the API server: {_short(error)}") from None
        return dict(found)

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


def _api_error(error: Any, what: str) -> PluginError:
    status = getattr(error, "status", 0)
    if status == 404:
        return PluginError(f"{what} not found")
    if status in (401, 403):
        try:
            reason = json.loads(error.body).get("message", "")
        except (TypeError, ValueError):
            reason = ""
        return PluginError(f"not allowed to read {what}: {reason or 'forbidden'}")
    return PluginError(f"cannot read {what}: HTTP {status} {getattr(error, 'reason', '')}")
