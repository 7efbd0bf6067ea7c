"""IP / IP6 and their autodetection methods: calico-node's values accepted, anything else refused
naming the variable (before the agent touches the datastore or the kernel)."""

from __future__ import annotations

import pytest

from felixpy.runtime.autodetect import HostAddress, pick
from felixpy.runtime.settings import Settings


def _settings(**env: str) -> Settings:
    return Settings.from_env({"NODENAME": "n", **env})


def test_defaults_are_calico_nodes() -> None:
    s = _settings()
    assert (s.ip, s.ip_autodetection_method, s.ip6, s.ip6_autodetection_method) == (
        "autodetect",
        "first-found",
        "none",
        "first-found",
    )


@pytest.mark.parametrize(
    "env",
    [
        {"IP": "10.0.0.5"},
        {"IP": "10.0.0.5/24"},
        {"IP": "none"},
        {"IP6": "autodetect"},
        {"IP6": "fd00::5/64"},
        {"IP6": "fd00::5"},
        {"IP6_AUTODETECTION_METHOD": "interface=eth[0-9]+"},
        {"IP6_AUTODETECTION_METHOD": "can-reach=2001:db8::1"},
        {"IP_AUTODETECTION_METHOD": "can-reach=192.0.2.1"},
    ],
)
def test_calico_values_accepted(env: dict[str, str]) -> None:
    _settings(**env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IP6": "10.0.0.5"}, "IP6='10.0.0.5': not an IPv6 address"),
        ({"IP": "fd00::5"}, "IP='fd00::5': not an IPv4 address"),
        ({"IP6": "auto"}, "IP6='auto': not an address, an address/prefix, 'autodetect' or 'none'"),
        (
            {"IP6_AUTODETECTION_METHOD": "interface=eth["},
            "IP6_AUTODETECTION_METHOD='interface=eth[': not a regular",
        ),
        (
            {"IP6_AUTODETECTION_METHOD": "skip-interface=x"},
            "IP6_AUTODETECTION_METHOD='skip-interface=x': use",
        ),
        ({"IP_AUTODETECTION_METHOD": "can-reach="}, "IP_AUTODETECTION_METHOD='can-reach=': use"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        _settings(**env)
    assert message in str(err.value)


def test_first_found_passes_over_our_own_and_virtual_interfaces_for_ipv6_too() -> None:
    found = [
        HostAddress("cali1234", "fd00:99::1/64"),
        HostAddress("docker0", "fd00:98::1/64"),
        HostAddress("eth0", "2001:db8::5/64"),
    ]
    assert pick(found, "first-found") == found[2]
    with pytest.raises(ValueError, match="unsupported IP6_AUTODETECTION_METHOD"):
        pick(found, "bogus", "IP6_AUTODETECTION_METHOD")
