"""Best path, reflection, import/export filters and the RIB, as tables."""

from __future__ import annotations

import pytest

from bgp import bestpath as bp
from bgp.filters import ImportPolicy, PoolInfo, exportable, import_reason, local_exports, pool_for
from bgp.reflect import NEXT_HOP_SELF, LocalInfo, reflect
from bgp.rib import Rib
from bgp.route import PathAttrs, PeerInfo, Route
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, Community, PrefixAdvertisement

IBGP = PeerInfo("10.0.0.2", "10.0.0.2", 64512, 64512)
IBGP3 = PeerInfo("10.0.0.3", "10.0.0.3", 64512, 64512)
EBGP = PeerInfo("10.0.0.9", "10.0.0.9", 65000, 64512)


def r(src: PeerInfo = IBGP, prefix: str = "10.65.0.0/26", nh: str = "", **attrs: object) -> Route:
    return Route(prefix, nh or src.address, PathAttrs(**attrs), src)  # type: ignore[arg-type]


# --- comparators, each alone ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("comparator", "better", "worse"),
    [
        (bp.cmp_local_pref, r(local_pref=200), r(local_pref=100)),
        (bp.cmp_local_pref, r(), r(local_pref=50)),  # missing = 100
        (bp.cmp_as_path_len, r(as_path=(1,)), r(as_path=(1, 2))),
        (bp.cmp_origin, r(origin="igp"), r(origin="incomplete")),
        (bp.cmp_origin, r(origin="egp"), r(origin="incomplete")),
        (bp.cmp_med, r(as_path=(7,), med=5), r(as_path=(7,), med=10)),
        (bp.cmp_ebgp_over_ibgp, r(EBGP), r(IBGP)),
        (bp.cmp_router_id, r(IBGP), r(IBGP3)),
        (bp.cmp_router_id, r(IBGP3, originator_id="1.1.1.1"), r(IBGP)),  # ORIGINATOR_ID stands in
        (bp.cmp_cluster_list_len, r(cluster_list=("1.1.1.1",)), r(cluster_list=("1.1.1.1", "2.2.2.2"))),
        (bp.cmp_peer_address, r(IBGP), r(IBGP3)),
    ],
)
def test_comparator(comparator: bp.Comparator, better: Route, worse: Route) -> None:
    assert comparator(better, worse) < 0
    assert comparator(worse, better) > 0
    assert comparator(better, better) == 0


def test_med_only_compared_within_the_same_neighbour_as() -> None:
    assert bp.cmp_med(r(as_path=(7,), med=50), r(as_path=(8,), med=1)) == 0


def test_chain_order_local_pref_beats_path_length() -> None:
    long_pref = r(IBGP3, local_pref=300, as_path=(1, 2, 3))
    short = r(IBGP, as_path=(1,))
    assert bp.select([short, long_pref]) == (long_pref,)


def test_ecmp_keeps_equal_paths_and_drops_worse() -> None:
    a, b, worse = r(IBGP), r(IBGP3), r(EBGP, as_path=(65000, 1))
    assert bp.select([b, a, worse], ecmp=True) == (a, b)
    assert bp.select([b, a], ecmp=False) == (a,)
    assert bp.select([]) == ()


# --- reflection (RFC 4456) -----------------------------------------------------------------------
RR = LocalInfo(router_id="10.0.0.1", local_as=64512, cluster_id="244.0.0.1")
PLAIN = LocalInfo(router_id="10.0.0.1", local_as=64512)
CLIENT_A = PeerInfo("10.0.0.2", "10.0.0.2", 64512, 64512, rr_client=True)
CLIENT_B = PeerInfo("10.0.0.3", "10.0.0.3", 64512, 64512, rr_client=True)
NONCLIENT = PeerInfo("10.0.0.4", "10.0.0.4", 64512, 64512)
NONCLIENT2 = PeerInfo("10.0.0.5", "10.0.0.5", 64512, 64512)


@pytest.mark.parametrize(
    ("local", "src", "dst", "attrs", "expect"),
    [
        (RR, CLIENT_A, CLIENT_B, {}, ("10.0.0.2", ("244.0.0.1",))),
        (RR, CLIENT_A, NONCLIENT, {}, ("10.0.0.2", ("244.0.0.1",))),
        (RR, NONCLIENT, CLIENT_B, {}, ("10.0.0.4", ("244.0.0.1",))),
        (RR, NONCLIENT, NONCLIENT2, {}, None),  # non-client to non-client: never
        (RR, CLIENT_A, CLIENT_A, {}, None),  # never back to the sender
        (RR, NONCLIENT, CLIENT_B, {"originator_id": "10.0.0.3"}, None),  # never to the originator
        (
            RR,
            CLIENT_A,
            CLIENT_B,
            {"originator_id": "9.9.9.9", "cluster_list": ("1.1.1.1",)},
            ("9.9.9.9", ("244.0.0.1", "1.1.1.1")),
        ),  # existing ORIGINATOR_ID kept, our ID prepended
        (PLAIN, CLIENT_A, CLIENT_B, {}, None),  # a non-reflector never passes iBGP to iBGP
    ],
)
def test_reflect_table(
    local: LocalInfo, src: PeerInfo, dst: PeerInfo, attrs: dict, expect: tuple | None
) -> None:
    out = reflect(r(src, **attrs), src, dst, local=local)
    if expect is None:
        assert out is None
    else:
        assert out is not None
        assert (out.attrs.originator_id, out.attrs.cluster_list) == expect
        assert out.next_hop == src.address  # reflectors keep the next hop


def test_towards_ebgp_prepends_and_strips() -> None:
    route = r(
        CLIENT_A, local_pref=200, originator_id="10.0.0.2", cluster_list=("244.0.0.1",), as_path=(65100,)
    )
    out = reflect(route, CLIENT_A, EBGP, local=RR)
    assert out is not None
    assert out.attrs.as_path == (64512, 65100)
    assert (out.attrs.local_pref, out.attrs.originator_id, out.attrs.cluster_list) == (None, None, ())
    assert out.next_hop == NEXT_HOP_SELF
    kept = reflect(route, CLIENT_A, EBGP, local=RR, keep_next_hop=True)
    assert kept is not None and kept.next_hop == "10.0.0.2"


def test_ebgp_learned_goes_to_ibgp_unchanged() -> None:
    route = r(EBGP, as_path=(65000,))
    assert reflect(route, EBGP, NONCLIENT, local=PLAIN) == route


# --- import filter ---------------------------------------------------------------------------
POOLS = (
    PoolInfo("10.65.0.0/16"),
    PoolInfo("10.66.0.0/16", disable_bgp_export=True),
    PoolInfo("fd00:65::/48"),
)
POLICY = ImportPolicy(
    POOLS,
    frozenset({"10.65.1.0/26"}),
    False,
    64512,
    "10.0.0.1",
    "244.0.0.1",
    borrowed={"10.65.1.5/32": "node-b"},
    node_addresses={"10.0.0.2": "node-b"},
)


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (r(), None),
        (r(prefix="10.65.1.5/32"), None),  # borrowed inside our block by node-b, our next hop
        (r(prefix="fd00:65::/122"), None),
        (r(prefix="0.0.0.0/0"), "default route"),
        (r(prefix="10.65.1.0/26"), "own block: 10.65.1.0/26"),
        (r(prefix="192.168.77.0/24"), "outside IP pools"),
        (r(prefix="10.64.0.0/15"), "covers IP pool: 10.65.0.0/16"),  # covers a pool, is not inside one
        (r(EBGP, as_path=(65000, 64512)), "AS loop"),
        (r(originator_id="10.0.0.1"), "originator is us"),
        (r(cluster_list=("1.2.3.4", "244.0.0.1")), "cluster loop"),
    ],
)
def test_import_reason(route: Route, reason: str | None) -> None:
    assert import_reason(route, POLICY) == reason


def test_default_route_when_configured() -> None:
    policy = ImportPolicy(POOLS, import_default=True)
    assert import_reason(r(prefix="0.0.0.0/0"), policy) is None


def test_pool_lookup_and_exportability() -> None:
    assert pool_for("10.65.3.0/26", POOLS) == POOLS[0]
    assert pool_for("10.99.0.0/26", POOLS) is None
    assert exportable("10.65.3.0/26", POOLS) and not exportable("10.66.0.0/26", POOLS)


# --- export -----------------------------------------------------------------------------------
def test_local_exports_blocks_borrowed_disabled_and_communities() -> None:
    config = BGPConfiguration(
        metadata=ObjectMeta(name="default"),
        spec=BGPConfigurationSpec(
            communities=[Community(name="rack", value="64512:100")],
            prefix_advertisements=[
                PrefixAdvertisement(cidr="10.65.0.0/16", communities=["rack", "64512:1:2"])
            ],
        ),
    )
    got = local_exports(
        ["10.65.0.0/26", "10.66.0.0/26"],
        ["10.65.7.7", "10.65.0.9", "10.66.1.1", "192.168.5.5"],
        POOLS,
        config=config,
    )
    assert sorted(got) == ["10.65.0.0/26", "10.65.7.7/32"]  # disabled pool, own-block /32, no pool: out
    assert got["10.65.0.0/26"].communities == ("64512:100",)
    assert got["10.65.0.0/26"].large_communities == ("64512:1:2",)


# --- RIB -------------------------------------------------------------------------------------
def test_rib_notifies_best_path_changes_only() -> None:
    changes: list[tuple[str, tuple[Route, ...]]] = []
    rib = Rib(lambda p, best: changes.append((p, best)))
    a, b = r(IBGP), r(IBGP3, local_pref=200)
    rib.update(a)
    rib.update(b)
    rib.update(r(IBGP, med=0))  # the losing path changes: best unchanged, no callback
    assert [c[1] for c in changes] == [(a,), (b,)]
    rib.withdraw("10.0.0.3", "10.65.0.0/26")
    assert changes[-1][1][0].source == IBGP
    rib.drop_peer("10.0.0.2")
    assert changes[-1] == ("10.65.0.0/26", ())
    assert len(rib) == 0


def test_rib_graceful_restart_stale_then_sweep() -> None:
    changes: list[str] = []
    rib = Rib(lambda p, best: changes.append(p))
    rib.update(r(IBGP, prefix="10.65.0.0/26"))
    rib.update(r(IBGP, prefix="10.65.0.64/26"))
    assert rib.mark_stale("10.0.0.2") == 2
    assert len(changes) == 2  # going stale is not a change for the kernel
    rib.update(r(IBGP, prefix="10.65.0.0/26"))  # refreshed after the restart
    assert rib.sweep_stale("10.0.0.2") == 1
    assert [p for p, _ in rib.best_routes()] == ["10.65.0.0/26"]
    assert changes[-1] == "10.65.0.64/26"


def test_rib_ecmp_toggle() -> None:
    rib = Rib()
    rib.update(r(IBGP))
    rib.update(r(IBGP3))
    assert len(rib.best("10.65.0.0/26")) == 1
    rib.set_ecmp(True)
    assert len(rib.best("10.65.0.0/26")) == 2


def test_rib_withdraw_many_reports_what_withdraw_would() -> None:
    """One call for a peer withdrawing a table: a prefix with another path falls back to it, a
    prefix with none is gone, a prefix the peer never sent changes nothing; one batch of changes."""
    batches: list[list[tuple[str, tuple[Route, ...]]]] = []
    rib = Rib(on_changes=batches.append)
    kept = r(IBGP3, prefix="10.65.0.0/26")
    rib.update_many("10.0.0.3", [kept])
    rib.update_many(
        "10.0.0.2", [r(IBGP, prefix="10.65.0.0/26", local_pref=200), r(IBGP, prefix="10.65.0.64/26")]
    )
    batches.clear()
    rib.withdraw_many("10.0.0.2", ["10.65.0.0/26", "10.65.0.64/26", "10.65.1.0/26"])
    assert batches == [[("10.65.0.0/26", (kept,)), ("10.65.0.64/26", ())]]
    assert [p for p, _ in rib.best_routes()] == ["10.65.0.0/26"]
    assert rib.adj_in("10.0.0.2") == {}
    rib.withdraw_many("10.0.0.2", ["10.65.0.0/26"])  # nothing left from that peer: no change
    assert len(batches) == 1


def test_rib_bulk_table_in_and_out_matches_one_at_a_time() -> None:
    """A whole table of new prefixes from one peer, then that peer withdrawing it (the bulk case
    a reflector sees), leaves the RIB and reports the changes exactly as one route at a time
    does; stale routes and a repeated prefix in one call included."""
    prefixes = [f"10.65.{i // 4}.{(i % 4) * 64}/26" for i in range(40)]
    bulk: list[tuple[str, tuple[Route, ...]]] = []
    single: list[tuple[str, tuple[Route, ...]]] = []
    many = Rib(on_changes=bulk.extend)
    one = Rib(lambda p, best: single.append((p, best)))
    routes = [r(IBGP, prefix=p) for p in prefixes]
    many.update_many("10.0.0.2", routes)
    for route in routes:
        one.update(route)
    assert bulk == single and dict(many.best_routes()) == dict(one.best_routes())
    assert many.mark_stale("10.0.0.2") == one.mark_stale("10.0.0.2") == 40
    bulk.clear()
    single.clear()
    gone = [*prefixes[:30], prefixes[0], "10.66.0.0/26"]  # a repeat, and one never sent
    many.withdraw_many("10.0.0.2", prefixes[:30])
    many.withdraw_many("10.0.0.2", gone)  # falls back to one by one (the repeat): no change
    for prefix in prefixes[:30]:
        one.withdraw("10.0.0.2", prefix)
    assert bulk == single and len(bulk) == 30
    assert dict(many.best_routes()) == dict(one.best_routes()) and len(many) == 10
    assert many.adj_in("10.0.0.2") == one.adj_in("10.0.0.2")
    many.withdraw_many("10.0.0.2", prefixes[30:])
    assert len(many) == 0 and many.adj_in("10.0.0.2") == {} and bulk[-1] == (prefixes[-1], ())
