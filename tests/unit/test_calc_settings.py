"""Agent settings: Felix parameter precedence (env > node.<name> > default > built-in) and parsing."""

from __future__ import annotations

import pytest

from felixpy.runtime.autodetect import HostAddress, pick
from felixpy.runtime.settings import FelixParams, Settings, parse_duration


def test_precedence() -> None:
    p = FelixParams.resolve(
        {"FELIX_ROUTEREFRESHINTERVAL": "5s", "FELIX_HEALTHPORT": "9100"},
        {"routeRefreshInterval": "30s", "vethMTU": 1400, "healthEnabled": "false"},
        {"routeRefreshInterval": "60s", "vethMTU": 1300, "iptablesRefreshInterval": "1m30s"},
    )
    assert p.routeRefreshInterval == 5.0 and p.healthPort == 9100
    assert p.vethMTU == 1400 and p.iptablesRefreshInterval == 90.0 and p.healthEnabled is False
    assert FelixParams.resolve({}).routeRefreshInterval == 90.0


def test_durations() -> None:
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5 and parse_duration(7) == 7
    with pytest.raises(ValueError):
        parse_duration("ten seconds")


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "NODENAME": "n1",
            "FELIXPY_RUN_DIR": "/r",
            "CALICO_NETWORKING_BACKEND": "none",
            "FELIX_VETHMTU": "1400",
            "NO_DEFAULT_POOLS": "true",
        }
    )
    assert s.nodename == "n1" and s.socket_path == "/r/cni.sock" and s.mtu_path == "/r/mtu"
    assert not s.bgp_enabled and s.no_default_pools and s.env == {"FELIX_VETHMTU": "1400"}


def test_autodetect_pick() -> None:
    addrs = [
        HostAddress("lo", "127.0.0.1/8"),
        HostAddress("cali1", "10.9.0.1/32"),
        HostAddress("eth1", "10.0.0.5/24"),
        HostAddress("eth2", "10.1.0.5/24"),
    ]
    assert pick(addrs, "first-found") == addrs[2]
    assert pick(addrs, "interface=eth2") == addrs[3]
    assert pick(addrs, "interface=wlan.*") is None


def test_default_pools_per_ip_version() -> None:
    from felixpy.runtime.startup import default_pools

    plain = default_pools(Settings.from_env({"NODENAME": "n1"}))
    assert [(p.name, p.spec.cidr, p.spec.block_size) for p in plain] == [
        ("default-ipv4-ippool", "192.168.0.0/16", 26)
    ]
    dual = default_pools(
        Settings.from_env(
            {
                "NODENAME": "n1",
                "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
                "CALICO_IPV4POOL_BLOCK_SIZE": "28",
                "CALICO_IPV6POOL_CIDR": "fd00:10:244::/48",
            }
        )
    )
    got = [(p.name, p.spec.cidr, p.spec.block_size, p.spec.nat_outgoing) for p in dual]
    assert got == [
        ("default-ipv4-ippool", "10.244.0.0/16", 28, True),
        ("default-ipv6-ippool", "fd00:10:244::/48", 122, False),
    ]
    assert FelixParams.resolve({}).ipv6Support is True
    assert FelixParams.resolve({"FELIX_IPV6SUPPORT": "false"}).ipv6Support is False


def test_failsafe_ports_and_endpoint_to_host_action_resolve_like_felix() -> None:
    from felixpy.runtime.settings import FelixParams

    params = FelixParams.resolve(
        {"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22, udp:68"},
        None,
        {
            "failsafeOutboundHostPorts": [{"protocol": "TCP", "port": 179}],
            "defaultEndpointToHostAction": "Accept",
        },
    )
    assert params.failsafeInboundHostPorts == (("tcp", 22), ("udp", 68))
    assert params.failsafeOutboundHostPorts == (("tcp", 179),)
    assert params.defaultEndpointToHostAction == "ACCEPT"
    assert FelixParams.resolve({"FELIX_FAILSAFEINBOUNDHOSTPORTS": "none"}).failsafeInboundHostPorts == ()
    assert FelixParams().defaultEndpointToHostAction == "DROP"  # Felix's built-in default
