"""Loading the worker's configuration (the models are `contract.worker_config`) and key.

`W5XDE_CONFIG` and/or a JSON file, plus the per-pod environment: the pod's name, node
and IP from the downward API, and the run's deadline from the operator's run ConfigMap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from w5xde.contract.endpoints import (
    ENV_CLUSTER_KEY,
    ENV_CLUSTER_KEY_FILE,
    ENV_CONFIG,
    ENV_LOG_MODE,
    ENV_NAME,
    ENV_NODE_NAME,
    ENV_POD_IP,
    ENV_RUN_DEADLINE,
)
from w5xde.contract.worker_config import (
    ReportingConfig,
    TlsConfig,
    WorkerConfig,
    WorkerModel,
    WorkerSettings,
    own_index,
    split_host_port,
)

__all__ = [
    "MIN_KEY_BYTES",
    "ConfigError",
    "ReportingConfig",
    "TlsConfig",
    "WorkerConfig",
    "WorkerModel",
    "WorkerSettings",
    "load_cluster_key",
    "load_worker_config",
    "own_index",
    "split_host_port",
]

#: A key shorter than this would make the HMAC proof guessable.
MIN_KEY_BYTES = 16


class ConfigError(ValueError):
    """Configuration the worker cannot run with; the message names the field and the rule."""


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def load_worker_config(
    env: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> WorkerConfig:
    """The config from `W5XDE_CONFIG` and/or a JSON file, with the per-pod env overrides.

    The file is read first and the env JSON merged over it, so an operator can render
    the shared part into a ConfigMap and still set something per pod.
    """
    env = os.environ if env is None else env
    data: dict[str, object] = {}
    if config_file is not None:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"--config: cannot read {config_file}: {error.strerror}") from None
        data.update(_parse_json(text, f"--config {config_file}"))
    if env.get(ENV_CONFIG):
        data.update(_parse_json(env[ENV_CONFIG], ENV_CONFIG))
    if env.get(ENV_NAME):
        data["name"] = env[ENV_NAME]
    if env.get(ENV_NODE_NAME):
        data["node"] = env[ENV_NODE_NAME]
    if env.get(ENV_LOG_MODE):
        data["logMode"] = env[ENV_LOG_MODE]
    if env.get(ENV_POD_IP) and data:
        data["metricsHost"] = env[ENV_POD_IP]
    if env.get(ENV_RUN_DEADLINE) and data:
        try:
            data["runDeadline"] = float(env[ENV_RUN_DEADLINE])
        except ValueError:
            raise ConfigError(
                f"{ENV_RUN_DEADLINE}: {env[ENV_RUN_DEADLINE]!r} is not epoch seconds"
            ) from None
    if not data:
        raise ConfigError(f"config: give {ENV_CONFIG} (JSON) or --config FILE")
    try:
        return WorkerConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def _parse_json(text: str, origin: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{origin}: not valid JSON ({error.msg} at line {error.lineno})"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a JSON object")
    return value


def load_cluster_key(env: Mapping[str, str] | None = None) -> bytes:
    """The shared cluster key from `W5XDE_CLUSTER_KEY` or the file `W5XDE_CLUSTER_KEY_FILE`."""
    env = os.environ if env is None else env
    if env.get(ENV_CLUSTER_KEY):
        key = env[ENV_CLUSTER_KEY].encode()
        origin = ENV_CLUSTER_KEY
    elif env.get(ENV_CLUSTER_KEY_FILE):
        try:
            key = Path(env[ENV_CLUSTER_KEY_FILE]).read_bytes().strip()
        except OSError as error:
            raise ConfigError(
                f"{ENV_CLUSTER_KEY_FILE}: cannot read {env[ENV_CLUSTER_KEY_FILE]}: {error.strerror}"
            ) from None
        origin = ENV_CLUSTER_KEY_FILE
    else:
        raise ConfigError(f"cluster key: set {ENV_CLUSTER_KEY} or {ENV_CLUSTER_KEY_FILE}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{origin}: the cluster key must be at least {MIN_KEY_BYTES} bytes")
    return key
