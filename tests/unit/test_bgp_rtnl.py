"""bgp.rtnl packs route requests and parses dumps by hand: checked against pyroute2's decoder."""

from __future__ import annotations

import errno
import struct

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from bgp import rtnl
from bgp.fib import FibRoute, NextHop

INDEX = {"eth0": 2, "tunl0": 7}


def decode(data: bytes) -> rtmsg:
    msg = rtmsg(data)
    msg.decode()
    return msg


def test_replace_direct_route_matches_what_pyroute2_reads() -> None:
    data = rtnl.pack_replace(
        FibRoute("10.65.1.0/26", (NextHop("10.0.0.2"),)), seq=7, protocol=81, index_of=INDEX.__getitem__
    )
    msg = decode(data)
    assert msg["header"]["type"] == rtnl.RTM_NEWROUTE
    assert msg["header"]["flags"] == 0x1 | 0x4 | 0x100 | 0x400  # request, ack, replace, create
    assert msg["header"]["sequence_number"] == 7
    assert msg["header"]["length"] == len(data)
    assert (msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["type"]) == (2, 26, 254, 81, 1)
    assert msg.get_attr("RTA_DST") == "10.65.1.0"
    assert msg.get_attr("RTA_GATEWAY") == "10.0.0.2"
    assert msg.get_attr("RTA_OIF") is None  # the kernel picks the device for a direct hop


def test_onlink_hop_pins_device_and_flag() -> None:
    route = FibRoute("10.65.2.0/26", (NextHop("192.168.50.9", "tunl0", True),))
    msg = decode(rtnl.pack_replace(route, seq=1, protocol=81, index_of=INDEX.__getitem__))
    assert msg["flags"] == rtnl.RTNH_F_ONLINK
    assert msg.get_attr("RTA_OIF") == 7


def test_multipath_and_ipv6() -> None:
    route = FibRoute("fd00:65::/122", (NextHop("fd00::2"), NextHop("fd00::3", "eth0", True)))
    msg = decode(rtnl.pack_replace(route, seq=1, protocol=81, index_of=INDEX.__getitem__))
    assert (msg["family"], msg["dst_len"]) == (10, 122)
    assert msg.get_attr("RTA_DST") == "fd00:65::"
    hops = msg.get_attr("RTA_MULTIPATH")
    assert [(h.get_attr("RTA_GATEWAY"), h["oif"], h["flags"]) for h in hops] == [
        ("fd00::2", 0, 0),
        ("fd00::3", 2, rtnl.RTNH_F_ONLINK),
    ]


def test_delete_matches_only_our_protocol_any_scope() -> None:
    msg = decode(rtnl.pack_delete("10.65.1.0/26", seq=3, protocol=81))
    assert msg["header"]["type"] == rtnl.RTM_DELROUTE
    assert (msg["proto"], msg["scope"], msg["table"], msg["type"]) == (81, 255, 254, 0)
    assert msg.get_attr("RTA_DST") == "10.65.1.0"


def test_missing_device_and_bad_address_raise() -> None:
    with pytest.raises(KeyError):
        rtnl.pack_replace(
            FibRoute("10.65.1.0/26", (NextHop("1.2.3.4", "nope", True),)),
            seq=1,
            protocol=81,
            index_of=INDEX.__getitem__,
        )
    with pytest.raises(ValueError):
        rtnl.pack_delete("10.65.1.300/26", seq=1, protocol=81)


def _as_dump(data: bytes) -> bytes:
    """Turn a packed request into what a dump returns (same layout, RTM_NEWROUTE)."""
    return data[16:]


def test_parse_round_trips_what_we_pack() -> None:
    names = {v: k for k, v in INDEX.items()}.__getitem__
    for route in (
        FibRoute("10.65.1.0/26", (NextHop("10.0.0.2"),)),
        FibRoute("10.65.2.0/26", (NextHop("192.168.50.9", "tunl0", True),)),
        FibRoute("10.65.3.0/26", (NextHop("10.0.0.2"), NextHop("10.0.0.3"))),
        FibRoute("fd00:65::/122", (NextHop("fd00::2"),)),
    ):
        payload = _as_dump(rtnl.pack_replace(route, seq=1, protocol=81, index_of=INDEX.__getitem__))
        assert rtnl.parse_route(payload, protocol=81, name_of=names) == route
        assert rtnl.parse_route(payload, protocol=80, name_of=names) is None  # someone else's


def test_messages_and_error_codes() -> None:
    ack = struct.pack("=IHHII", 36, rtnl.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", 0) + bytes(16)
    nak = (
        struct.pack("=IHHII", 36, rtnl.NLMSG_ERROR, 0, 6, 0)
        + struct.pack("=i", -errno.ENETUNREACH)
        + bytes(16)
    )
    done = struct.pack("=IHHII", 20, rtnl.NLMSG_DONE, 0, 9, 0) + bytes(4)
    got = list(rtnl.messages(ack + nak + done))
    assert [(kind, seq) for kind, seq, _ in got] == [(2, 5), (2, 6), (3, 9)]
    assert [rtnl.error_code(p) for _, _, p in got[:2]] == [0, errno.ENETUNREACH]
    assert list(rtnl.messages(struct.pack("=IHHII", 4, 2, 0, 1, 0))) == []  # a broken length stops


def test_unacked_requests_and_the_barrier() -> None:
    route = FibRoute("10.65.1.0/26", (NextHop("10.0.0.2"),))
    quiet = decode(rtnl.pack_replace(route, seq=1, protocol=81, index_of=INDEX.__getitem__, ack=False))
    assert quiet["header"]["flags"] == 0x1 | 0x100 | 0x400  # no NLM_F_ACK: only failures answered
    assert decode(rtnl.pack_delete("10.65.1.0/26", seq=2, protocol=81, ack=False))["header"]["flags"] == 0x1
    barrier = rtnl.pack_barrier(seq=9)
    assert struct.unpack("=IHHII", barrier) == (16, rtnl.NLMSG_NOOP, 0x1 | 0x4, 9, 0)
