"""Checked field types shared by the resource models.

Each ``check_*`` function takes what YAML/JSON produced and returns the normalised value,
or raises `FieldError`. The ``Annotated`` aliases below plug them into pydantic, so a
model field declared ``cidr: CIDR`` is validated wherever the model is built.

`FieldError` is a ``ValueError`` (pydantic wraps it) that may name a sub-field relative
to where it was raised; `felixpy.resources.parse` joins that onto pydantic's location to
report the full dotted path.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from policy.selector import parse as parse_selector
from policy.tokens import SelectorError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ASN = 4294967295
_PORT_RANGE = re.compile(r"^(\d+):(\d+)$")
# IANA service name (Kubernetes IsValidPortName): 1-15 chars, lower-case alphanumerics and
# '-', at least one letter, no leading/trailing/consecutive hyphens.
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
_PROTOCOLS = {p.lower(): p for p in ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")}
PORT_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP", 6, 17, 132})


class FieldError(ValueError):
    """A value is invalid. ``field`` optionally names a sub-field (camelCase, dotted)."""

    def __init__(self, reason: str, *, field: str = ""):
        self.reason = reason
        self.field = field
        super().__init__(reason)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FieldError(f"must be a string ({what}), not {type(value).__name__}")
    return value


# An IPv4 /32 in canonical form (octets 0-255, no leading zeros): ``str(ip_network(text))`` is the
# text itself, so the two ipaddress parses below are skipped (11,000 endpoints at start-up).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_CANONICAL_V4_HOST = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}/32", re.ASCII)


def canonical_v4_host(cidr: str) -> bool:
    """``a.b.c.d/32`` as ``check_cidr`` returns it: the address is the text before the slash."""
    return _CANONICAL_V4_HOST.fullmatch(cidr) is not None


def check_cidr(value: Any) -> str:
    """A network in CIDR form, v4 or v6, host bits zero. A bare address is refused."""
    text = _text(value, "a CIDR such as 10.0.0.0/16").strip()
    if _CANONICAL_V4_HOST.fullmatch(text):  # a pod's /32 as stored: already what the parse would give
        return text
    if "/" not in text:
        raise FieldError(f"'{text}' is not a CIDR: the prefix length is missing (e.g. '{text}/32')")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise FieldError(f"'{text}' is not a valid IPv4 or IPv6 CIDR") from None
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise FieldError(f"'{text}' has host bits set; the network is '{net}'")
    return str(net)


def check_net(value: Any) -> str:
    """A CIDR, or a bare address taken as a host route (/32 or /128)."""
    text = _text(value, "an address or CIDR").strip()
    if "/" in text:
        return check_cidr(text)
    return str(ipaddress.ip_network(check_ip(text)))


def check_net_as_written(value: Any) -> str:
    """As check_net, but the text is kept as written ("10.0.0.5" stays "10.0.0.5"), as Calico stores
    IPReservation reservedCIDRs."""
    check_net(value)
    return str(value).strip()


def check_ip(value: Any) -> str:
    text = _text(value, "an IP address").strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FieldError(f"'{text}' is not a valid IPv4 or IPv6 address") from None


def check_ipv4(value: Any) -> str:
    text = _text(value, "an IPv4 address").strip()
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise FieldError(f"'{text}' is not a valid IPv4 address") from None


def check_interface(value: Any, version: int) -> str:
    """An address with its subnet's prefix length (e.g. 10.0.0.5/24): host bits expected."""
    text = _text(value, f"an IPv{version} address in CIDR form").strip()
    if "/" not in text:
        raise FieldError(f"'{text}' must be in CIDR form, address/prefix (e.g. '{text}/24')")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise FieldError(f"'{text}' is not a valid address in CIDR form") from None
    if iface.version != version:
        raise FieldError(f"'{text}' is not an IPv{version} address")
    return str(iface)


def check_asn(value: Any) -> int:
    """An AS number 1..4294967295, plain (64512) or asdot ("1.10" = 1*65536+10)."""
    if isinstance(value, bool) or value is None:
        raise FieldError("must be an AS number")
    if isinstance(value, float):
        raise FieldError(f"{value!r} is not an AS number; quote asdot AS numbers, e.g. '1.10'")
    if isinstance(value, str):
        value = _parse_asn_text(value.strip())
    if not isinstance(value, int):
        raise FieldError(f"must be an AS number, not {type(value).__name__}")
    if not 1 <= value <= MAX_ASN:
        raise FieldError(f"AS number {value} is out of range 1..{MAX_ASN}")
    return value


def _parse_asn_text(text: str) -> int:
    high, dot, low = text.partition(".")
    if not high.isdigit() or (dot and not low.isdigit()):
        raise FieldError(f"'{text}' is not an AS number (plain like 64512 or asdot like 1.10)")
    if not dot:
        return int(high)
    if int(high) > 65535 or int(low) > 65535:
        raise FieldError(f"'{text}': each half of an asdot AS number must be 0..65535")
    return int(high) * 65536 + int(low)


def check_port(value: Any) -> int | str:
    """A port: 1..65535, a range "min:max", or a named port (IANA service name)."""
    if isinstance(value, bool):
        raise FieldError("must be a port number, a range 'min:max' or a port name")
    if isinstance(value, int):
        return _port_number(value)
    text = _text(value, "a port number, a range 'min:max' or a port name").strip()
    if text.isdigit():
        return _port_number(int(text))
    match = _PORT_RANGE.match(text)
    if match:
        low, high = _port_number(int(match[1])), _port_number(int(match[2]))
        if low > high:
            raise FieldError(f"port range '{text}': the first port must not exceed the second")
        return text
    return check_port_name(text)


def _port_number(port: int) -> int:
    if not 1 <= port <= 65535:
        raise FieldError(f"port {port} is out of range 1..65535")
    return port


def check_port_name(value: Any) -> str:
    text = _text(value, "a port name")
    if (
        len(text) > 15
        or not _PORT_NAME.match(text)
        or "--" in text
        or not any(c.isalpha() for c in text)
    ):
        raise FieldError(
            f"'{text}' is not a port number, range or valid port name "
            "(names: up to 15 lower-case letters, digits and '-', at least one letter)"
        )
    return text


def check_protocol(value: Any) -> str | int:
    """TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite (any case, normalised) or a number 1..255."""
    if isinstance(value, bool):
        raise FieldError("must be a protocol name or number")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise FieldError(f"protocol number {value} is out of range 1..255")
        return value
    text = _text(value, "a protocol name or number")
    name = _PROTOCOLS.get(text.lower())
    if name is None:
        raise FieldError(f"'{text}' is not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1..255)")
    return name


def check_selector(value: Any) -> str:
    """A selector in Calico's grammar; a syntax error names the position and what was expected."""
    text = _text(value, "a selector expression")
    if not text.strip():
        raise FieldError("selector must not be empty (use 'all()' to select everything)")
    try:
        parse_selector(text)
    except SelectorError as err:
        raise FieldError(str(err)) from None
    return text


def check_mac(value: Any) -> str:
    text = _text(value, "a MAC address")
    if not _MAC.match(text):
        raise FieldError(f"'{text}' is not a MAC address (six hex pairs, e.g. ee:ee:ee:ee:ee:ee)")
    return text


def split_peer_ip(value: str) -> tuple[str, int | None]:
    """Split a BGPPeer ``peerIP`` ("ip", "ip:port", "[v6]:port") into (address, port or None)."""
    text = _text(value, "an IP, IP:port or [IPv6]:port").strip()
    port: int | None = None
    if text.startswith("["):
        addr, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not rest[1:].isdigit():
            raise FieldError(f"'{text}' is not of the form [IPv6]:port")
        port = _port_number(int(rest[1:]))
        if ":" not in addr:
            raise FieldError(f"'{text}': brackets are only for IPv6 addresses")
    elif text.count(":") == 1:
        addr, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise FieldError(f"'{text}': the port after ':' must be a number")
        port = _port_number(int(port_text))
    else:
        addr = text
    return check_ip(addr), port


def check_peer_ip(value: Any) -> str:
    split_peer_ip(value)
    return str(value).strip()


CIDR = Annotated[str, BeforeValidator(check_cidr)]
Net = Annotated[str, BeforeValidator(check_net)]
NetAsWritten = Annotated[str, BeforeValidator(check_net_as_written)]
IPAddress = Annotated[str, BeforeValidator(check_ip)]
IPv4Address = Annotated[str, BeforeValidator(check_ipv4)]
IPv4Interface = Annotated[str, BeforeValidator(lambda v: check_interface(v, 4))]
IPv6Interface = Annotated[str, BeforeValidator(lambda v: check_interface(v, 6))]
ASNumber = Annotated[int, BeforeValidator(check_asn)]
Port = Annotated[int | str, BeforeValidator(check_port)]
Protocol = Annotated[str | int, BeforeValidator(check_protocol)]
Selector = Annotated[str, BeforeValidator(check_selector)]
MAC = Annotated[str, BeforeValidator(check_mac)]
PeerIP = Annotated[str, BeforeValidator(check_peer_ip)]
