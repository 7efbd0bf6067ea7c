"""The CNI network config's ``ipam`` section as the agent-side handler reads it (pure)."""

from __future__ import annotations

import pytest

from felixpy.cni.request import HandlerError, IpamOptions, format_result, ipam_options


def test_defaults_to_one_ipv4_address() -> None:
    assert ipam_options({}) == IpamOptions(1, 0, ())
    assert ipam_options({"ipam": {"type": "calico-ipam"}}) == IpamOptions(1, 0, ())


def test_dual_stack_and_ipv6_only() -> None:
    dual = {"ipam": {"assign_ipv4": "true", "assign_ipv6": "true"}}
    assert ipam_options(dual) == IpamOptions(1, 1, ())
    assert ipam_options({"ipam": {"assign_ipv4": False, "assign_ipv6": True}}) == IpamOptions(0, 1, ())


def test_pools_of_the_families_asked_for_only() -> None:
    conf = {"ipam": {"assign_ipv6": "true", "ipv4_pools": ["p4"], "ipv6_pools": ["fd00::/48"]}}
    assert ipam_options(conf).pools == ("p4", "fd00::/48")
    conf["ipam"]["assign_ipv6"] = "false"
    assert ipam_options(conf).pools == ("p4",)


@pytest.mark.parametrize(
    "ipam",
    [
        {"assign_ipv4": "false", "assign_ipv6": "false"},
        {"assign_ipv6": "maybe"},
        {"ipv6_pools": "fd00::/48", "assign_ipv6": "true"},
        "calico-ipam",
    ],
)
def test_unusable_config_is_error_7(ipam: object) -> None:
    with pytest.raises(HandlerError) as err:
        ipam_options({"ipam": ipam})
    assert err.value.code == 7


def test_result_lists_both_families_with_one_default_route_each() -> None:
    res = format_result(
        "1.0.0",
        host_iface="cali1",
        host_mac="ee:ee:ee:ee:ee:ee",
        ifname="eth0",
        mac="02:00:00:00:00:01",
        sandbox="/ns",
        addresses=["10.0.0.5/32", "fd00::5/128"],
    )
    assert [i["address"] for i in res["ips"]] == ["10.0.0.5/32", "fd00::5/128"]
    assert res["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    legacy = format_result(
        "0.4.0",
        host_iface="cali1",
        host_mac="m",
        ifname="eth0",
        mac="m",
        sandbox="/ns",
        addresses=["fd00::5/128"],
    )
    assert legacy["ips"] == [{"address": "fd00::5/128", "interface": 1, "version": "6"}]
    assert legacy["routes"] == [{"dst": "::/0"}]
