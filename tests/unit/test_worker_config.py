"""WorkerConfig loading: the operator's rendering contract and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from w5xde.api.v1alpha1 import LogMode
from w5xde.worker.config import ConfigError, load_cluster_key, load_worker_config

BASE = {"name": "demo-2", "clusterId": "uid-1"}


def env_with(**config: object) -> dict[str, str]:
    return {"W5XDE_CONFIG": json.dumps({**BASE, **config})}


def test_peer_pattern_gives_the_list_and_the_index_from_the_ordinal() -> None:
    config = load_worker_config(env_with(peerPattern="demo-{index}.demo.ns.svc:7070", workers=4))
    assert config.peer_list() == [f"demo-{i}.demo.ns.svc:7070" for i in range(4)]
    assert config.peer_list(workers=6)[-1] == "demo-5.demo.ns.svc:7070"
    assert config.index() == 2


def test_explicit_peers_find_the_index_by_host_name() -> None:
    config = load_worker_config(
        env_with(peers=["demo-0.x:7070", "demo-1.x:7070", "demo-2.x:7070"], name="demo-1")
    )
    assert config.index() == 1
    assert config.listen_port() == 7070


def test_env_overrides_and_log_mode_aliases(tmp_path: Path) -> None:
    file = tmp_path / "config.json"
    file.write_text(json.dumps({**BASE, "logMode": "silent", "node": "file-node"}))
    config = load_worker_config(
        {"W5XDE_NAME": "demo-7", "W5XDE_NODE_NAME": "n3", "W5XDE_LOG_MODE": "3"}, file
    )
    assert (config.name, config.node, config.log_mode) == ("demo-7", "n3", LogMode.VERBOSE)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"workload": {"batchBytes": 10}}, "workload.batchBytes"),
        ({"compression": {"level": 23}}, "compression.level"),
        ({"network": {"port": 80}}, "network.port"),
        ({"peers": ["nohost"]}, "host:port"),
        ({"peerPattern": "demo.svc:7070"}, "{index}"),
        ({"bogus": 1}, "bogus"),
        ({"logMode": "loud"}, "logMode"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_worker_config(env_with(**config))


def test_the_key_comes_from_env_or_file_and_must_be_long(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s" * 40 + "\n")
    assert load_cluster_key({"W5XDE_CLUSTER_KEY_FILE": str(key_file)}) == b"s" * 40
    assert load_cluster_key({"W5XDE_CLUSTER_KEY": "e" * 16}) == b"e" * 16
    with pytest.raises(ConfigError, match="at least 16"):
        load_cluster_key({"W5XDE_CLUSTER_KEY": "short"})
    with pytest.raises(ConfigError, match="W5XDE_CLUSTER_KEY"):
        load_cluster_key({})
