"""Route dumps filtered by the kernel (NETLINK_GET_STRICT_CHK) and read in one pass
(felixpy.netlinkio.messages.scan_route) give the same routes as the old whole dump, parsed whole."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from felixpy.dataplane.sysctl import run_in_netns
from felixpy.netlinkio import messages as nl
from felixpy.netlinkio import route_writer
from felixpy.netlinkio.messages import Hop, Route
from felixpy.netlinkio.route_writer import RouteWriter, route_socket

pytestmark = pytest.mark.kernel

ROUTES = [  # (ip argv, protocol, table) of each route made
    ("10.75.0.0/24 dev cali1", 80, 254),
    ("10.75.1.0/24 via 192.168.50.9 dev peer1 metric 7", 80, 254),
    ("10.75.2.0/26 via 192.168.60.7 dev peer1 onlink", 80, 254),
    ("blackhole 10.75.3.0/26", 80, 254),
    ("10.75.4.0/24 nexthop via 192.168.50.7 dev peer1 nexthop via 192.168.50.8 dev peer1", 80, 254),
    ("10.76.0.0/24 via 192.168.50.9", 81, 254),
    ("10.76.1.0/24 via 192.168.50.9", 81, 254),
    ("10.77.0.0/24 dev cali1", 80, 300),
    ("throw 10.77.1.0/24", 80, 300),
    ("10.77.2.0/24 dev cali1", 80, 7),
    ("fd70::2/128 dev cali1", 80, 254),
    ("blackhole fd71::/122", 80, 254),
    ("fd72::/64 via fd50::9 dev peer1", 81, 254),
    ("fd73::/64 dev cali1", 80, 300),
]


@pytest.fixture
def node(netns):
    ns = netns("nldump")
    ns.run("ip", "link", "add", "cali1", "type", "veth", "peer", "name", "peer1")
    for cmd in (
        ("link", "set", "cali1", "up"),
        ("link", "set", "peer1", "up"),
        ("addr", "add", "192.168.50.1/24", "dev", "peer1"),
        ("-6", "addr", "add", "fd50::1/64", "dev", "peer1", "nodad"),
    ):
        ns.run("ip", *cmd)
    for spec, proto, table in ROUTES:
        family = ["-6"] if ":" in spec else []
        words = spec.split()
        at = next(i for i, w in enumerate(words) if "/" in w) + 1  # after the prefix (multipath)
        words[at:at] = ["proto", str(proto), "table", str(table)]
        ns.run("ip", *family, "route", "add", *words)
    writer = RouteWriter(run_in_netns(ns.name, route_socket))
    yield ns, writer
    writer.close()


# --- the reference: the whole dump, every route parsed into a dict of attributes (the old code) ---
def _whole_dump(ns_name: str, family: int) -> list[bytes]:
    sock = run_in_netns(ns_name, route_socket)
    with sock:
        sock.settimeout(10)
        sock.sendall(struct.pack("=IHHII", 28, nl.RTM_GETROUTE, 0x301, 1, 0) + bytes([family]) + bytes(11))
        out: list[bytes] = []
        while True:
            for kind, seq, payload in nl.messages(sock.recv(1 << 20)):
                if kind == nl.NLMSG_DONE:
                    return out
                if seq == 1 and kind == nl.RTM_NEWROUTE:
                    out.append(payload)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def _text(family: int, raw: bytes) -> str:
    if family == nl.AF_INET6:
        return str(ipaddress.IPv6Address(raw))
    return ".".join(str(b) for b in raw)


def _reference(payload: bytes, names: dict[int, str]) -> tuple[Route, int, int]:
    """(route, type, table) as the code before scan_route read it."""
    family, dst_len, _s, _t, rtm_table, proto, _sc, kind, flags = struct.unpack_from("=BBBBBBBBI", payload)
    attrs = _attrs(payload[12:])
    table = struct.unpack("=I", attrs[nl.RTA_TABLE])[0] if nl.RTA_TABLE in attrs else rtm_table
    raw = attrs.get(nl.RTA_DST)
    dst = f"{_text(family, raw) if raw else ('::' if family == nl.AF_INET6 else '0.0.0.0')}/{dst_len}"
    metric = struct.unpack("=I", attrs[nl.RTA_PRIORITY])[0] if nl.RTA_PRIORITY in attrs else None

    def hop(gateway: bytes, ifindex: int, hop_flags: int) -> Hop:
        return Hop(_text(family, gateway) if gateway else "", names[ifindex] if ifindex else None,
                   bool(hop_flags & nl.RTNH_F_ONLINK))  # fmt: skip

    hops: tuple[Hop, ...] = ()
    if nl.RTA_MULTIPATH in attrs:
        data, offset, found = attrs[nl.RTA_MULTIPATH], 0, []
        while offset + 8 <= len(data):
            length, hop_flags, _h, ifindex = struct.unpack_from("=HBBi", data, offset)
            found.append(
                hop(_attrs(data[offset + 8 : offset + length]).get(nl.RTA_GATEWAY, b""), ifindex, hop_flags)
            )
            offset += (length + 3) & ~3
        hops = tuple(sorted(found))
    elif kind not in (nl.RTN_BLACKHOLE, nl.RTN_THROW):
        oif = struct.unpack("=i", attrs[nl.RTA_OIF])[0] if nl.RTA_OIF in attrs else 0
        hops = (hop(attrs.get(nl.RTA_GATEWAY, b""), oif, flags),)
    route = Route(dst, hops, proto, table, metric, kind == nl.RTN_BLACKHOLE, kind == nl.RTN_THROW)
    return route, kind, table


def _names(ns) -> dict[int, str]:
    return {
        int(line.split(":")[0]): line.split(":")[1].strip().split("@")[0]
        for line in ns.run("ip", "-o", "link").splitlines()
    }


@pytest.mark.parametrize("strict", [True, False], ids=["kernel-filtered", "whole-dump"])
@pytest.mark.parametrize(
    ("protocol", "table"), [(80, 254), (81, 254), (80, 300), (None, 300), (None, 254), (80, 7), (80, 999)]
)
def test_filtered_dump_reads_what_the_whole_dump_parsed_whole_reads(node, protocol, table, strict):
    """Also with the kernel's filter off (``_strict`` False: a kernel before 4.20, or one that
    refused a filtered dump): the same answers, filtered by scan_route alone."""
    ns, writer = node
    writer._strict = strict
    names = _names(ns)
    expected = sorted(
        (route, kind)
        for family in (nl.AF_INET, nl.AF_INET6)
        for route, kind, in_table in (_reference(p, names) for p in _whole_dump(ns.name, family))
        if (protocol is None or route.protocol == protocol) and in_table == table
    )
    got = sorted(writer.list_routes(protocol=protocol, table=table))
    assert got == expected
    if (protocol, table) == (80, 254):  # everything this test made of each kind came back
        assert len(got) == 7 and any(len(r.hops) == 2 for r, _k in got)
        assert {k for _r, k in got} == {nl.RTN_UNICAST, nl.RTN_BLACKHOLE}
    if table == 999:  # no such table: empty, not an error
        assert got == []


def test_the_kernel_filters_the_dump_by_protocol_and_table(node):
    """The dump carries only the routes asked for (with strict checking on, kernel >= 4.20)."""
    _ns, writer = node
    assert writer._strict
    with writer._lock:
        v4 = writer._dump(nl.AF_INET, protocol=81, table=254)
        v6 = writer._dump(nl.AF_INET6, protocol=80, table=300)
        whole = writer._dump(nl.AF_INET)
    assert len(v4) == 2 and len(v6) == 1
    assert len(whole) > 10  # unfiltered: every table (local included) and protocol
    assert writer._strict  # no fallback happened
    # link lookups by name still work on the strict socket (the replaces resolve "cali1")
    assert writer.apply(replace=[Route("10.78.0.1/32", (Hop(dev="cali1"),), 80)]) == []
    assert "10.78.0.1/32" in {r.dst for r, _k in writer.list_routes(protocol=80)}


def test_many_devices_are_named_from_one_link_dump_as_one_by_one(node, monkeypatch):
    """From LINK_DUMP_AT devices the names come from a link dump (no statistics), not a request
    per index: the same names, a device of each route; a vanished one reads as ""."""
    ns, writer = node
    count = route_writer.LINK_DUMP_AT + 6
    batch = "".join(
        f"link add cali{i}x type veth peer name peer{i}x\nlink set cali{i}x up\n" for i in range(count)
    )
    ns.run("ip", "-batch", "-", input=batch)
    routes = [Route(f"10.79.0.{i}/32", (Hop(dev=f"cali{i}x"),), 82) for i in range(count)]
    assert writer.apply(replace=routes) == []
    asked: list[int] = []
    dumped = writer._names_dumped
    monkeypatch.setattr(writer, "_names_dumped", lambda wanted: asked.append(len(wanted)) or dumped(wanted))
    by_dump = sorted(writer.list_routes(protocol=82))
    assert asked == [count]
    assert by_dump == sorted((r, nl.RTN_UNICAST) for r in routes)
    monkeypatch.setattr(route_writer, "LINK_DUMP_AT", 10_000)
    assert sorted(writer.list_routes(protocol=82)) == by_dump
    assert asked == [count]  # the second read asked one by one


def test_a_refused_filter_falls_back_to_the_whole_dump(node, monkeypatch):
    """A kernel that refuses the filtered request (here: made invalid, rtm_tos set, which strict
    checking rejects) gets the whole dump asked again: the same routes, and no filter from then on."""
    _ns, writer = node
    expected = sorted(writer.list_routes(protocol=80))
    plain = nl.pack_dump

    def refused(family: int, *, seq: int, protocol: int = 0, table: int = 0) -> bytes:
        packed = bytearray(plain(family, seq=seq, protocol=protocol, table=table))
        if protocol or table:
            packed[16 + 3] = 1  # rtm_tos
        return bytes(packed)

    monkeypatch.setattr(nl, "pack_dump", refused)
    assert sorted(writer.list_routes(protocol=80)) == expected
    assert not writer._strict
    assert len(expected) == 7
