"""BGPFilter ``setPriority`` (Calico v3.32, rendered by Calico as BIRD's ``krt_metric = N``): an import
rule sets the kernel metric the learned route is installed at; export rules' ``priority`` matches
see it; on export it changes nothing sent (BGP carries no metric). The FIB writes the route at its
metric and retires the old one when the metric changes."""

from __future__ import annotations

from bgp import exabgp_api as api
from bgp.fib import Fib, FibRoute, NextHop, Resolver
from bgp.peer_filters import compile_filter, facts_of, import_decision, operate
from bgp.route import PathAttrs, PeerInfo, Route
from bgp.rtnl import bgp_metric, fib_metric, from_kernel, to_kernel
from felixpy.netlinkio.messages import Hop
from felixpy.netlinkio.messages import Route as KernelRoute
from tests.unit.test_bgp_engine import MemoryRoutes
from tests.unit.test_bgp_peer_options import TOR, bgp_filter, desired, make, peer

PRIO = [{"setPriority": {"value": 512}}]


def compiled(**spec: object) -> object:
    pf, missing = compile_filter(["f"], {"f": bgp_filter("f", **spec)})
    assert pf is not None and not missing
    return pf


def test_set_priority_is_accepted_and_compiled_last_one_wins() -> None:
    ops = [{"setPriority": {"value": 100}}, {"addCommunity": {"value": "65000:1"}},
           {"setPriority": {"value": 300}}]  # fmt: skip
    pf = compiled(importV4=[{"action": "Accept", "operations": ops}])
    rule = pf.import_v4[0]  # type: ignore[attr-defined]
    assert rule.set_priority == 300 and rule.operates
    attrs = operate(rule, PathAttrs(as_path=(65001,)))
    assert attrs.priority == 300 and attrs.communities == ("65000:1",) and attrs.as_path == (65001,)


def test_import_sets_the_priority_that_export_priority_matches_then_see() -> None:
    pf = compiled(
        importV4=[{"action": "Accept", "cidr": "10.65.5.0/26", "matchOperator": "Equal", "operations": PRIO}],
        exportV4=[{"action": "Reject", "priority": 512}],
    )
    reason, attrs = import_decision(pf, "10.65.5.0/26", PathAttrs())  # type: ignore[arg-type]
    assert reason is None and attrs.priority == 512
    untouched = import_decision(pf, "10.65.6.0/26", PathAttrs())[1]  # type: ignore[arg-type]
    assert untouched.priority is None
    assert facts_of(attrs, learned=True, ebgp=False, version=4).priority == 512
    assert facts_of(untouched, learned=True, ebgp=False, version=4).priority == 32  # the default metric
    # an import `priority` match sees the default: nothing on the wire carries a metric
    pf2 = compiled(importV4=[{"action": "Reject", "priority": 32}])
    assert import_decision(pf2, "10.65.6.0/26", PathAttrs())[0] is not None  # type: ignore[arg-type]


def test_resolver_and_kernel_route_carry_the_metric() -> None:
    hop = PeerInfo(address=TOR)
    route = Route("10.65.5.0/26", TOR, PathAttrs(priority=512), hop)
    fib_route = Resolver().resolve("10.65.5.0/26", [route])
    assert fib_route == FibRoute("10.65.5.0/26", (NextHop(TOR),), 512)
    assert to_kernel(fib_route, protocol=81).metric == 512
    plain = Resolver().resolve("10.65.6.0/26", [Route("10.65.6.0/26", TOR, PathAttrs(), hop)])
    assert plain is not None and plain.metric is None and fib_metric(plain) == 32
    assert to_kernel(plain, protocol=81).metric == bgp_metric("10.65.6.0/26")
    # read back: the default and a previous version's metric 0 are "no priority", anything else is one
    for kernel_metric, want in ((32, None), (0, None), (512, 512)):
        back = from_kernel(KernelRoute("10.65.5.0/26", (Hop(TOR),), 81, metric=kernel_metric))
        assert back.metric == want
    assert from_kernel(KernelRoute("fd00::/64", (Hop("fd00::1"),), 81, metric=1056)).metric is None


def test_a_priority_change_rewrites_the_kernel_route() -> None:
    kernel = MemoryRoutes()
    fib = Fib(kernel)
    fib.resync()
    hop = PeerInfo(address=TOR)
    fib.stage("10.65.5.0/26", [Route("10.65.5.0/26", TOR, PathAttrs(), hop)])
    fib.apply()
    assert kernel.table["10.65.5.0/26"].metric is None
    fib.stage("10.65.5.0/26", [Route("10.65.5.0/26", TOR, PathAttrs(priority=700), hop)])
    assert fib.apply() == 1
    assert kernel.table["10.65.5.0/26"].metric == 700


def test_engine_installs_the_route_at_the_filters_priority_and_back() -> None:
    f = bgp_filter("f", importV4=[
        {"action": "Accept", "communities": {"values": ["65001:100"]}, "operations": PRIO},
        {"action": "Accept", "asPathPrefix": [65001, 65002], "operations": [{"setPriority": {"value": 200}}]},
    ])  # fmt: skip
    tor = peer("tor", peer_ip=TOR, as_number=65001, filters=["f"])
    engine, kernel = make([tor], [f], [])
    engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001,), communities=("65001:100",)),
                             (api.Announce("10.65.5.0/26", TOR),)), 0)  # fmt: skip
    engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001, 65002)),
                             (api.Announce("10.65.6.0/26", TOR),)), 0)  # fmt: skip
    engine.handle(
        api.Update(TOR, 65001, PathAttrs(as_path=(65001,)), (api.Announce("10.65.7.0/26", TOR),)), 0
    )
    engine.flush()
    assert {p: r.metric for p, r in kernel.table.items()} == {
        "10.65.5.0/26": 512, "10.65.6.0/26": 200, "10.65.7.0/26": None}  # fmt: skip
    # the filter going away puts the routes back at the default metric
    engine.configure(desired([peer("tor", peer_ip=TOR, as_number=65001)], [], []))
    engine.flush()
    assert {p: r.metric for p, r in kernel.table.items()} == dict.fromkeys(kernel.table)


def test_a_priority_equal_to_the_dataplanes_metric_is_not_used() -> None:
    """IPv6 workload routes sit at the kernel's default 1024: a BGP route there could replace one."""
    hop = PeerInfo(address="fd00::1")
    fib_route = Resolver().resolve(
        "fd00:65::/64", [Route("fd00:65::/64", "fd00::1", PathAttrs(priority=1024), hop)]
    )
    assert fib_route is not None and fib_route.metric is None
    kept = Resolver().resolve(
        "fd00:66::/64", [Route("fd00:66::/64", "fd00::1", PathAttrs(priority=1023), hop)]
    )
    assert kept is not None and kept.metric == 1023
