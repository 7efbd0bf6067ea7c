"""felixpy.netlinkio.veth packs the CNI's veth requests by hand: checked against pyroute2's decoder."""

from __future__ import annotations

import struct

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from felixpy.netlinkio import veth


def decode(cls: type, data: bytes):  # type: ignore[no-untyped-def]
    msg = cls(data)
    msg.decode()
    return msg


def test_new_veth_names_both_sides_mac_mtu_and_the_peers_namespace() -> None:
    data = veth.pack_new_veth(
        seq=7, name="cali0123456789a", mac="ee:ee:ee:ee:ee:ee", mtu=1440, peer="eth0", peer_netns_fd=42
    )
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert (length, kind, seq) == (len(data), veth.RTM_NEWLINK, 7)
    assert flags & 0x605 == 0x605  # REQUEST | ACK | CREATE | EXCL: never replaces an interface
    msg = decode(ifinfmsg, data)
    assert msg.get_attr("IFLA_IFNAME") == "cali0123456789a"
    assert msg.get_attr("IFLA_ADDRESS") == "ee:ee:ee:ee:ee:ee"
    assert msg.get_attr("IFLA_MTU") == 1440
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0"
    assert peer.get_attr("IFLA_MTU") == 1440
    assert peer.get_attr("IFLA_NET_NS_FD") == 42


def test_set_up_and_link_reads_by_index_or_name() -> None:
    up = decode(ifinfmsg, veth.pack_set_up(seq=1, index=12))
    assert (up["index"], up["flags"] & 1, up["change"] & 1) == (12, 1, 1)
    by_name = decode(ifinfmsg, veth.pack_get_link(seq=2, name="eth0"))
    assert (by_name["index"], by_name.get_attr("IFLA_IFNAME")) == (0, "eth0")
    gone = decode(ifinfmsg, veth.pack_del_link(seq=3, index=9))
    assert gone["index"] == 9 and gone.get_attr("IFLA_IFNAME") is None


def test_addresses_are_host_addresses_v6_without_dad() -> None:
    v4 = decode(ifaddrmsg, veth.pack_new_addr(seq=1, index=3, address="10.0.0.5/32"))
    assert (v4["family"], v4["prefixlen"], v4["index"]) == (2, 32, 3)
    assert v4.get_attr("IFA_LOCAL") == v4.get_attr("IFA_ADDRESS") == "10.0.0.5"
    v6 = decode(ifaddrmsg, veth.pack_new_addr(seq=2, index=3, address="fd00::5/128", flags=0x02))
    assert (v6["family"], v6["prefixlen"], v6["flags"], v6.get_attr("IFA_LOCAL")) == (10, 128, 2, "fd00::5")


def test_parse_link_reads_index_name_mac_and_the_veth_peer() -> None:
    body = struct.pack("=BxHiII", 0, 1, 17, 0, 0)
    for kind, payload in ((3, b"cali1\0"), (1, bytes.fromhex("eeeeeeeeeeee")), (5, struct.pack("=i", 2))):
        size = 4 + len(payload)
        body += struct.pack("=HH", size, kind) + payload + b"\0" * (-size & 3)
    assert veth.parse_link(body) == veth.LinkInfo(17, "cali1", "ee:ee:ee:ee:ee:ee", 2)


def test_link_dump_request_and_name_kind_of_each_link() -> None:
    data = veth.pack_dump_links(seq=9)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert (length, kind, seq) == (len(data), veth.RTM_GETLINK, 9)
    assert flags & 0x301 == 0x301  # REQUEST | DUMP
    # ifinfomsg, IFLA_IFNAME, IFLA_LINKINFO { IFLA_INFO_KIND "veth" }, as the kernel sends them
    info = struct.pack("=HH", 9, 1) + b"veth\0" + b"\0" * 3
    body = struct.pack("=BxHiII", 0, 1, 17, 0, 0)
    body += struct.pack("=HH", 11, 3) + b"cali01\0" + b"\0"
    body += struct.pack("=HH", 4 + len(info), 18) + info
    assert veth.link_name_kind(body) == ("cali01", "veth")
    plain = struct.pack("=BxHiII", 0, 1, 1, 0, 0) + struct.pack("=HH", 7, 3) + b"lo\0" + b"\0"
    assert veth.link_name_kind(plain) == ("lo", "")


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size & 3)


def test_name_readers_stop_early_and_answer_as_a_full_parse_would() -> None:
    """parse_link stops at IFLA_IFNAME and link_name_kind once it has both: the same answers as
    reading every attribute, wherever the name is and whatever follows it."""
    from felixpy.netlinkio import messages as nl

    head = struct.pack("=BxHiII", 0, 1, 42, 0, 0)
    stats = _attr(7, b"\x01" * 200)  # IFLA_STATS-like bulk the readers skip
    info = _attr(18, _attr(1, b"veth\0") + _attr(2, b"\x00" * 12))  # IFLA_LINKINFO {KIND, DATA}
    shapes = {
        "name first": head + _attr(3, b"calie00001\0") + stats + info + stats,
        "name after others": head + stats + _attr(4, struct.pack("=I", 1500)) + _attr(3, b"calix\0") + info,
        "info before name": head + info + stats + _attr(3, b"caliy\0") + stats,
        "no name": head + stats + info,
    }
    for label, body in shapes.items():
        full = nl._attrs(body, 16)
        name = full.get(3, b"").split(b"\0", 1)[0].decode()
        assert nl.parse_link(body) == (42, name), label
        assert veth.link_name_kind(body) == (name, "veth"), label
