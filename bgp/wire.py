"""BGP UPDATE messages as bytes, for the reflector's wire path (pure, stdlib only).

RFC 4271 4.3: marker, length, type 2, ``withdrawn len | withdrawn | attrs len | attrs | NLRI``;
IPv6 unicast in MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760). AS numbers are 4 bytes: wire mode
is only used where ASN4 was negotiated (RFC 6793). Encoding sends what ExaBGP sends for the
``bgp.exabgp_api`` text commands (same attributes, same iBGP rules, LOCAL_PREF 100 by default on
iBGP, communities sorted), attributes in ascending type order. Decoding keeps what ``PathAttrs``
holds and skips other attributes (AGGREGATOR, extended communities...) as the text path does.
A malformed UPDATE raises ``WireError``; the caller treats it as a withdraw of what it carried
(RFC 7606 treat-as-withdraw; for framing errors RFC 7606 asks a session reset, caller's call).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import cast

from bgp.route import KEY_CACHE, KEY_CACHE_MAX, PathAttrs, normalize_prefix, seed_prefix_key

MARKER = b"\xff" * 16
HEADER_LEN = 19
MAX_SIZE = 4096
IPV4 = "ipv4 unicast"
IPV6 = "ipv6 unicast"

ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF = 1, 2, 3, 4, 5
COMMUNITIES, ORIGINATOR_ID, CLUSTER_LIST, MP_REACH, MP_UNREACH, LARGE_COMMUNITY = 8, 9, 10, 14, 15, 32
OPTIONAL, TRANSITIVE, EXTENDED = 0x80, 0x40, 0x10
# what PathAttrs holds: code -> (name, optional bit, length: fixed, -n = a multiple of n, 0 = any)
KNOWN = {
    ORIGIN: ("ORIGIN", 0, 1), AS_PATH: ("AS_PATH", 0, 0), NEXT_HOP: ("NEXT_HOP", 0, 4),
    MED: ("MULTI_EXIT_DISC", OPTIONAL, 4), LOCAL_PREF: ("LOCAL_PREF", 0, 4),
    COMMUNITIES: ("COMMUNITIES", OPTIONAL, -4), ORIGINATOR_ID: ("ORIGINATOR_ID", OPTIONAL, 4),
    CLUSTER_LIST: ("CLUSTER_LIST", OPTIONAL, -4), MP_REACH: ("MP_REACH_NLRI", OPTIONAL, 0),
    MP_UNREACH: ("MP_UNREACH_NLRI", OPTIONAL, 0), LARGE_COMMUNITY: ("LARGE_COMMUNITY", OPTIONAL, -12),
}  # fmt: skip
ORIGIN_CODES = {"igp": 0, "egp": 1, "incomplete": 2}
ORIGIN_NAMES = {v: k for k, v in ORIGIN_CODES.items()}
WELL_KNOWN = {
    "no-export": 0xFFFFFF01, "no-advertise": 0xFFFFFF02, "no-export-subconfed": 0xFFFFFF03,
    "no-peer": 0xFFFFFF04, "nopeer": 0xFFFFFF04, "blackhole": 0xFFFF029A,
}  # fmt: skip
_FAMILY_OF_AFI = {1: IPV4, 2: IPV6}


class WireError(ValueError):
    """A malformed UPDATE; the message names the field and the reason."""


@dataclass(frozen=True, slots=True)
class WireUpdate:
    """One decoded UPDATE.

    ``announce``/``withdraw``/``next_hop`` are the classic IPv4 fields (NLRI, Withdrawn Routes,
    NEXT_HOP); ``announce6``/``withdraw6``/``next_hop6`` are what MP_REACH_NLRI / MP_UNREACH_NLRI
    carried (IPv6 unicast, or IPv4 unicast if a peer puts it there) with MP_REACH's next hop
    (the global address when a link-local one follows). ``family`` is the family of what the
    message carries (MP first); ``eor`` is that family when the message is an End-of-RIB.
    """

    announce: tuple[str, ...] = ()
    withdraw: tuple[str, ...] = ()
    next_hop: str = ""
    attrs: PathAttrs = field(default_factory=PathAttrs)
    family: str = IPV4
    eor: str | None = None
    announce6: tuple[str, ...] = ()
    withdraw6: tuple[str, ...] = ()
    next_hop6: str = ""


# --- encoding -------------------------------------------------------------------------------


NLRI_CACHE_MAX = 1 << 16
_NLRI: dict[str, tuple[str, bytes]] = {}  # prefix text -> _nlri(text); the decoder seeds it


def _nlri(prefix: str) -> tuple[str, bytes]:
    """(family, prefix-length byte + significant octets); host bits are cleared."""
    found = _NLRI.get(prefix)
    if found is None:
        found = _nlri_uncached(prefix)
        if len(_NLRI) >= NLRI_CACHE_MAX:
            _NLRI.clear()
        _NLRI[prefix] = found
    return found


def _nlri_uncached(prefix: str) -> tuple[str, bytes]:
    address, slash, bits_text = prefix.partition("/")
    family, width = (IPV6, 128) if ":" in address else (IPV4, 32)
    try:
        packed = socket.inet_pton(socket.AF_INET6 if width == 128 else socket.AF_INET, address)
    except OSError:
        raise ValueError(f"prefix {prefix!r}: not an IP address") from None
    if not slash or not bits_text.isdigit() or int(bits_text) > width:
        raise ValueError(f"prefix {prefix!r}: bad prefix length")
    bits = int(bits_text)
    octets = (bits + 7) >> 3
    value = int.from_bytes(packed, "big") >> (width - bits) << (octets * 8 - bits) if bits else 0
    return family, bytes((bits,)) + value.to_bytes(octets, "big")


_FAMILY, _DATA = itemgetter(0), itemgetter(1)


def _packed(prefixes: Sequence[str]) -> tuple[str, list[bytes]]:
    cached = list(map(_NLRI.get, prefixes))  # in C; the decoder seeded most of them
    if None in cached:
        items = [found or _nlri(p) for p, found in zip(prefixes, cached, strict=True)]
    else:
        items = cast(list[tuple[str, bytes]], cached)
    family = items[0][0] if items else IPV4
    if len(set(map(_FAMILY, items))) > 1:
        for prefix, (other, _) in zip(prefixes, items, strict=True):
            if other != family:
                raise ValueError(f"prefix {prefix!r}: mixes IPv4 and IPv6 in one call")
    return family, list(map(_DATA, items))


def _attr(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{KNOWN[code][0]}: {len(value)} bytes is too long for one attribute")
    if len(value) > 255:
        return struct.pack("!BBH", flags | EXTENDED, code, len(value)) + value
    return bytes((flags, code, len(value))) + value


def _community(text: str) -> int:
    low = text.strip().lower().replace("_", "-")
    high, colon, rest = low.partition(":")
    if low in WELL_KNOWN:
        return WELL_KNOWN[low]
    if colon and high.isdigit() and rest.isdigit() and int(high) <= 0xFFFF and int(rest) <= 0xFFFF:
        return int(high) << 16 | int(rest)
    if low.isdigit() and int(low) <= 0xFFFFFFFF:
        return int(low)
    raise ValueError(f"community {text!r}: not a:b (16-bit each) or a known name")


def _large(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 0xFFFFFFFF for p in parts):
        raise ValueError(f"large community {text!r}: not a:b:c (32-bit each)")
    return struct.pack("!III", *map(int, parts))


def _ip(text: str, what: str, v6: bool = False) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, text)
    except OSError:
        raise ValueError(f"{what} {text!r}: not an IPv{6 if v6 else 4} address") from None


def _path_attributes(next_hop: bytes | None, attrs: PathAttrs, ibgp: bool) -> tuple[bytes, bytes]:
    """Encoded attributes split around MP_REACH (type 14): (types below 14, types above)."""
    if attrs.origin not in ORIGIN_CODES:
        raise ValueError(f"origin {attrs.origin!r}: not igp, egp or incomplete")
    try:
        path = b"".join(
            bytes((2, len(chunk))) + struct.pack(f"!{len(chunk)}I", *chunk)
            for chunk in (attrs.as_path[i : i + 255] for i in range(0, len(attrs.as_path), 255))
        )
        med = struct.pack("!I", attrs.med) if attrs.med is not None else b""
        pref = struct.pack("!I", 100 if attrs.local_pref is None else attrs.local_pref)
    except struct.error as exc:
        raise ValueError(f"as_path/med/local_pref out of the 32-bit range: {exc}") from None
    low = [_attr(TRANSITIVE, ORIGIN, bytes((ORIGIN_CODES[attrs.origin],))), _attr(TRANSITIVE, AS_PATH, path)]
    if next_hop is not None:
        low.append(_attr(TRANSITIVE, NEXT_HOP, next_hop))
    if med:
        low.append(_attr(OPTIONAL, MED, med))
    if ibgp:
        low.append(_attr(TRANSITIVE, LOCAL_PREF, pref))
    if attrs.communities:
        values = sorted(_community(c) for c in attrs.communities)
        low.append(_attr(OPTIONAL | TRANSITIVE, COMMUNITIES, struct.pack(f"!{len(values)}I", *values)))
    if ibgp and attrs.originator_id:
        low.append(_attr(OPTIONAL, ORIGINATOR_ID, _ip(attrs.originator_id, "originator_id")))
    if ibgp and attrs.cluster_list:
        ids = b"".join(_ip(c, "cluster id") for c in attrs.cluster_list)
        low.append(_attr(OPTIONAL, CLUSTER_LIST, ids))
    high = b""
    if attrs.large_communities:
        high = _attr(
            OPTIONAL | TRANSITIVE, LARGE_COMMUNITY, b"".join(_large(c) for c in attrs.large_communities)
        )
    return b"".join(low), high


def _message(withdrawn: bytes, attributes: bytes, nlri: bytes = b"") -> bytes:
    length = HEADER_LEN + 4 + len(withdrawn) + len(attributes) + len(nlri)
    return b"".join(
        (MARKER, struct.pack("!HBH", length, 2, len(withdrawn)), withdrawn,
         struct.pack("!H", len(attributes)), attributes, nlri)
    )  # fmt: skip


def _fill(items: list[bytes], room: int, max_size: int) -> list[bytes]:
    """Greedy split of packed NLRI into blobs of at most ``room`` bytes, order kept."""
    if not 64 <= max_size <= 0xFFFF or room < 17:  # 17: the longest IPv6 NLRI
        raise ValueError(f"max_size {max_size} (64..65535) leaves {room} bytes for NLRI per message")
    sizes = set(map(len, items))
    if len(sizes) == 1:  # all of one length (a table of /26s): cut by count, no loop per item
        per_blob = room // sizes.pop()
        return [b"".join(items[i : i + per_blob]) for i in range(0, len(items), per_blob)]
    blobs: list[bytes] = []
    current: list[bytes] = []
    used = 0
    for item in items:
        if used + len(item) > room:
            blobs.append(b"".join(current))
            current, used = [], 0
        current.append(item)
        used += len(item)
    if current:
        blobs.append(b"".join(current))
    return blobs


def _mp_header(code: int, length: int) -> bytes:
    return struct.pack("!BBH", OPTIONAL | EXTENDED, code, length)


def encode_announce(
    next_hop: str, attrs: PathAttrs, prefixes: Sequence[str], *, ibgp: bool = True, max_size: int = MAX_SIZE
) -> list[bytes]:
    """Complete UPDATE messages announcing ``prefixes`` (one family) with ``attrs`` via ``next_hop``.

    ``attrs.as_path`` goes out as given (the caller prepends its AS on eBGP); LOCAL_PREF (100
    when unset), ORIGINATOR_ID and CLUSTER_LIST only when ``ibgp``. Raises ValueError.
    """
    family, items = _packed(prefixes)
    if not items:
        return []
    if family == IPV4:
        low, high = _path_attributes(_ip(next_hop, "next_hop"), attrs, ibgp)
        attributes = low + high
        return [
            _message(b"", attributes, blob)
            for blob in _fill(items, max_size - 23 - len(attributes), max_size)
        ]
    low, high = _path_attributes(None, attrs, ibgp)
    mp_fixed = struct.pack("!HBB", 2, 1, 16) + _ip(next_hop, "next_hop", v6=True) + b"\x00"
    room = min(max_size - 23 - len(low) - len(high) - 4 - len(mp_fixed), 0xFFFF - len(mp_fixed))
    return [
        _message(b"", b"".join((low, _mp_header(MP_REACH, len(mp_fixed) + len(blob)), mp_fixed, blob, high)))
        for blob in _fill(items, room, max_size)
    ]


def encode_withdraw(prefixes: Sequence[str], *, max_size: int = MAX_SIZE) -> list[bytes]:
    """UPDATE messages withdrawing ``prefixes``: IPv4 ones first (Withdrawn Routes), then IPv6
    ones (MP_UNREACH_NLRI); the two families may be mixed in one call."""
    if ":" not in "".join(prefixes):  # one C-speed test instead of two per prefix
        v4, v6 = list(prefixes), []
    else:
        v4 = [p for p in prefixes if ":" not in p]
        v6 = [p for p in prefixes if ":" in p]
    out = [_message(blob, b"") for blob in _fill(_packed(v4)[1], max_size - 23, max_size)] if v4 else []
    if v6:
        room = min(max_size - 23 - 7, 0xFFFF - 3)
        for blob in _fill(_packed(v6)[1], room, max_size):
            out.append(_message(b"", _mp_header(MP_UNREACH, 3 + len(blob)) + b"\x00\x02\x01" + blob))
    return out


def encode_eor(family: str) -> bytes:
    """End-of-RIB (RFC 4724): an empty UPDATE for IPv4 unicast, a bare MP_UNREACH otherwise."""
    if family == IPV4:
        return _message(b"", b"")
    if family == IPV6:
        return _message(b"", _mp_header(MP_UNREACH, 3) + b"\x00\x02\x01")
    raise ValueError(f"family {family!r}: only {IPV4!r} and {IPV6!r}")


# --- decoding -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def _prefix_text(chunk: bytes, width: int) -> str:
    bits, octets = chunk[0], len(chunk) - 1
    value = (int.from_bytes(chunk[1:], "big") << (width - 8 * octets)) >> (width - bits) << (width - bits)
    if width == 32:
        text = f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}/{bits}"
        seed_prefix_key(text, (4, value, bits))  # the RIB and filters need these integers too
        return text
    text = socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))  # ~10x faster than ipaddress
    text = f"{ipaddress.IPv6Address(value) if '.' in text else text}/{bits}"  # same text but for ::a.b.c.d
    seed_prefix_key(text, (6, value, bits))
    return text


_LENGTH = tuple(f"/{bits}" for bits in range(33))
_V4_MASK = tuple(((1 << bits) - 1) << (32 - bits) for bits in range(33))
_V4_PAD = (b"\0\0\0\0", b"\0\0\0", b"\0\0", b"\0", b"")  # by significant octets
_V4_HOST = tuple(0xFF >> (bits % 8) if bits % 8 else 0 for bits in range(33))  # last octet's host bits
# NLRI bytes as on the wire (length byte + octets) -> (prefix text, its key, its encoding): a prefix
# is read again when it is withdrawn, re-announced or resent (route refresh, a peer's restart)
_V4_SEEN: dict[bytes, tuple[str, tuple[int, int, int], tuple[str, bytes]]] = {}
_TEXT, _KEY, _ENCODED = itemgetter(0), itemgetter(1), itemgetter(2)


def forget_prefixes() -> None:
    """Empty every prefix cache the codec and the RIB share (text, key, encoding, bytes seen), as a
    new process starts: benchmarks call it so each run's reflector decodes its table cold."""
    _NLRI.clear()
    _V4_SEEN.clear()
    KEY_CACHE.clear()
    _prefix_text.cache_clear()
    normalize_prefix.cache_clear()


def _prefixes_v4(data: bytes, start: int, end: int, what: str) -> tuple[str, ...]:
    """``_prefixes`` for plain IPv4 NLRI, inlined: a full table is 10,000 of these, and a
    function call, a cache lookup and an f-string per prefix were most of its decoding time.
    Same text as ``normalize_prefix`` (host bits cleared), with the integers seeded. A prefix
    seen before is one dictionary lookup (``_V4_SEEN``); a new one is formatted by
    ``inet_ntoa`` (C) instead of four octets joined in Python. Either way the key and encoding
    caches are seeded, so the RIB, the filters and the encoder find them."""
    if len(KEY_CACHE) >= KEY_CACHE_MAX - 4096:  # one message holds fewer than 4,096 prefixes
        KEY_CACHE.clear()
    if len(_NLRI) >= NLRI_CACHE_MAX - 4096:
        _NLRI.clear()
    if len(_V4_SEEN) >= NLRI_CACHE_MAX - 4096:
        _V4_SEEN.clear()
    keys, nlri, seen, length, pad, host = KEY_CACHE, _NLRI, _V4_SEEN, _LENGTH, _V4_PAD, _V4_HOST
    if end > start and data[start] <= 32:
        # the common case (a table of one prefix length, read before: its withdrawal, a
        # refresh): every length byte the same and every prefix known, all in C
        size = 1 + ((data[start] + 7) >> 3)
        if not (end - start) % size and data[start:end:size].count(data[start]) == (end - start) // size:
            cuts = map(slice, range(start, end, size), range(start + size, end + size, size))
            raws = list(map(data.__getitem__, cuts))
            looked = list(map(seen.get, raws))
            if None not in looked:
                known = cast(list[tuple[str, tuple[int, int, int], tuple[str, bytes]]], looked)
                texts = list(map(_TEXT, known))
                if texts[0] not in keys or texts[-1] not in keys:  # seeded when first read
                    keys.update(zip(texts, map(_KEY, known), strict=True))
                if texts[0] not in nlri or texts[-1] not in nlri:
                    nlri.update(zip(texts, map(_ENCODED, known), strict=True))
                return tuple(texts)
            fresh = _v4_uniform_fresh(data, start, end, raws)
            if fresh is not None:
                return fresh
    ntoa, from_bytes = socket.inet_ntoa, int.from_bytes
    out: list[str] = []
    append = out.append
    i = start
    while i < end:
        bits = data[i]
        if bits > 32:
            raise WireError(f"{what}: prefix length {bits} > 32")
        octets = (bits + 7) >> 3
        j = i + 1 + octets
        if j > end:
            raise WireError(f"{what}: prefix /{bits} overruns the field")
        raw = data[i:j]
        found = seen.get(raw)
        if found is None:
            quad = raw[1:] + pad[octets]
            # what the encoder would make of the text: these very bytes, unless host bits were set
            packed = raw
            if data[j - 1] & host[bits]:  # (host[0] is 0: a /0 has no octet to look at)
                quad = (from_bytes(quad, "big") & _V4_MASK[bits]).to_bytes(4, "big")
                packed = bytes((bits,)) + quad[:octets]
            key = (4, from_bytes(quad, "big"), bits)
            found = seen[raw] = (ntoa(quad) + length[bits], key, (IPV4, packed))
        text, keys[text], nlri[text] = found
        append(text)
        i = j
    return tuple(out)


# per prefix length: each byte with only the host bits of a prefix's last octet kept (0: none set)
_V4_HOST_BYTES = tuple(bytes(b & mask for b in range(256)) for mask in _V4_HOST)


def _v4_uniform_fresh(data: bytes, start: int, end: int, raws: list[bytes]) -> tuple[str, ...] | None:
    """``_prefixes_v4`` for IPv4 NLRI of one prefix length (``raws``: each prefix's bytes as on the
    wire) that are not all known yet — a table arriving at a freshly started reflector, 10,000
    /26 in ~13 UPDATEs. The same texts, keys and encodings as the loop below gives, built per
    column in C (slices, ``inet_ntoa``, ``int.from_bytes``, ``zip``) instead of one prefix at a
    time; the caches are seeded the same way. None when a prefix has host bits set (the loop
    clears them one by one)."""
    bits = data[start]
    size = 1 + ((bits + 7) >> 3)
    octets = size - 1
    if octets and _V4_HOST[bits]:
        last = data[start + octets : end : size]
        if last.translate(_V4_HOST_BYTES[bits]).count(0) != len(last):
            return None
    ends = range(start + size, end + size, size)
    quads = list(map(data.__getitem__, map(slice, range(start + 1, end + 1, size), ends)))
    if octets < 4:
        quads = list(map(bytes.__add__, quads, repeat(_V4_PAD[octets])))
    texts = list(map(str.__add__, map(socket.inet_ntoa, quads), repeat(_LENGTH[bits])))
    prefix_keys = list(zip(repeat(4), map(int.from_bytes, quads), repeat(bits)))  # big-endian (3.11)
    encoded = list(zip(repeat(IPV4), raws))
    _V4_SEEN.update(zip(raws, zip(texts, prefix_keys, encoded, strict=True), strict=True))
    KEY_CACHE.update(zip(texts, prefix_keys, strict=True))
    _NLRI.update(zip(texts, encoded, strict=True))
    return tuple(texts)


def _prefixes(data: bytes, start: int, end: int, width: int, add_path: bool, what: str) -> tuple[str, ...]:
    if width == 32 and not add_path:
        return _prefixes_v4(data, start, end, what)
    out: list[str] = []
    i = start
    while i < end:
        if add_path:
            i += 4
            if i >= end:
                raise WireError(f"{what}: path identifier without a prefix")
        bits = data[i]
        if bits > width:
            raise WireError(f"{what}: prefix length {bits} > {width}")
        j = i + 1 + ((bits + 7) >> 3)
        if j > end:
            raise WireError(f"{what}: prefix /{bits} overruns the field")
        out.append(_prefix_text(data[i:j], width))
        i = j
    return tuple(out)


def _address(value: bytes) -> str:
    # interned: every route of a peer carries the same next hop / originator (one copy, not 10,000)
    return sys.intern(str(ipaddress.ip_address(value)))


def _mp_family(value: bytes, what: str) -> tuple[str, int]:
    if len(value) < 3:
        raise WireError(f"{what}: {len(value)} bytes, shorter than AFI/SAFI")
    afi, safi = struct.unpack_from("!HB", value)
    if afi not in _FAMILY_OF_AFI or safi != 1:
        raise WireError(f"{what}: unsupported AFI/SAFI {afi}/{safi}")
    return _FAMILY_OF_AFI[afi], 32 if afi == 1 else 128


def decode_update(body: bytes, *, add_path: bool = False) -> WireUpdate:
    """Decode an UPDATE ``body`` (the message after its 19-byte header). Raises WireError.

    With ``add_path`` every NLRI (all fields) starts with a 4-byte path id, which is ignored.
    """
    body, size = bytes(body), len(body)
    if size < 4:
        raise WireError(f"UPDATE: {size} bytes, shorter than the two length fields")
    wlen = int.from_bytes(body[0:2], "big")
    if 2 + wlen + 2 > size:
        raise WireError(f"withdrawn routes length: {wlen} overruns the message")
    alen = int.from_bytes(body[2 + wlen : 4 + wlen], "big")
    astart = 4 + wlen
    aend = astart + alen
    if aend > size:
        raise WireError(f"total path attribute length: {alen} overruns the message")
    withdraw = _prefixes(body, 2, 2 + wlen, 32, add_path, "withdrawn routes")
    announce = _prefixes(body, aend, size, 32, add_path, "NLRI")
    if not wlen and not alen and size == 4:
        return WireUpdate(eor=IPV4)
    seen: dict[int, bytes] = {}
    i = astart
    while i < aend:
        if i + 3 > aend:
            raise WireError("path attribute: header overruns the attributes")
        flags, code = body[i], body[i + 1]
        name, optional, fixed = KNOWN.get(code, (f"attribute {code}", -1, 0))
        if flags & EXTENDED:
            if i + 4 > aend:
                raise WireError(f"{name}: extended length overruns the attributes")
            length, i = int.from_bytes(body[i + 2 : i + 4], "big"), i + 4
        else:
            length, i = body[i + 2], i + 3
        if i + length > aend:
            raise WireError(f"{name}: length {length} overruns the path attributes")
        value, i = body[i : i + length], i + length
        if code in seen:
            if code in (MP_REACH, MP_UNREACH):
                raise WireError(f"{name}: appears twice")
            continue  # RFC 7606 3 (g): keep the first
        if optional < 0:
            continue  # not one PathAttrs holds
        if flags & OPTIONAL != optional:
            raise WireError(f"{name}: flags 0x{flags:02x} have the wrong optional bit")
        if (fixed > 0 and length != fixed) or (fixed < 0 and (length % -fixed or not length)):
            raise WireError(f"{name}: bad length {length}")
        seen[code] = value
    return _attributes(seen, withdraw, announce, add_path)


def _attributes(
    seen: dict[int, bytes], withdraw: tuple[str, ...], announce: tuple[str, ...], add_path: bool
) -> WireUpdate:
    family, next_hop6 = IPV4, ""
    announce6: tuple[str, ...] = ()
    withdraw6: tuple[str, ...] = ()
    if MP_UNREACH in seen:
        value = seen[MP_UNREACH]
        family, width = _mp_family(value, "MP_UNREACH_NLRI")
        withdraw6 = _prefixes(value, 3, len(value), width, add_path, "MP_UNREACH_NLRI")
        if not withdraw6 and len(seen) == 1 and not withdraw and not announce:
            return WireUpdate(family=family, eor=family)
    if MP_REACH in seen:
        value = seen[MP_REACH]
        family, width = _mp_family(value, "MP_REACH_NLRI")
        hop_len = value[3] if len(value) > 3 else -1
        if hop_len not in (4, 16, 32) or 5 + hop_len > len(value):
            raise WireError(f"MP_REACH_NLRI: bad next hop length {hop_len}")
        next_hop6 = _address(value[4 : 4 + min(hop_len, 16)])
        announce6 = _prefixes(value, 5 + hop_len, len(value), width, add_path, "MP_REACH_NLRI")
    if announce or announce6:
        for code in (ORIGIN, AS_PATH) + ((NEXT_HOP,) if announce else ()):
            if code not in seen:
                raise WireError(f"{KNOWN[code][0]}: missing from an UPDATE that announces routes")
    if seen.get(ORIGIN, b"\0")[0] > 2:
        raise WireError(f"ORIGIN: unknown value {seen[ORIGIN][0]}")
    as_path: list[int] = []
    path, j = seen.get(AS_PATH, b""), 0
    while j < len(path):
        if j + 2 > len(path) or path[j] not in (1, 2, 3, 4) or not path[j + 1]:
            raise WireError(f"AS_PATH: bad segment header at offset {j}")
        end = j + 2 + 4 * path[j + 1]
        if end > len(path):
            raise WireError(f"AS_PATH: segment at offset {j} overruns the attribute")
        as_path.extend(struct.unpack_from(f"!{path[j + 1]}I", path, j + 2))
        j = end

    def words(code: int) -> tuple[int, ...]:
        data = seen.get(code, b"")
        return struct.unpack(f"!{len(data) // 4}I", data)

    large = words(LARGE_COMMUNITY)
    attrs = PathAttrs(
        origin=ORIGIN_NAMES[seen.get(ORIGIN, b"\0")[0]],
        as_path=tuple(as_path),
        med=words(MED)[0] if MED in seen else None,
        local_pref=words(LOCAL_PREF)[0] if LOCAL_PREF in seen else None,
        communities=tuple(sys.intern(f"{c >> 16}:{c & 0xFFFF}") for c in sorted(words(COMMUNITIES))),
        large_communities=tuple(
            sys.intern(f"{large[k]}:{large[k + 1]}:{large[k + 2]}") for k in range(0, len(large), 3)
        ),
        originator_id=_address(seen[ORIGINATOR_ID]) if ORIGINATOR_ID in seen else None,
        cluster_list=tuple(_address(v.to_bytes(4, "big")) for v in words(CLUSTER_LIST)),
    )
    return WireUpdate(
        announce=announce, withdraw=withdraw, next_hop=_address(seen[NEXT_HOP]) if NEXT_HOP in seen else "",
        attrs=attrs, family=IPV6 if family == IPV6 and not (announce or withdraw) else IPV4,
        announce6=announce6, withdraw6=withdraw6, next_hop6=next_hop6,
    )  # fmt: skip
