"""Kubernetes client failures as one line that names what to fix.

The kubernetes client lets urllib3's own exceptions through (`MaxRetryError` is not an
`OSError`), and its config loader raises `ConfigException` or `FileNotFoundError`
with wording meant for its authors.  `describe` turns each kind a user can cause (no
kubeconfig, a server that does not answer, TLS that does not verify, credentials the
server refuses) into one sentence; anything else stays an error with a traceback,
since that is a bug to report, not a setting to fix.  Used by `kubectl w5xde` and by
`w5xde operator` at start-up.
"""

from __future__ import annotations

import re
import ssl

#: Where the plugin looks for a kubeconfig, and the flags that choose the server.
PLUGIN_HINTS = (
    "pass --kubeconfig, set $KUBECONFIG, or create ~/.kube/config",
    "--kubeconfig and --context",
)
#: The operator: in-cluster credentials first, else $KUBECONFIG (it has no flags for them).
OPERATOR_HINTS = (
    "set $KUBECONFIG or create ~/.kube/config (in a pod: its service account)",
    "$KUBECONFIG",
)
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def api_server() -> str:
    """The API server URL the default client configuration points at ("" if unknown)."""
    try:
        from kubernetes import client

        host: str = client.Configuration.get_default_copy().host or ""
    except Exception:  # noqa: BLE001 - only ever used to enrich a message
        return ""
    return host


def describe(
    error: BaseException, server: str = "", hints: tuple[str, str] = PLUGIN_HINTS
) -> str | None:
    """One line for a configuration, connection, TLS or credential failure; else None.

    `hints`: how this program is told where its kubeconfig is, and which flags (or
    variables) choose the server, so the line names what the user can change."""
    config_hint, server_hint = hints
    import urllib3.exceptions as http_errors
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    where = f" at {server}" if server else ""
    if isinstance(error, ConfigException):
        return _config_problem(str(error), config_hint)
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"kubeconfig {error.filename} does not exist: {config_hint}"
    if isinstance(error, ApiException) and error.status == 401:
        return (
            f"the API server{where} refused the kubeconfig's credentials (401 Unauthorized):"
            " log in again or choose another --context"
        )
    reason: BaseException = error
    if isinstance(error, http_errors.MaxRetryError) and error.reason is not None:
        reason = error.reason
    if isinstance(reason, (http_errors.SSLError, ssl.SSLError)):
        return (
            f"TLS with the API server{where} failed ({_short(reason)}): check the"
            " kubeconfig's certificate-authority and server address"
        )
    if isinstance(
        reason,
        (
            http_errors.NewConnectionError,
            http_errors.ConnectTimeoutError,
            http_errors.ReadTimeoutError,
            http_errors.ProtocolError,
            http_errors.MaxRetryError,
            http_errors.NameResolutionError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return (
            f"cannot reach the API server{where} ({_short(reason)}): is it running, and is"
            f" {server_hint} the one you meant?"
        )
    return None


def _config_problem(text: str, config_hint: str) -> str:
    lowered = text.lower()
    if "no configuration found" in lowered or "service host/port is not set" in lowered:
        return f"no kubeconfig found and not running in a pod: {config_hint}"
    missing = re.search(r"Expected object with name (\S+) in (.+)/contexts list", text)
    if missing:
        return (
            f"context {missing.group(1)!r} is not in the kubeconfig {missing.group(2)}:"
            " choose one `kubectl config get-contexts` lists"
        )
    if "context" in lowered:
        return f"kubeconfig problem: {_one_line(text)} (see `kubectl config get-contexts`)"
    return f"kubeconfig problem: {_one_line(text)}"


def _short(error: BaseException) -> str:
    """The socket's own words, without urllib3's object reprs and errno numbers."""
    if error.args and isinstance(error.args[0], BaseException):
        return _short(error.args[0])
    if isinstance(error, ssl.SSLError) and len(error.args) > 1:
        text = str(error.args[1])
    else:
        text = str(error)
    text = re.sub(r"\[SSL: [A-Z_]+\]\s*|\s*\(_ssl\.c:\d+\)", "", text)
    for marker in ("Failed to establish a new connection: ", "Failed to resolve "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^\(|\)$", "", _ERRNO.sub("", text).strip())
    return _one_line(text) or type(error).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
