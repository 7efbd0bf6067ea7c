"""felixpy.netlinkio.messages packs the dataplane's routes by hand: checked against pyroute2's decoder."""

from __future__ import annotations

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from felixpy.netlinkio import messages as nl
from felixpy.netlinkio.messages import Hop, Route

INDEX = {"cali1": 5, "vxlan.calico": 9}


def decode(data: bytes) -> rtmsg:
    msg = rtmsg(data)
    msg.decode()
    return msg


def test_device_route_is_link_scoped_for_ipv4_only() -> None:
    v4 = decode(
        nl.pack_replace(Route("10.0.0.5/32", (Hop(dev="cali1"),), 80), seq=1, index_of=INDEX.__getitem__)
    )
    assert (v4["scope"], v4["proto"], v4["type"], v4.get_attr("RTA_OIF")) == (nl.RT_SCOPE_LINK, 80, 1, 5)
    assert v4.get_attr("RTA_GATEWAY") is None
    v6 = decode(
        nl.pack_replace(Route("fd00::5/128", (Hop(dev="cali1"),), 80), seq=1, index_of=INDEX.__getitem__)
    )
    assert (v6["family"], v6["scope"], v6.get_attr("RTA_OIF")) == (10, nl.RT_SCOPE_UNIVERSE, 5)


def test_blackhole_metric_and_table_past_255() -> None:
    route = Route("10.1.0.0/26", (), 80, table=300, metric=20, blackhole=True)
    msg = decode(nl.pack_replace(route, seq=4, index_of=INDEX.__getitem__))
    assert (msg["type"], msg["table"], msg.get_attr("RTA_TABLE"), msg.get_attr("RTA_PRIORITY")) == (
        6,
        0,
        300,
        20,
    )
    assert msg.get_attr("RTA_OIF") is None
    assert nl.route_matches(msg.data[16 : msg["header"]["length"]], protocol=80, table=300)
    assert not nl.route_matches(msg.data[16 : msg["header"]["length"]], protocol=80, table=254)


def test_delete_names_protocol_table_and_metric_but_no_hops() -> None:
    msg = decode(nl.pack_delete(Route("10.1.0.0/26", (Hop("10.0.0.1", "cali1"),), 80, metric=7), seq=2))
    assert msg["header"]["type"] == nl.RTM_DELROUTE
    assert (msg["proto"], msg["scope"], msg["table"], msg["type"]) == (80, nl.RT_SCOPE_NOWHERE, 254, 0)
    assert msg.get_attr("RTA_PRIORITY") == 7 and msg.get_attr("RTA_OIF") is None


def test_round_trip_of_every_kind_the_dataplane_writes() -> None:
    names = {v: k for k, v in INDEX.items()}.__getitem__
    for route in (
        Route("10.0.0.5/32", (Hop(dev="cali1"),), 80),
        Route("10.1.0.0/26", (), 80, blackhole=True),
        Route("10.2.0.0/26", (Hop("10.9.0.2", "vxlan.calico", onlink=True),), 80, metric=1024),
        Route("fd00:1::/122", (Hop("fd00::2"), Hop("fd00::3", "cali1")), 81),
    ):
        payload = nl.pack_replace(route, seq=1, index_of=INDEX.__getitem__)[16:]
        kind = nl.RTN_BLACKHOLE if route.blackhole else nl.RTN_UNICAST
        assert nl.parse_route(payload, name_of=names) == (route, kind)
        assert nl.route_ifindexes(payload) == {INDEX[h.dev] for h in route.hops if h.dev}


def test_a_unicast_route_without_hops_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a next hop"):
        nl.pack_replace(Route("10.0.0.5/32", (), 80), seq=1, index_of=INDEX.__getitem__)


def test_link_lookup_by_name_and_index() -> None:
    msg = ifinfmsg(nl.pack_get_link(seq=3, name="cali1"))
    msg.decode()
    assert (msg["header"]["type"], msg["header"]["sequence_number"], msg.get_attr("IFLA_IFNAME")) == (
        nl.RTM_GETLINK,
        3,
        "cali1",
    )
    by_index = ifinfmsg(nl.pack_get_link(seq=4, index=9))
    by_index.decode()
    assert by_index["index"] == 9 and by_index.get_attr("IFLA_IFNAME") is None
    answer = nl.pack_get_link(seq=5, name="vxlan.calico")[16:]
    assert nl.parse_link(answer) == (0, "vxlan.calico")


def test_throw_route_in_a_small_table_has_no_next_hop_and_round_trips() -> None:
    """The WireGuard table's ``throw`` (RTN_THROW): universe scope, no RTA_OIF, table in the header."""
    route = Route("10.244.0.0/26", (), 80, table=1, throw=True)
    packed = nl.pack_replace(route, seq=5, index_of=INDEX.__getitem__)
    msg = decode(packed)
    expected = (nl.RTN_THROW, 1, nl.RT_SCOPE_UNIVERSE, 80)
    assert (msg["type"], msg["table"], msg["scope"], msg["proto"]) == expected
    assert msg.get_attr("RTA_OIF") is None and msg.get_attr("RTA_TABLE") is None
    assert nl.parse_route(packed[16:], name_of=str) == (route, nl.RTN_THROW)


@pytest.mark.parametrize(
    "route",
    [
        Route("10.244.0.0/26", (Hop(dev="cali1"),), 80, table=1, throw=True),
        Route("10.244.0.0/26", (), 80, table=1, throw=True, blackhole=True),
    ],
)
def test_a_throw_route_with_a_hop_or_also_a_blackhole_is_refused(route: Route) -> None:
    with pytest.raises(ValueError, match="no next hop"):
        nl.pack_replace(route, seq=1, index_of=INDEX.__getitem__)


def test_scan_route_filters_as_route_matches_and_names_the_same_devices() -> None:
    names = {v: k for k, v in INDEX.items()}.__getitem__
    for route in (
        Route("10.0.0.5/32", (Hop(dev="cali1"),), 80),
        Route("10.1.0.0/26", (), 80, table=300, metric=20, blackhole=True),
        Route("10.3.0.0/24", (), 81, table=7, throw=True),
        Route("fd00:1::/122", (Hop("fd00::2", "vxlan.calico"), Hop("fd00::3", "cali1")), 81),
    ):
        payload = nl.pack_replace(route, seq=1, index_of=INDEX.__getitem__)[16:]
        for protocol in (None, 80, 81):
            for table in (254, 300, 7):
                fields = nl.scan_route(payload, protocol=protocol, table=table)
                assert (fields is not None) == nl.route_matches(payload, protocol=protocol, table=table)
        fields = nl.scan_route(payload)
        assert fields is not None and fields.table == route.table and fields.metric == route.metric
        assert nl.fields_ifindexes(fields) == nl.route_ifindexes(payload)
        seen: dict[tuple[bytes, int, int], Hop] = {}
        assert nl.route_of(fields, name_of=names, hops_seen=seen) == nl.parse_route(payload, name_of=names)
        assert nl.route_of(fields, name_of=names, hops_seen=seen)[0].hops == route.hops  # from the cache


def test_filtered_dump_request_carries_protocol_and_table() -> None:
    plain = decode(nl.pack_dump(nl.AF_INET6, seq=3))
    assert (plain["family"], plain["proto"], plain["table"]) == (10, 0, 0)
    assert plain["header"]["flags"] == nl.NLM_F_REQUEST | nl.NLM_F_DUMP
    main = decode(nl.pack_dump(nl.AF_INET, seq=3, protocol=80, table=254))
    assert (main["proto"], main["table"], main.get_attr("RTA_TABLE")) == (80, 254, None)
    big = decode(nl.pack_dump(nl.AF_INET, seq=3, protocol=81, table=300))
    assert (big["proto"], big["table"], big.get_attr("RTA_TABLE")) == (81, 0, 300)
    assert (big["dst_len"], big["scope"], big["type"], big["flags"]) == (0, 0, 0, 0)  # strict: must be 0


def test_link_dump_asks_to_skip_statistics() -> None:
    msg = ifinfmsg(nl.pack_link_dump(seq=5))
    msg.decode()
    assert msg["header"]["type"] == nl.RTM_GETLINK and msg["header"]["flags"] == 0x301
    assert (msg["index"], msg["flags"], msg["change"]) == (0, 0, 0)  # strict: must be 0
    assert msg.get_attr("IFLA_EXT_MASK") == nl.RTEXT_FILTER_SKIP_STATS
    assert nl.link_index(msg.data[16:]) == 0
