"""The raw start-up queries (felixpy.netlinkio.query) and the removals that ask them first, on the
real kernel in throwaway namespaces: the answers match ``ip``, and a thing that is there is still
removed (the raw read only decides whether pyroute2 is needed). No WireGuard or ipip module needed."""

from __future__ import annotations

import socket

import pytest

from felixpy.dataplane import tunnel_devices, wireguard_kernel
from felixpy.dataplane.sysctl import run_in_netns
from felixpy.netlinkio import query
from felixpy.netlinkio.route_writer import route_socket

pytestmark = pytest.mark.kernel


@pytest.fixture
def ns(netns):  # type: ignore[no-untyped-def]
    ns = netns("nlq")
    ns.run("ip", "link", "add", "eth9", "mtu", "1388", "type", "veth", "peer", "name", "peer9")
    ns.run("ip", "link", "set", "eth9", "up")
    ns.run("ip", "addr", "add", "192.168.61.7/24", "dev", "eth9")
    ns.run("ip", "addr", "add", "192.168.62.7/32", "dev", "eth9", "scope", "link")
    return ns


def _sock(name: str):  # type: ignore[no-untyped-def]
    return lambda: run_in_netns(name, route_socket)


def test_link_index_and_mtu_match_ip_link_and_a_missing_link_is_none(ns) -> None:  # type: ignore[no-untyped-def]
    index = int(ns.run("cat", "/sys/class/net/eth9/ifindex").strip())
    assert query.link("eth9", sock=_sock(ns.name)) == (index, 1388)
    assert query.link_index("no-such-link", sock=_sock(ns.name)) is None


def test_addresses_give_index_address_prefix_and_scope_in_kernel_order(ns) -> None:  # type: ignore[no-untyped-def]
    index = int(ns.run("cat", "/sys/class/net/eth9/ifindex").strip())
    found = [a for a in query.addresses(socket.AF_INET, sock=_sock(ns.name)) if a.ifindex == index]
    want = [query.Address(index, "192.168.61.7", 24, 0), query.Address(index, "192.168.62.7", 32, 253)]
    assert sorted(found) == want
    in_ip = [line.split()[3] for line in ns.run("ip", "-o", "-4", "addr", "show", "dev", "eth9").splitlines()]
    assert [f"{a.address}/{a.prefixlen}" for a in found] == in_ip  # the same order as ip shows


def test_wireguard_rule_removal_reads_rules_raw_and_still_removes_a_leftover(ns) -> None:  # type: ignore[no-untyped-def]
    assert wireguard_kernel.delete_rule(table=1, priority=99, netns=ns.name) is False
    ns.run("ip", "rule", "add", "not", "fwmark", "0x200000/0x200000", "table", "1", "priority", "99")
    rules = query.rules(socket.AF_INET, sock=_sock(ns.name))
    assert any(r.priority == 99 and r.table == 1 and r.fwmark == 0x200000 for r in rules)
    assert wireguard_kernel.delete_rule(table=1, priority=99, netns=ns.name) is True
    assert "lookup 1" not in ns.run("ip", "rule")
    assert wireguard_kernel.delete_rule(table=1, priority=99, netns=ns.name) is False


def test_device_removals_are_no_ops_without_the_device_and_remove_one_that_is_there(ns) -> None:  # type: ignore[no-untyped-def]
    assert wireguard_kernel.device_exists("wireguard.cali", netns=ns.name) is False
    assert wireguard_kernel.delete_device("wireguard.cali", netns=ns.name) is False
    assert tunnel_devices.delete_device("vxlan.calico", netns=ns.name) is False
    ns.run("ip", "link", "add", "vxlan.calico", "type", "veth", "peer", "name", "vxpeer")
    assert tunnel_devices.delete_device("vxlan.calico", netns=ns.name) is True
    assert "vxlan.calico" not in ns.run("ip", "link")


def test_ipv6_wireguard_table_with_nothing_is_skipped_and_a_leftover_removed(ns) -> None:  # type: ignore[no-untyped-def]
    ns.run("ip", "-6", "route", "add", "throw", "fd00:99::/64", "table", "77", "proto", "80")
    v6 = {"device": "wg-none", "table": 77, "netns": ns.name, "family": socket.AF_INET6}
    assert wireguard_kernel.sync_table({}, **v6) == (0, 1)  # type: ignore[arg-type]
    assert ns.run("ip", "-6", "route", "show", "table", "77").strip() == ""
    assert wireguard_kernel.sync_table({}, **v6) == (0, 0)  # type: ignore[arg-type]


def test_veth_deletes_by_name_and_by_index_are_raw_and_count_gone_as_done(ns) -> None:  # type: ignore[no-untyped-def]
    """The CNI DEL's and the start-up sweep's deletes (felixpy.dataplane.links) without pyroute2."""
    from felixpy.dataplane.links import WorkloadLinks, _delete_link

    ns.run("ip", "link", "add", "calidel1", "type", "veth", "peer", "name", "xdel1")
    ns.run("ip", "link", "add", "calidel2", "type", "veth", "peer", "name", "xdel2")
    index = int(ns.run("cat", "/sys/class/net/calidel2/ifindex").strip())
    assert _delete_link(ns.name, name="calidel1") is True
    assert _delete_link(ns.name, name="calidel1") is False
    assert _delete_link(ns.name, index=index) is True
    assert _delete_link(ns.name, index=index) is False
    links = ns.run("ip", "-o", "link")
    assert "calidel" not in links and "xdel" not in links  # each pair went with its host side
    ns.run("ip", "link", "add", "calidel3", "type", "veth", "peer", "name", "xdel3")
    assert WorkloadLinks(prefix="cali", host_netns=ns.name).delete("calidel3") is True
