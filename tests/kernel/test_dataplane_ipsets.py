"""IpsetWriter inside a throwaway namespace (ipsets are per netns)."""

from __future__ import annotations

import pytest

from felixpy.dataplane.ipset_writer import IpsetWriter, parse_save
from felixpy.dataplane.kernel_objects import IpSet

pytestmark = pytest.mark.kernel


def _sets(ns):
    return parse_save(ns.run("ipset", "save"))


def test_create_swap_delete_and_foreign_set_untouched(netns):
    ns = netns("ips")
    ns.run("ipset", "create", "foreign", "hash:ip")
    ns.run("ipset", "create", "cali40stale", "hash:net")
    writer = IpsetWriter(netns=ns.name)
    pods = IpSet("cali40s:abc", members=frozenset({"10.65.0.2/32", "10.65.1.0/26"}))
    v6 = IpSet("cali60s:abc", family="inet6", members=frozenset({"fd00::2/128"}))
    writer.set_ipsets([pods, v6])
    assert sorted(writer.apply()) == ["cali40s:abc", "cali40stale", "cali60s:abc"]
    have = _sets(ns)
    assert have["cali40s:abc"].members == {"10.65.0.2", "10.65.1.0/26"}
    assert have["cali60s:abc"].members == {"fd00::2"}
    assert "cali40stale" not in have and "foreign" in ns.run("ipset", "list", "-n")
    # referenced by iptables: a member change must swap in place (destroy would fail)
    ns.run("iptables-legacy", "-A", "INPUT", "-m", "set", "--match-set", "cali40s:abc", "src", "-j", "DROP")
    writer.update_ipset(IpSet("cali40s:abc", members=frozenset({"10.65.0.3/32"})))
    assert writer.apply() == ["cali40s:abc"]
    have = _sets(ns)
    assert have["cali40s:abc"].members == {"10.65.0.3"}
    assert not [n for n in have if n.startswith("cali4t")]  # temp set gone
    assert "References: 1" in ns.run("ipset", "list", "cali40s:abc")
    assert writer.apply() == []  # converged


def test_resync_repairs_member_removed_by_hand(netns):
    ns = netns("ips")
    writer = IpsetWriter(netns=ns.name)
    writer.set_ipsets([IpSet("cali40all-ipam-pools", members=frozenset({"10.65.0.0/16", "10.66.0.0/16"}))])
    writer.apply()
    ns.run("ipset", "del", "cali40all-ipam-pools", "10.66.0.0/16")
    assert writer.apply() == []  # cached view: no kernel read
    assert writer.resync() == ["cali40all-ipam-pools"]
    assert _sets(ns)["cali40all-ipam-pools"].members == {"10.65.0.0/16", "10.66.0.0/16"}


def test_referenced_set_deletion_is_retried(netns):
    ns = netns("ips")
    writer = IpsetWriter(netns=ns.name)
    writer.set_ipsets([IpSet("cali40x")])
    writer.apply()
    ns.run("iptables-legacy", "-A", "INPUT", "-m", "set", "--match-set", "cali40x", "src", "-j", "DROP")
    writer.set_ipsets([])
    assert writer.apply() == []
    ns.run("iptables-legacy", "-F", "INPUT")
    assert writer.apply() == ["cali40x"]
