"""bgp.wire: UPDATE messages as bytes, checked against ExaBGP 5's own encoder and parser.

The oracle is ExaBGP in this process: what we encode must parse, through ExaBGP's
``Update.unpack_message`` and its JSON writer, into the same ``api.Update`` the text path
produces; what ExaBGP encodes from the text commands the agent sends today must decode to the
same thing with ``wire.decode_update``. Plus a few messages computed by hand from RFC 4271 4.3.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from bgp import exabgp_api as api
from bgp import wire
from bgp.route import PathAttrs, normalize_prefix

exabgp = pytest.importorskip("exabgp", reason="ExaBGP 5 (the oracle) is not installed in this venv")

from exabgp.bgp.message import Action, Update  # noqa: E402
from exabgp.bgp.message.direction import Direction  # noqa: E402
from exabgp.bgp.message.open import ASN, HoldTime, Open, RouterID, Version  # noqa: E402
from exabgp.bgp.message.open.capability import Capabilities  # noqa: E402
from exabgp.bgp.message.open.capability.negotiated import Negotiated  # noqa: E402
from exabgp.bgp.message.update.eor import EOR  # noqa: E402
from exabgp.bgp.neighbor import Neighbor  # noqa: E402
from exabgp.logger import log  # noqa: E402
from exabgp.protocol.family import AFI, SAFI  # noqa: E402
from exabgp.protocol.ip import IP  # noqa: E402
from exabgp.reactor.api import API  # noqa: E402
from exabgp.reactor.api.response.json import JSON  # noqa: E402

log.silence()  # ExaBGP's logger is unconfigured outside its daemon
MARKER = b"\xff" * 16
FULL = PathAttrs(
    origin="incomplete",
    as_path=(65001, 4200000000),
    med=5,
    local_pref=200,
    communities=("65000:1", "no-export", "1:2", "no-advertise", "no-export-subconfed"),
    large_communities=("64512:1:2", "4200000000:0:4294967295"),
    originator_id="10.0.0.9",
    cluster_list=("10.0.0.1", "192.168.1.254"),
)


def negotiated(add_path: int = 0, peer_as: int = 64512) -> Any:
    """A session with ASN4 and IPv4 + IPv6 unicast, as ExaBGP negotiates it from two OPENs."""
    neighbor = Neighbor()
    neighbor["local-as"], neighbor["peer-as"] = ASN(64512), ASN(peer_as)
    neighbor["router-id"] = RouterID("10.0.0.1")
    neighbor["local-address"], neighbor["peer-address"] = IP.create("10.0.0.1"), IP.create("10.0.0.2")
    neighbor["capability"]["extended-message"] = False
    neighbor["capability"]["add-path"] = add_path
    for family in ((AFI.ipv4, SAFI.unicast), (AFI.ipv6, SAFI.unicast)):
        neighbor.add_family(family)
        if add_path:
            neighbor.add_addpath(family)
    capabilities = Capabilities().new(neighbor, False)
    session = Negotiated(neighbor)
    session.sent(Open(Version(4), ASN(64512), HoldTime(180), RouterID("10.0.0.1"), capabilities))
    session.received(Open(Version(4), ASN(peer_as), HoldTime(180), RouterID("10.0.0.2"), capabilities))
    assert session.asn4 and len(session.families) == 2 and session.msg_size == 4096
    return session


NEG = negotiated()
NEG_EBGP = negotiated(peer_as=65099)


def exabgp_view(message: bytes, session: Any = NEG) -> api.Event:
    """What ExaBGP's parser makes of one message, through its JSON, as the agent reads it."""
    assert message[:16] == MARKER and message[18] == 2
    assert int.from_bytes(message[16:18], "big") == len(message) <= 4096
    update = Update.unpack_message(message[19:], Direction.IN, session)
    return api.parse_line(JSON("5.0.15").update(session.neighbor, "receive", update, None, b"", b""))


def exabgp_encode(command: str, action: Any = Action.ANNOUNCE, session: Any = NEG) -> list[bytes]:
    """The UPDATEs ExaBGP itself sends for one of our text commands (``neighbor N`` stripped)."""
    line = command.split(" ", 2)[2]
    changes = API(None).api_attributes(line, [])
    assert changes, f"ExaBGP refused {line!r}"
    for change in changes:
        change.nlri.action = action
    return list(Update([c.nlri for c in changes], changes[0].attributes).messages(session))


def announced(events: Sequence[api.Event]) -> list[tuple[str, str]]:
    return [(a.prefix, a.next_hop) for e in events if isinstance(e, api.Update) for a in e.announced()]


def body_of(withdrawn: str = "", attrs: str = "", nlri: str = "") -> bytes:
    """An UPDATE body from hex fields, with the two length fields filled in."""
    w, a = bytes.fromhex(withdrawn), bytes.fromhex(attrs)
    return len(w).to_bytes(2, "big") + w + len(a).to_bytes(2, "big") + a + bytes.fromhex(nlri)


def attr(head: str, value: str) -> str:
    """One attribute in hex: flags and type, then the (one-byte) length of ``value``."""
    return head + f"{len(bytes.fromhex(value)):02x}" + value


def framed(body: bytes) -> bytes:
    return MARKER + (len(body) + 19).to_bytes(2, "big") + b"\x02" + body


def wire_view(messages: Sequence[bytes], add_path: bool = False) -> list[wire.WireUpdate]:
    for message in messages:
        assert message[:16] == MARKER and int.from_bytes(message[16:18], "big") == len(message)
    return [wire.decode_update(m[19:], add_path=add_path) for m in messages]


def expected_attrs(attrs: PathAttrs, ibgp: bool) -> PathAttrs:
    """What the peer receives: LOCAL_PREF 100 by default on iBGP, iBGP-only attributes dropped on eBGP."""
    if not ibgp:
        return PathAttrs(
            attrs.origin, attrs.as_path, attrs.med, None, attrs.communities, attrs.large_communities
        )
    return PathAttrs(
        attrs.origin, attrs.as_path, attrs.med, 100 if attrs.local_pref is None else attrs.local_pref,
        attrs.communities, attrs.large_communities, attrs.originator_id, attrs.cluster_list,
    )  # fmt: skip


def canonical(attrs: PathAttrs) -> PathAttrs:
    """Communities as the parsers print them: sorted numerically, names as a:b."""
    values = sorted(wire._community(c) for c in attrs.communities)
    return PathAttrs(
        attrs.origin, attrs.as_path, attrs.med, attrs.local_pref,
        tuple(f"{v >> 16}:{v & 65535}" for v in values), attrs.large_communities,
        attrs.originator_id, attrs.cluster_list,
    )  # fmt: skip


# --- byte-exact, computed by hand ------------------------------------------------------------


def test_ipv4_announce_bytes_by_hand() -> None:
    attrs = (
        "40 01 01 00"  # ORIGIN igp
        "40 02 06 02 01 00 00 fd e9"  # AS_PATH: one AS_SEQUENCE of one 4-byte AS, 65001
        "40 03 04 0a 00 00 03"  # NEXT_HOP 10.0.0.3
        "80 04 04 00 00 00 07"  # MED 7
        "40 05 04 00 00 00 64"  # LOCAL_PREF 100 (the default on iBGP)
        "c0 08 08 00 01 00 02 ff ff ff 01"  # COMMUNITIES 1:2 no-export (sorted)
    )
    nlri = "1a 0a 41 01 40" + "00" + "20 0a 01 02 03"  # 10.65.1.64/26, 0.0.0.0/0, 10.1.2.3/32
    body = "00 00" + "00 2d" + attrs + nlri  # 4 + 9 + 7 + 7 + 7 + 11 = 45 bytes of attributes
    expected = MARKER + bytes.fromhex(f"00 {19 + 2 + 2 + 45 + 11:02x} 02" + body)
    got = wire.encode_announce(
        "10.0.0.3", PathAttrs(as_path=(65001,), med=7, communities=("no-export", "1:2")),
        ["10.65.1.64/26", "0.0.0.0/0", "10.1.2.3/32"],
    )  # fmt: skip
    assert got == [expected]
    ebgp = wire.encode_announce(
        "10.0.0.3", PathAttrs(local_pref=5, originator_id="1.1.1.1"), ["10.0.0.0/8"], ibgp=False
    )
    assert ebgp == [MARKER + bytes.fromhex("00 27 02 0000 000e 40010100 400200 400304 0a000003 08 0a")]


def test_withdraw_and_eor_bytes_by_hand() -> None:
    withdraw = wire.encode_withdraw(["10.65.1.0/26", "10.0.0.0/8", "0.0.0.0/0", "fd00:1::/64"])
    assert withdraw == [
        MARKER + bytes.fromhex("00 1f 02 0008 1a0a410100 080a 00 0000"),
        MARKER + bytes.fromhex("00 27 02 0000 0010 900f 000c 0002 01 40 fd00000100000000"),
    ]
    assert wire.encode_eor("ipv4 unicast") == MARKER + bytes.fromhex("0017 02 0000 0000")
    # byte for byte what ExaBGP sends as an IPv6 End-of-RIB
    assert wire.encode_eor("ipv6 unicast") == EOR(AFI.ipv6, SAFI.unicast).message(NEG)
    with pytest.raises(ValueError, match="l2vpn"):
        wire.encode_eor("l2vpn evpn")


def test_ipv6_announce_bytes_by_hand() -> None:
    got = wire.encode_announce("fd00::1", PathAttrs(large_communities=("1:2:3",)), ["fd00:1::/64"])
    mp = "900e 001e 0002 01 10 fd000000000000000000000000000001 00 40 fd00000100000000"  # 4 + 30 bytes
    attrs = "40010100 400200 400504 00000064" + mp + "c0200c 00000001 00000002 00000003"  # 14 + 34 + 15
    assert got == [MARKER + bytes.fromhex("00 56 02 0000 003f" + attrs)]


# --- ExaBGP as the oracle ---------------------------------------------------------------------

CASES = [
    ("10.0.0.3", ["10.65.1.0/26", "10.65.2.64/26", "0.0.0.0/0", "192.168.255.255/32", "128.0.0.0/1"]),
    ("fd00::1", ["fd00:1::/64", "fd00:2::/80", "::/0", "2001:db8::1/128", "8000::/1", "fd00:1:2:3::/127"]),
]


@pytest.mark.parametrize("ibgp", [True, False])
@pytest.mark.parametrize("attrs", [PathAttrs(), FULL], ids=["plain", "full"])
@pytest.mark.parametrize(("next_hop", "prefixes"), CASES, ids=["ipv4", "ipv6"])
def test_what_we_encode_exabgp_parses_as_the_text_path_sends(
    next_hop: str, prefixes: list[str], attrs: PathAttrs, ibgp: bool
) -> None:
    session = NEG if ibgp else NEG_EBGP
    if not ibgp:  # the caller prepends its AS for an eBGP peer (ExaBGP does it only for an empty path)
        attrs = replace(attrs, as_path=(64512, *attrs.as_path))
    ours = wire.encode_announce(next_hop, attrs, prefixes, ibgp=ibgp)
    events = [exabgp_view(m, session) for m in ours]
    assert sorted(announced(events)) == sorted((p, next_hop) for p in prefixes)
    want = canonical(expected_attrs(attrs, ibgp))
    assert {e.attrs for e in events if isinstance(e, api.Update)} == {want}
    # ExaBGP's own encoding of the text command the agent sends today: same routes, same attributes
    command = api.announce_commands("10.0.0.2", next_hop, attrs, prefixes, ibgp=ibgp)[0]
    theirs = [exabgp_view(m, session) for m in exabgp_encode(command, session=session)]
    assert sorted(announced(theirs)) == sorted(announced(events))
    assert {e.attrs for e in theirs if isinstance(e, api.Update)} == {want}
    if ":" not in next_hop:  # IPv4: the very same bytes (ExaBGP sorts the NLRI by their encoding)
        in_order = sorted(prefixes, key=lambda p: wire._nlri(p)[1])
        assert wire.encode_announce(next_hop, attrs, in_order, ibgp=ibgp) == exabgp_encode(
            command, session=session
        )


@pytest.mark.parametrize("attrs", [PathAttrs(), FULL], ids=["plain", "full"])
@pytest.mark.parametrize(("next_hop", "prefixes"), CASES, ids=["ipv4", "ipv6"])
def test_what_exabgp_encodes_we_decode(next_hop: str, prefixes: list[str], attrs: PathAttrs) -> None:
    messages = exabgp_encode(api.announce_commands("10.0.0.2", next_hop, attrs, prefixes)[0])
    decoded = wire_view(messages)
    v6 = ":" in next_hop
    got = [
        (p, d.next_hop6 if v6 else d.next_hop) for d in decoded for p in (d.announce6 if v6 else d.announce)
    ]
    assert sorted(got) == sorted((p, next_hop) for p in prefixes)
    assert all(d.attrs == canonical(expected_attrs(attrs, True)) for d in decoded)
    assert all(d.family == ("ipv6 unicast" if v6 else "ipv4 unicast") and d.eor is None for d in decoded)
    # and field for field what ExaBGP's parser hands the text path
    for message, mine in zip(messages, decoded, strict=True):
        event = exabgp_view(message)
        assert isinstance(event, api.Update) and event.attrs == mine.attrs
    # withdrawals as ExaBGP sends them, and its End-of-RIB
    for command in api.withdraw_commands("10.0.0.2", prefixes):
        withdrawn = wire_view(exabgp_encode(command, Action.WITHDRAW))
        assert sorted(p for d in withdrawn for p in d.withdraw + d.withdraw6) == sorted(prefixes)
        assert not any(d.announce or d.announce6 or d.eor for d in withdrawn)
    afi = AFI.ipv6 if v6 else AFI.ipv4
    eor = wire_view([EOR(afi, SAFI.unicast).message(NEG)])[0]
    assert eor.eor == eor.family == ("ipv6 unicast" if v6 else "ipv4 unicast")


def test_withdraw_and_eor_parse_in_exabgp() -> None:
    v4, v6 = ["10.65.1.0/26", "0.0.0.0/0"], ["fd00::/64", "::/0", "2001:db8::/32"]
    events = [exabgp_view(m) for m in wire.encode_withdraw(v4 + v6)]
    assert [sorted(e.withdraw) for e in events if isinstance(e, api.Update)] == [sorted(v4), sorted(v6)]
    for family in ("ipv4 unicast", "ipv6 unicast"):
        assert exabgp_view(wire.encode_eor(family)) == api.EndOfRib("10.0.0.2", family)
        assert wire.decode_update(wire.encode_eor(family)[19:]) == wire.WireUpdate(family=family, eor=family)
    assert wire.encode_withdraw([]) == [] and wire.encode_announce("10.0.0.1", PathAttrs(), []) == []


def test_every_prefix_length_round_trips_with_host_bits_cleared() -> None:
    rng = random.Random(7)
    v4 = [f"{rng.getrandbits(32) >> 24}.{rng.randrange(256)}.{rng.randrange(256)}.9/{n}" for n in range(33)]
    v6 = [f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}/{n}" for n in range(129)]
    # text as ``ipaddress`` prints it: zero runs, and the IPv4-mapped / -compatible forms
    v6 += ["::ffff:1.2.3.4/128", "::1.2.3.4/128", "1:0:1:0:0:1:0:1/128", "1:0:0:1:0:0:1:0/128", "::1/128"]
    v6 += ["::/128", "fe80::/10", "0:1::/32", "1::/16"]
    for next_hop, prefixes in (("10.0.0.3", v4), ("fd00::1", v6)):
        want = [normalize_prefix(p) for p in prefixes]
        ours = wire.encode_announce(next_hop, PathAttrs(), prefixes)
        # ExaBGP prints ::ffff:1.2.3.4 where ipaddress (and we) print ::ffff:102:304
        assert [normalize_prefix(p) for e in map(exabgp_view, ours) for p, _ in announced([e])] == want
        decoded = wire_view(ours)
        assert [p for d in decoded for p in d.announce + d.announce6] == want
        assert [
            p for d in wire_view(wire.encode_withdraw(prefixes)) for p in d.withdraw + d.withdraw6
        ] == want


# --- splitting, long attributes -----------------------------------------------------------------


@pytest.mark.parametrize("max_size", [4096, 1000, 200])
def test_ten_thousand_prefixes_split_without_loss(max_size: int) -> None:
    prefixes = [f"10.{i >> 10}.{(i >> 2) & 255}.{(i & 3) * 64}/26" for i in range(10_000)]
    messages = wire.encode_announce("10.0.0.3", FULL, prefixes, max_size=max_size)
    assert all(len(m) <= max_size for m in messages)
    assert all(len(m) > max_size - 5 for m in messages[:-1])  # full: the next 5-byte NLRI would not fit
    decoded = wire_view(messages)
    assert [p for d in decoded for p in d.announce] == prefixes  # none lost, none repeated, order kept
    if max_size == 4096:
        assert sorted(p for p, _ in announced([exabgp_view(m) for m in messages])) == sorted(prefixes)
    withdrawn = wire.encode_withdraw(prefixes, max_size=max_size)
    assert all(max_size - 5 < len(m) <= max_size for m in withdrawn[:-1]) and len(withdrawn[-1]) <= max_size
    assert [p for d in wire_view(withdrawn) for p in d.withdraw] == prefixes
    v6 = [f"fd00:{i:x}::/64" for i in range(1, 3000)]
    for messages in (
        wire.encode_announce("fd00::1", FULL, v6, max_size=max_size),
        wire.encode_withdraw(v6, max_size=max_size),
    ):
        assert all(len(m) <= max_size for m in messages)
        assert [p for d in wire_view(messages) for p in d.announce6 + d.withdraw6] == v6


def test_long_attributes_use_the_extended_length_flag() -> None:
    attrs = PathAttrs(
        as_path=tuple(range(4200000000, 4200000300)),  # 300 ASNs: two AS_SEQUENCE segments, 1204 bytes
        communities=tuple(f"65000:{i}" for i in range(100)),  # 400 bytes
        large_communities=tuple(f"1:2:{i}" for i in range(30)),  # 360 bytes
    )
    (message,) = wire.encode_announce("10.0.0.3", attrs, ["10.65.1.0/26"])
    assert bytes.fromhex("50 02 04b4 02 ff") in message  # AS_PATH, extended, 2+255*4+2+45*4 bytes
    assert bytes.fromhex("d0 08 0190") in message and bytes.fromhex("d0 20 0168") in message
    (event,) = [exabgp_view(message)]
    assert isinstance(event, api.Update) and event.attrs == canonical(expected_attrs(attrs, True))
    assert wire.decode_update(message[19:]).attrs == event.attrs
    with pytest.raises(ValueError, match=r"max_size 1024 .* leaves -?\d+ bytes for NLRI"):
        wire.encode_announce("10.0.0.3", attrs, ["10.65.1.0/26"], max_size=1024)


# --- add-path, both next hops -----------------------------------------------------------------


def test_add_path_decode_skips_path_ids() -> None:
    session = negotiated(add_path=3)
    command = "neighbor 10.0.0.2 announce attributes path-information 7 next-hop 10.0.0.3 nlri 10.65.1.0/26"
    (message,) = exabgp_encode(command, session=session)
    assert bytes.fromhex("00000007 1a0a410100") in message
    decoded = wire.decode_update(message[19:], add_path=True)
    assert decoded.announce == ("10.65.1.0/26",) and decoded.next_hop == "10.0.0.3"
    body = body_of(withdrawn="00000001 08 0a 00000002 00")
    assert wire.decode_update(body, add_path=True).withdraw == ("10.0.0.0/8", "0.0.0.0/0")
    mp = attr("800f", "0002 01 00000005 20 20010db8 00000006 00")
    assert wire.decode_update(body_of(attrs=mp), add_path=True).withdraw6 == ("2001:db8::/32", "::/0")
    with pytest.raises(wire.WireError, match="withdrawn routes"):
        wire.decode_update(bytes.fromhex("0004 00000001 0000"), add_path=True)


def test_one_update_with_ipv4_nlri_and_mp_reach_keeps_both_next_hops() -> None:
    # MP_REACH with a global and a link-local next hop (length 32): the global one is kept
    hops = "fd00" + "00" * 13 + "01" + "fe80" + "00" * 13 + "01"
    mp = attr("800e", "0002 01 20" + hops + "00 40 fd00000100000000")
    body = body_of(attrs="40010100 400200 400304 0a000003" + mp, nlri="1a0a410100")
    decoded = wire.decode_update(body)
    assert (decoded.announce, decoded.next_hop) == (("10.65.1.0/26",), "10.0.0.3")
    assert (decoded.announce6, decoded.next_hop6) == (("fd00:1::/64",), "fd00::1")
    event = exabgp_view(framed(body))
    # ExaBGP lists the IPv6 prefix once per next hop (global and link-local); the global one is ours
    assert {("10.65.1.0/26", "10.0.0.3"), ("fd00:1::/64", "fd00::1")} <= set(announced([event]))


# --- bad input ----------------------------------------------------------------------------------

GOOD = "40010100 400200 400304 0a000003"  # ORIGIN igp, empty AS_PATH, NEXT_HOP 10.0.0.3
FRAMING = [  # whole bodies, lengths deliberately wrong
    ("00", "UPDATE: 1 bytes"),
    ("0009 1a0a410100 0000", "withdrawn routes length: 9 overruns"),
    ("0000 0020 40010100", "total path attribute length: 32 overruns"),
]
MALFORMED = [  # (withdrawn, attributes, NLRI): the two length fields are computed
    ("21 0a000000 00", "", "", "withdrawn routes: prefix length 33 > 32"),
    ("", GOOD, "18 0a01", "NLRI: prefix /24 overruns"),
    ("", GOOD, "00000001 08 0a", "NLRI: prefix /10 overruns"),  # a path id, without add-path
    ("", "40010200 00 400200 400304 0a000003", "080a", "ORIGIN: bad length 2"),
    ("", "40010103 400200 400304 0a000003", "080a", "ORIGIN: unknown value 3"),
    ("", "40010100 400200 400305 0a00000300", "080a", "NEXT_HOP: bad length 5"),
    ("", GOOD + "c00805 0001000203", "080a", "COMMUNITIES: bad length 5"),
    ("", GOOD + "c0200e 0000000100000002000000030000", "080a", "LARGE_COMMUNITY: bad length 14"),
    ("", GOOD + "800a03 0a0000", "080a", "CLUSTER_LIST: bad length 3"),
    ("", GOOD + "400404 00000007", "080a", "MULTI_EXIT_DISC: flags 0x40 have the wrong optional bit"),
    ("", GOOD + "800504 00000064", "080a", "LOCAL_PREF: flags 0x80"),
    ("", GOOD + "c0200c 0000", "080a", "LARGE_COMMUNITY: length 12 overruns"),
    ("", GOOD + "d02000", "", "LARGE_COMMUNITY: extended length overruns"),
    ("", GOOD + "80", "", "path attribute: header overruns"),
    ("", "40010100 400206 02020000fde9 400304 0a000003", "080a", "AS_PATH: segment at offset 0 overruns"),
    ("", "40010100 400202 0200 400304 0a000003", "080a", "AS_PATH: bad segment header at offset 0"),
    ("", "40010100 400200 400504 00000064", "080a", "NEXT_HOP: missing"),
    ("", "400200 400304 0a000003", "080a", "ORIGIN: missing"),
    ("", "40010100 400200 " + attr("800e", "0002 01 10 fd00"), "", "MP_REACH_NLRI: bad next hop length 16"),
    ("", attr("800e", "0002 01 07 00000000000000 00 00"), "", "MP_REACH_NLRI: bad next hop length 7"),
    ("", attr("800f", "0002 01 81 fd000000"), "", "MP_UNREACH_NLRI: prefix length 129 > 128"),
    ("", attr("800f", "0019 46"), "", "MP_UNREACH_NLRI: unsupported AFI/SAFI 25/70"),
    ("", attr("800f", "0002"), "", "MP_UNREACH_NLRI: 2 bytes, shorter than AFI/SAFI"),
    ("", attr("800f", "000201") + attr("800f", "000201"), "", "MP_UNREACH_NLRI: appears twice"),
    ("", attr("000f", "000201"), "", "MP_UNREACH_NLRI: flags 0x00"),
]


@pytest.mark.parametrize(("body", "reason"), FRAMING, ids=[r for _, r in FRAMING])
def test_malformed_framing_names_the_field(body: str, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode_update(bytes.fromhex(body))


@pytest.mark.parametrize(("withdrawn", "attrs", "nlri", "reason"), MALFORMED, ids=[m[3] for m in MALFORMED])
def test_malformed_input_names_the_field(withdrawn: str, attrs: str, nlri: str, reason: str) -> None:
    with pytest.raises(wire.WireError) as error:
        wire.decode_update(body_of(withdrawn, attrs, nlri))
    assert reason in str(error.value)
    assert isinstance(error.value, ValueError)


def test_decode_normalises_what_peers_may_send() -> None:
    """Host bits past the prefix length are ignored; communities come out sorted, as ExaBGP's do."""
    unreach = attr("800f", "0002 01 7f fd000000000000000000000000000003")
    body = body_of("1a 0a4101ff", GOOD + "c00808 ffffff01 00010002" + unreach, "1a 0a41017f")
    decoded = wire.decode_update(body)
    assert (decoded.withdraw, decoded.announce) == (("10.65.1.192/26",), ("10.65.1.64/26",))
    assert decoded.withdraw6 == ("fd00::2/127",) and decoded.attrs.communities == ("1:2", "65535:65281")
    no_mp = body_of("", GOOD + "c00808 ffffff01 00010002", "1a0a41017f")
    event = exabgp_view(framed(no_mp))
    assert isinstance(event, api.Update) and event.attrs == wire.decode_update(no_mp).attrs


def test_messages_are_filled_to_the_byte() -> None:
    prefixes = [f"10.65.{i}.0/26" for i in range(20)]  # 5 bytes each; 73 = 19 + 4 + 10 * 5
    assert [len(m) for m in wire.encode_withdraw(prefixes, max_size=73)] == [73, 73]
    assert [len(m) for m in wire.encode_withdraw(prefixes, max_size=72)] == [68, 68, 33]


def test_unknown_and_duplicate_attributes() -> None:
    aggregator = "c00708 0000fde9 0a000001"  # AGGREGATOR: not in PathAttrs, skipped
    decoded = wire.decode_update(body_of("", GOOD + aggregator + "800404 00000007", "080a"))
    assert decoded.announce == ("10.0.0.0/8",) and decoded.attrs.med == 7
    twice = body_of("", "40010100 40010102" + GOOD[8:], "080a")
    assert wire.decode_update(twice).attrs.origin == "igp"  # RFC 7606 3 (g): the first one counts


def test_encode_rejects_bad_input_naming_it() -> None:
    with pytest.raises(ValueError, match="'fd00::/64'"):
        wire.encode_announce("10.0.0.3", PathAttrs(), ["10.0.0.0/8", "fd00::/64"])
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        wire.encode_withdraw(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="'nonsense'"):
        wire.encode_announce("10.0.0.3", PathAttrs(communities=("nonsense",)), ["10.0.0.0/8"])
    with pytest.raises(ValueError, match="'65536:1'"):
        wire.encode_announce("10.0.0.3", PathAttrs(communities=("65536:1",)), ["10.0.0.0/8"])
    with pytest.raises(ValueError, match="'1:2'"):
        wire.encode_announce("10.0.0.3", PathAttrs(large_communities=("1:2",)), ["10.0.0.0/8"])
    with pytest.raises(ValueError, match="next_hop 'fd00::1'"):
        wire.encode_announce("fd00::1", PathAttrs(), ["10.0.0.0/8"])
    with pytest.raises(ValueError, match=re.escape("next_hop '10.0.0.3'")):
        wire.encode_announce("10.0.0.3", PathAttrs(), ["fd00::/64"])
    with pytest.raises(ValueError, match="origin"):
        wire.encode_announce("10.0.0.3", PathAttrs(origin="bgp"), ["10.0.0.0/8"])


def test_a_prefix_read_again_decodes_the_same_and_seeds_the_caches_again() -> None:
    """The decoder remembers IPv4 NLRI bytes it has read (a withdrawal reads the announced prefixes
    again): the second read gives the same text, host bits cleared, and puts the prefix's key and
    encoding back in their caches if those were emptied meanwhile."""
    import ipaddress

    from bgp import route

    body = body_of("1a 0a4101ff 00", GOOD, "1a 0a41017f 18 0a4102 20 0a410305")
    first = wire.decode_update(body)
    assert first.announce == ("10.65.1.64/26", "10.65.2.0/24", "10.65.3.5/32")
    assert first.withdraw == ("10.65.1.192/26", "0.0.0.0/0")
    route._KEYS.clear()
    wire._NLRI.clear()
    again = wire.decode_update(body)
    assert (again.announce, again.withdraw) == (first.announce, first.withdraw)
    for prefix in first.announce + first.withdraw:
        net = ipaddress.ip_network(prefix)
        assert route._KEYS[prefix] == (4, int(net.network_address), net.prefixlen)
        assert wire._NLRI[prefix] == wire._nlri_uncached(prefix)


def test_forget_prefixes_leaves_every_prefix_cache_empty_and_decoding_unchanged() -> None:
    """The benchmark's cold reflector relies on this: after ``forget_prefixes`` no prefix read
    before is remembered anywhere, and the next read decodes the same and seeds them again."""
    from bgp import route

    body = body_of("1a 0a4101ff", GOOD, "1a 0a41017f 18 0a4102")
    first = wire.decode_update(body)
    wire._prefix_text(bytes.fromhex("200a410305"), 32)  # the IPv6 / ADD-PATH reader's cache, not used above
    assert wire._V4_SEEN and wire._NLRI and route._KEYS and wire._prefix_text.cache_info().currsize
    wire.forget_prefixes()
    assert not wire._V4_SEEN and not wire._NLRI and not route._KEYS
    assert wire._prefix_text.cache_info().currsize == 0 and route.normalize_prefix.cache_info().currsize == 0
    again = wire.decode_update(body)
    assert (again.announce, again.withdraw) == (first.announce, first.withdraw)
    assert "10.65.1.64/26" in route._KEYS


@pytest.mark.parametrize("bits", [0, 1, 7, 8, 9, 16, 23, 24, 26, 31, 32])
def test_a_cold_table_of_one_prefix_length_decodes_as_one_prefix_at_a_time(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table of one prefix length not read before is decoded per column (``_v4_uniform_fresh``):
    the texts, and the key, encoding and bytes-seen caches it seeds, are what the one-at-a-time
    loop gives; some prefixes already known, or one with host bits set, change nothing."""
    from bgp import route

    rng = random.Random(bits)
    nets = sorted({rng.getrandbits(32) >> (32 - bits) << (32 - bits) if bits else 0 for _ in range(300)})
    prefixes = [f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}/{bits}" for n in nets]

    def bodies(texts: list[str]) -> list[bytes]:
        return [m[wire.HEADER_LEN :] for m in wire.encode_announce("10.0.0.3", PathAttrs(), texts)]

    # some prefixes known before the table comes; then the table; then one prefix sent with host
    # bits set (10.65.1.255/bits as it stands: the encoder would clear them)
    messages = [*bodies(prefixes[::7]), *bodies(prefixes)]
    nlri = f"{bits:02x}0a4101ff"[: 2 + 2 * ((bits + 7) // 8)]
    messages.append(body_of("", GOOD, nlri))
    used: list[int] = []
    columns = wire._v4_uniform_fresh

    def decoded(by_columns: bool) -> tuple[Any, ...]:
        wire.forget_prefixes()
        fresh = (lambda *a: used.append(1) or columns(*a)) if by_columns else (lambda *a: None)
        monkeypatch.setattr(wire, "_v4_uniform_fresh", fresh)
        texts = [wire.decode_update(body).announce for body in messages]
        return texts, dict(wire._V4_SEEN), dict(route._KEYS), dict(wire._NLRI)

    one_at_a_time = decoded(False)
    assert decoded(True) == one_at_a_time
    assert used, "the column decoder was not used for a cold table of one length"
    table = [p for batch in one_at_a_time[0][-1 - len(bodies(prefixes)) : -1] for p in batch]
    assert table == prefixes
    assert one_at_a_time[0][-1] == (normalize_prefix(f"10.65.1.255/{bits}"),)
    wire.forget_prefixes()
