"""Start-up reads started early (``felixpy.dataplane.prefetch``): the first commit plans on them
instead of reading again, a failed or too old read is not used, and a re-read asked for (resync)
never takes one. Writers against in-memory kernels; the whole agent restarted on its own state:
``tests/kernel/test_agent_restart_prefetch.py``."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from felixpy.dataplane import ipset_writer
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_render import rule_hashes
from felixpy.dataplane.kernel_objects import Chain, IpSet, RouteTarget, Rule
from felixpy.dataplane.links import WorkloadLinks
from felixpy.dataplane.netlink_ops import KernelRoute
from felixpy.dataplane.prefetch import Prefetch
from felixpy.dataplane.routes import RouteTable
from tests.fixtures.netlink_fake import FakeNetlink
from tests.unit.test_dataplane_iptables_writer import HOOK, SaveAll


def _chains() -> list[Chain]:
    return [
        Chain("cali-FORWARD", (Rule(match="-i cali+", action="--jump cali-from-wl"),)),
        Chain("cali-from-wl", (Rule(action="--jump ACCEPT"),)),
    ]


def test_prefetch_is_taken_once_and_not_when_failed_or_too_old():
    now = [100.0]
    once = Prefetch("t", lambda: 7, clock=lambda: now[0])
    assert once.take() == (True, 7)
    assert once.take() == (False, None)  # a second commit reads for itself

    def boom() -> int:
        raise OSError("no iptables-save")

    assert Prefetch("t", boom).take() == (False, None)
    old = Prefetch("t", lambda: 7, max_age=30, clock=lambda: now[0])
    assert old.take(wait=5)  # let it finish first
    stale = Prefetch("t", lambda: 7, max_age=30, clock=lambda: now[0])
    stale._done.wait(5)
    now[0] += 31
    assert stale.take() == (False, None)


def test_a_read_still_running_is_waited_for_within_the_bound():
    gate = threading.Event()
    slow = Prefetch("t", lambda: gate.wait(5) and 3)
    assert slow.take(wait=0.05) == (False, None)  # bounded: the caller reads again
    gate.set()
    gate2 = threading.Event()
    later = Prefetch("t", lambda: gate2.wait(5) and 4)
    threading.Timer(0.05, gate2.set).start()
    assert later.take(wait=5) == (True, 4)


def test_first_apply_plans_on_the_prefetched_tables_and_schedules_a_check():
    kernel = SaveAll()
    first = IptablesWriter(kernel, hooks=[HOOK])
    first.set_chains(_chains())
    first.apply()  # a previous agent's rules
    kernel.writes.clear()
    now = [0.0]
    writer = IptablesWriter(kernel, hooks=[HOOK], clock=lambda: now[0], post_write_check=5.0)
    writer.prefetch()
    writer.set_chains(_chains())
    results = writer.apply()
    assert kernel.read_alls == 2 and kernel.reads == []  # the prefetch's save, no other read
    assert kernel.writes == [] and all(r.read for r in results)  # nothing written twice
    assert not writer.post_write_check_due()
    now[0] = 5.0
    assert writer.post_write_check_due()  # a change made since the read is looked for


def test_a_change_between_the_prefetch_and_the_commit_is_repaired_by_the_check():
    kernel = SaveAll()
    first = IptablesWriter(kernel, hooks=[HOOK])
    first.set_chains(_chains())
    first.apply()  # a previous agent's rules
    now = [0.0]
    writer = IptablesWriter(kernel, hooks=[HOOK], clock=lambda: now[0], post_write_check=5.0)
    writer.prefetch()
    writer._prefetch._done.wait(5)  # type: ignore[union-attr]
    kernel.tables["filter"]["cali-from-wl"].clear()  # another program, after the read
    writer.set_chains(_chains())
    writer.apply()  # plans on the read: sees nothing to do
    assert kernel.hashes("filter", "cali-from-wl") == []
    now[0] = 5.0
    writer.post_write_check()
    assert kernel.hashes("filter", "cali-from-wl") == rule_hashes("cali-from-wl", _chains()[1].rules)


def test_resync_never_takes_a_prefetch():
    kernel = SaveAll()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    writer.prefetch()
    writer.set_chains(_chains())
    writer.resync()
    assert kernel.read_alls == 2  # the prefetch's and the resync's own


def test_route_table_start_plans_on_the_prefetched_dump():
    nl = FakeNetlink(["caliA", "caliB"])
    nl.replace_route(KernelRoute("10.0.0.1/32", RouteTarget.device("caliA"), 80))
    nl.replace_route(KernelRoute("10.0.0.9/32", RouteTarget.device("caliB"), 80))
    table = RouteTable(nl)
    table.prefetch()
    calls: list[int] = []
    real = nl.list_routes
    nl.list_routes = lambda **kw: (calls.append(1), real(**kw))[1]  # type: ignore[method-assign]
    table.set_route("10.0.0.1/32", RouteTarget.device("caliA"))
    table.set_route("10.0.0.2/32", RouteTarget.device("caliB"))
    stats = table.start()
    assert calls == [] and (stats.replaced, stats.deleted) == (1, 1)
    assert sorted(dst for _, dst, _ in nl.routes) == ["10.0.0.1/32", "10.0.0.2/32"]
    table.resync()
    assert calls == [1]  # a resync reads


def test_ipset_writer_plans_on_the_prefetched_save(monkeypatch: pytest.MonkeyPatch):
    ran: list[list[str]] = []
    save = "create cali40s:a hash:net family inet hashsize 1024 maxelem 1048576\nadd cali40s:a 10.0.0.1\n"

    def run(argv: list[str], *, netns: str | None = None, input: str | None = None) -> str:
        ran.append(argv)
        return save if argv[1] == "save" else ""

    monkeypatch.setattr(ipset_writer, "run", run)
    writer = ipset_writer.IpsetWriter()
    writer.prefetch()
    writer._prefetch._done.wait(5)  # type: ignore[union-attr]
    writer.update_ipset(IpSet("cali40s:a", "hash:net", "inet", frozenset({"10.0.0.1/32"})))
    assert writer.apply_updates() == []  # already in the kernel: nothing written
    assert ran == [["ipset", "save"]]


@pytest.mark.parametrize(
    "member",
    ["10.0.0.1", "10.0.0.1/32", "0.0.0.0/32", "255.255.255.255", "10.0.0.0/24", "192.0.2.5/31",
     "10.1.2.3,tcp:80", "fd00::1/128", "fd00:0::/64", " 10.0.0.7 ", "192.0.2.5/032"],
)  # fmt: skip
def test_the_plain_address_fast_path_normalises_as_ip_network_does(member: str):
    addr, sep, rest = member.partition(",")
    net = ipaddress.ip_network(addr.strip(), strict=False)
    slow = (str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)) + sep + rest.strip()
    ipset_writer.normalise_member.cache_clear()
    assert ipset_writer.normalise_member(member) == slow


@pytest.mark.parametrize("member", ["192.0.2.05", "256.1.1.1", "192.0.2", "+192.0.2.5", "192.0.2.\u0664"])
def test_the_fast_path_leaves_what_is_not_an_address_to_ip_network(member: str):
    ipset_writer.normalise_member.cache_clear()
    with pytest.raises(ValueError):
        ipset_writer.normalise_member(member)


class _Links(WorkloadLinks):
    """WorkloadLinks over an in-memory list of veth names (no netlink)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.present = list(names)
        self.dumps = 0
        self.deleted: list[str] = []

    def names(self) -> list[str]:
        self.dumps += 1
        return sorted(n for n in self.present if n.startswith(self.prefix))

    def delete(self, host_ifname: str, *, reason: str = "workload removed") -> bool:
        if host_ifname not in self.present:
            return False
        self.present.remove(host_ifname)
        self.deleted.append(host_ifname)
        return True


def test_the_stale_veth_sweep_uses_the_prefetched_link_list_and_deletes_no_more_than_a_fresh_one():
    links = _Links(["calikeep", "caligone", "calistale", "eth0"])
    links.prefetch()
    assert links._prefetch is not None and links._prefetch._done.wait(5)
    links.present.remove("caligone")  # deleted since the read: the sweep skips it
    links.present.append("calinew")  # a CNI ADD since the read: not in the list, left alone
    assert links.remove_stale({"calikeep"}) == ["calistale"]
    assert links.dumps == 1 and links.deleted == ["calistale"]
    assert sorted(links.present) == ["calikeep", "calinew", "eth0"]
    # the early read is taken once: a later sweep reads again (and then sees the new veth)
    assert links.remove_stale({"calikeep"}) == ["calinew"]
    assert links.dumps == 2


def test_the_sweep_reads_for_itself_without_a_prefetch():
    links = _Links(["calia", "calib"])
    assert links.remove_stale({"calia"}) == ["calib"] and links.dumps == 1
