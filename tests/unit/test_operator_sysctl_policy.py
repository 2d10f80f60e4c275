from __future__ import annotations

from w5xde.api.v1alpha1 import NetworkSpec
from w5xde.operator.sysctl_policy import (
    TCP_RMEM,
    TCP_WMEM,
    is_safe,
    parse_server_version,
    plan_sysctls,
    tcp_mem_value,
)


def test_tcp_memory_follows_the_socket_buffer_from_1_32() -> None:
    plan = plan_sysctls(NetworkSpec(socket_buffer_bytes=8 << 20), (1, 32))
    assert dict(plan.sysctls) == {
        TCP_RMEM: f"4096 131072 {8 << 20}",
        TCP_WMEM: f"4096 16384 {8 << 20}",
    }
    assert plan.refused == ()
    assert plan.omitted == ()


def test_tcp_memory_is_omitted_on_older_servers() -> None:
    plan = plan_sysctls(NetworkSpec(), (1, 31))
    assert plan.sysctls == ()
    assert plan.omitted == (TCP_RMEM, TCP_WMEM)


def test_autotuning_sets_no_tcp_memory() -> None:
    plan = plan_sysctls(NetworkSpec(socket_buffer_bytes=0, chunk_bytes=4096), (1, 37))
    assert plan.sysctls == ()
    assert plan.omitted == ()


def test_small_buffer_never_lowers_the_default_column() -> None:
    assert tcp_mem_value(TCP_RMEM, 4096) == "4096 131072 131072"


def test_explicit_value_wins_over_the_derived_one() -> None:
    network = NetworkSpec(sysctls={TCP_RMEM: "4096 87380 1048576"})
    assert dict(plan_sysctls(network, (1, 37)).sysctls)[TCP_RMEM] == "4096 87380 1048576"
    assert plan_sysctls(network, (1, 30)).omitted == (TCP_WMEM,)


def test_unsafe_sysctls_are_refused_unless_allowed() -> None:
    network = NetworkSpec(
        sysctls={"net.ipv4.tcp_congestion_control": "bbr", "net.ipv4.tcp_syncookies": "1"}
    )
    plan = plan_sysctls(network, (1, 37))
    assert plan.refused == ("net.ipv4.tcp_congestion_control",)
    allowed = plan_sysctls(network, (1, 37), allowed_unsafe=("net.ipv4.tcp_c*",))
    assert allowed.refused == ()
    assert ("net.ipv4.tcp_congestion_control", "bbr") in allowed.sysctls


def test_safe_set_grows_with_the_version() -> None:
    assert not is_safe("net.ipv4.tcp_keepalive_time", (1, 28))
    assert is_safe("net.ipv4.tcp_keepalive_time", (1, 29))
    assert is_safe("kernel.shm_rmid_forced", (1, 20))
    assert not is_safe("kernel.msgmax", (1, 37))


def test_server_version_parsing() -> None:
    assert parse_server_version("1", "32+") == (1, 32)
    assert parse_server_version("1", "37") == (1, 37)
