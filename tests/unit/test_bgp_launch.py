"""bgp.exabgp_launch: ExaBGP's per-neighbour copy of a route, made cheap but still independent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("exabgp")

from exabgp.bgp.message import Action
from exabgp.bgp.message.update.attribute import Attribute, Attributes, NextHop
from exabgp.bgp.message.update.nlri.cidr import CIDR
from exabgp.bgp.message.update.nlri.inet import INET
from exabgp.bgp.neighbor import Neighbor
from exabgp.protocol.family import AFI, SAFI
from exabgp.protocol.ip import IP, IPSelf
from exabgp.rib.change import Change

from bgp import exabgp_launch


@pytest.fixture
def patched() -> Iterator[None]:
    original = Neighbor.remove_self
    assert exabgp_launch.patch() is True  # 5.0.15 is what the venv pins
    assert Neighbor.remove_self is exabgp_launch._remove_self
    yield
    Neighbor.remove_self = original


def neighbor() -> Any:
    n = Neighbor()
    n["local-address"] = IP.create("10.0.0.1")
    n["router-id"] = IP.create("10.0.0.1")
    return n


def change(next_hop: str) -> Any:
    nlri = INET(AFI.ipv4, SAFI.unicast, Action.ANNOUNCE)
    nlri.cidr = CIDR(IP.pton("10.65.0.0"), 26)
    nlri.nexthop = IPSelf(AFI.ipv4) if next_hop == "self" else IP.create(next_hop)
    attrs = Attributes()
    attrs.add(NextHop("10.0.0.9", IP.pton("10.0.0.9")))
    return Change(nlri, attrs)


def test_copies_are_independent_where_the_rib_writes(patched: None) -> None:
    original = change("10.0.0.9")
    one, two = neighbor().remove_self(original), neighbor().remove_self(original)
    assert one is not original and one.nlri is not original.nlri and one.nlri is not two.nlri
    one.nlri.action = Action.WITHDRAW  # what the outgoing RIB does on a withdrawal
    assert two.nlri.action == Action.ANNOUNCE and original.nlri.action == Action.ANNOUNCE
    assert one.attributes is original.attributes  # shared, as between the NLRIs of one command
    assert str(one.nlri.nexthop) == "10.0.0.9"


def test_next_hop_self_is_rewritten_on_a_copy(patched: None) -> None:
    original = change("self")
    rewritten = neighbor().remove_self(original)
    assert str(rewritten.nlri.nexthop) == "10.0.0.1"  # the session's local address
    assert str(rewritten.attributes[Attribute.CODE.NEXT_HOP]) == "10.0.0.1"
    assert rewritten.attributes is not original.attributes
    assert original.nlri.nexthop.SELF and str(original.attributes[Attribute.CODE.NEXT_HOP]) == "10.0.0.9"


def test_same_result_as_exabgps_own_copy(patched: None) -> None:
    ours = neighbor().remove_self(change("self"))
    Neighbor.remove_self = exabgp_launch._ORIGINAL or Neighbor.remove_self
    theirs = neighbor().remove_self(change("self"))
    assert ours == theirs and ours.index() == theirs.index()


def test_other_versions_run_unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    import exabgp.version

    original = Neighbor.remove_self
    monkeypatch.setattr(exabgp.version, "version", "9.9.9")
    assert exabgp_launch.patch() is False
    assert Neighbor.remove_self is original


class _Queue:
    def __init__(self, queued: bool) -> None:
        self.queued = queued

    def ready(self) -> bool:
        return not self.queued


def test_reactor_takes_queued_api_work_without_sleeping() -> None:
    from exabgp.reactor.loop import Reactor

    original = Reactor._wait_for_io
    asked: list[int] = []

    def fake_wait(self: Any, sleeptime: int) -> Iterator[int]:
        asked.append(sleeptime)
        return iter(())

    try:
        Reactor._wait_for_io = fake_wait
        assert exabgp_launch.patch_reactor() is True
        reactor = Reactor.__new__(Reactor)  # only the attribute the patch reads
        reactor.asynchronous = _Queue(queued=True)
        list(reactor._wait_for_io(50))
        reactor.asynchronous = _Queue(queued=False)
        list(reactor._wait_for_io(50))
        assert asked == [0, 50]  # commands waiting: poll without a timeout; none: ExaBGP's own sleep
    finally:
        Reactor._wait_for_io = original


def test_reactor_left_alone_on_other_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    import exabgp.version
    from exabgp.reactor.loop import Reactor

    original = Reactor._wait_for_io
    monkeypatch.setattr(exabgp.version, "version", "9.9.9")
    assert exabgp_launch.patch_reactor() is False
    assert Reactor._wait_for_io is original
