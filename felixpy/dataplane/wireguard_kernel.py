"""The WireGuard device ``wireguard.cali``: link, key, peers, routing table and rule.

Calico's shapes (reference wave 2 §2): the device listens on ``wireguardListeningPort`` (51820)
and marks its own UDP with the WireGuard fwmark (0x200000); the policy rule at priority
``wireguardRoutingRulePriority`` (99) sends everything *not* carrying that mark to the WireGuard
table (1), which routes each programmed peer's allowed CIDRs ``dev wireguard.cali`` and
``throw``s the blocks of nodes that are not (they fall back to the main table: plain routing,
IPIP or VXLAN).

Keys and peers go through Debian's ``wireguard-tools`` (``wg``), not pyroute2's ``WireGuard``:
pyroute2 0.9 has no key generation (Curve25519 would need another Python dependency) and its
generic-netlink socket has no ``netns`` argument, while ``wg`` runs under ``nsenter`` like the
other tools, generates keys, applies a whole desired configuration as a diff (``wg syncconf``
keeps sessions of unchanged peers) and prints the device as a stable tab-separated ``dump``.
The configuration file, which holds the private key, is written 0600 in the agent's run
directory and never leaves the node.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

import structlog

from felixpy.dataplane.errors import CommandFailed, DataplaneError
from felixpy.dataplane.netlink_ops import open_iproute
from felixpy.dataplane.sysctl import run_in_netns
from felixpy.dataplane.tool_runner import run
from felixpy.netlinkio import messages as nl
from felixpy.netlinkio import query
from felixpy.netlinkio.messages import Hop, Route
from felixpy.netlinkio.route_writer import RouteWriter, route_socket
from felixpy.netlinkio.veth import NetlinkFailure
from felixpy.private_files import SECRET, private_dir, write_file

log = structlog.get_logger(__name__)
WG_DEVICE = "wireguard.cali"
WG_PORT = 51820
WG_FWMARK = 0x200000
WG_TABLE = 1
WG_RULE_PRIORITY = 99
RTN_THROW = 9
RT_SCOPE_LINK = 253
RTPROT_FELIXPY = 80
FIB_RULE_INVERT = 0x2


class WireguardUnsupported(DataplaneError):
    """The kernel has no WireGuard (module missing) or ``wg`` is not installed."""


@dataclass(frozen=True, slots=True)
class PeerState:
    public_key: str
    endpoint: str | None  # "ip:port"
    allowed_ips: tuple[str, ...]
    keepalive: int
    rx_bytes: int = 0
    tx_bytes: int = 0
    latest_handshake: int = 0  # Unix seconds, 0: none yet


@dataclass(frozen=True, slots=True)
class DeviceState:
    private_key: str | None
    public_key: str | None
    listen_port: int
    fwmark: int
    peers: dict[str, PeerState] = field(default_factory=dict)


def parse_dump(text: str) -> DeviceState:
    """``wg show <dev> dump``: the device line, then one line per peer (tab separated)."""
    lines = [line.split("\t") for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataplaneError("wg show dump printed nothing")
    priv, pub, port, mark = (lines[0] + ["", "", "0", "off"])[:4]
    peers = {}
    for cols in lines[1:]:
        key, _psk, endpoint, allowed, handshake, rx, tx, keepalive = (cols + [""] * 8)[:8]
        peers[key] = PeerState(
            public_key=key,
            endpoint=None if endpoint == "(none)" else endpoint,
            allowed_ips=tuple(sorted(a for a in allowed.split(",") if a and a != "(none)")),
            keepalive=0 if keepalive in ("off", "") else int(keepalive),
            rx_bytes=int(rx or 0),
            tx_bytes=int(tx or 0),
            latest_handshake=int(handshake or 0),
        )
    return DeviceState(
        private_key=None if priv == "(none)" else priv,
        public_key=None if pub == "(none)" else pub,
        listen_port=int(port or 0),
        fwmark=0 if mark in ("off", "") else int(mark, 16),
        peers=peers,
    )


def _wg(argv: list[str], *, netns: str | None = None, input: str | None = None) -> str:
    try:
        return run(["wg", *argv], netns=netns, input=input, timeout=30)
    except FileNotFoundError as exc:
        raise WireguardUnsupported("wireguard-tools (wg) is not installed") from exc
    except CommandFailed as exc:
        if "Protocol not supported" in exc.stderr or "not supported" in exc.stderr.lower():
            raise WireguardUnsupported(f"kernel without wireguard: {exc.stderr.strip()}") from exc
        raise


def genkey() -> str:
    return _wg(["genkey"]).strip()


def pubkey(private_key: str) -> str:
    return _wg(["pubkey"], input=private_key + "\n").strip()


def read_device(name: str = WG_DEVICE, *, netns: str | None = None) -> DeviceState:
    return parse_dump(_wg(["show", name, "dump"], netns=netns))


def ensure_device(name: str = WG_DEVICE, *, mtu: int, netns: str | None = None) -> int:
    """The WireGuard link exists, up, with ``mtu``; returns its ifindex."""
    from pyroute2.netlink.exceptions import NetlinkError

    with open_iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            try:
                ipr.link("add", ifname=name, kind="wireguard")
            except NetlinkError as exc:
                raise WireguardUnsupported(f"cannot create {name} (wireguard module?): {exc}") from exc
            found = ipr.link_lookup(ifname=name)
            log.info("wireguard.device_created", device=name, reason="WireGuard enabled")
        idx = int(found[0])
        ipr.link("set", index=idx, mtu=mtu, state="up")
        return idx


def _socket_in(netns: str | None) -> query.SocketFactory:
    return (lambda: run_in_netns(netns, route_socket)) if netns else route_socket


def device_exists(name: str = WG_DEVICE, *, netns: str | None = None) -> bool:
    return query.link_index(name, sock=_socket_in(netns)) is not None


def delete_device(name: str = WG_DEVICE, *, netns: str | None = None) -> bool:
    if not device_exists(name, netns=netns):
        return False  # the usual case (WireGuard never on): no pyroute2
    with open_iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        ipr.link("del", index=found[0])
    log.info("wireguard.device_deleted", device=name, reason="WireGuard disabled")
    return True


def write_private(path: str, text: str) -> None:
    """Write ``text`` (it holds the private key) to ``path``: 0600 from its first byte, in a 0700
    directory (created so, or an existing one tightened), whatever the umask (issue 12)."""
    directory = os.path.dirname(path)
    if directory:
        private_dir(directory)
    write_file(path, text, SECRET)


def sync_config(name: str, conf_path: str, conf_text: str, *, netns: str | None = None) -> None:
    """Make the device exactly ``conf_text`` (wg-quick-free syntax), peers added/removed as a diff."""
    write_private(conf_path, conf_text)
    _wg(["syncconf", name, conf_path], netns=netns)


# ---- routing table and rule ------------------------------------------------------------------
# ``family``: socket.AF_INET for wireguard.cali, AF_INET6 for wg-v6.cali (IPv6 rules and tables are
# the kernel's separate ones: table 1 of IPv6 is not table 1 of IPv4).
def ensure_rule(*, table: int, priority: int, fwmark: int, netns: str | None = None,
                family: int = socket.AF_INET) -> bool:
    """``not from all fwmark <m>/<m> lookup <table>`` at ``priority``; True when it was added."""
    with open_iproute(netns) as ipr:
        for rule in ipr.get_rules(family=family):
            if (rule.get_attr("FRA_PRIORITY") == priority and rule.get_attr("FRA_TABLE") == table
                    and rule.get_attr("FRA_FWMARK") == fwmark and rule["flags"] & FIB_RULE_INVERT):
                return False
        ipr.rule("add", family=family, table=table, priority=priority, fwmark=fwmark,
                 fwmask=fwmark, flags=FIB_RULE_INVERT)
    log.info("wireguard.rule_added", priority=priority, table=table, fwmark=hex(fwmark), family=_v(family),
             reason="unmarked traffic consults the WireGuard table")
    return True


def delete_rule(*, table: int, priority: int, netns: str | None = None, family: int = socket.AF_INET) -> bool:
    removed = False
    present = query.rules(family, sock=_socket_in(netns))
    if not any(r.priority == priority and r.table == table for r in present):
        return removed  # the usual case (WireGuard never on): one raw rule dump, no pyroute2
    with open_iproute(netns) as ipr:
        for rule in ipr.get_rules(family=family):
            if rule.get_attr("FRA_PRIORITY") == priority and rule.get_attr("FRA_TABLE") == table:
                ipr.rule("del", family=family, table=table, priority=priority,
                         fwmark=rule.get_attr("FRA_FWMARK"), fwmask=rule.get_attr("FRA_FWMASK"),
                         flags=rule["flags"])
                removed = True
    if removed:
        log.info("wireguard.rule_removed", priority=priority, table=table, family=_v(family),
                 reason="WireGuard disabled")
    return removed


def _v(family: int) -> str:
    return "ipv6" if family == socket.AF_INET6 else "ipv4"


def sync_table(
    routes: dict[str, str], *, device: str, table: int, netns: str | None = None, family: int = socket.AF_INET
) -> tuple[int, int]:
    """Table ``table`` holds exactly ``routes`` (cidr -> "dev" | "throw"); returns (written, removed).

    Written through the agent's one batched route writer (``felixpy.netlinkio.route_writer``): one dump,
    then every change in one send. A route the kernel refused raises DataplaneError naming it."""
    written = removed = 0
    if not routes and not _table_has_routes(table, netns, family):
        return written, removed  # the usual case (WireGuard off): one header-only dump, nothing else
    v6 = family == socket.AF_INET6
    writer = RouteWriter(run_in_netns(netns, route_socket) if netns else route_socket())
    try:
        listed = writer.list_routes(protocol=None, table=table)
        have = {r.dst: r for r, _kind in listed if (":" in r.dst) == v6}
        want = {
            dst: Route(dst, () if kind == "throw" else (Hop(dev=device),), RTPROT_FELIXPY, table,
                       throw=kind == "throw")
            for dst, kind in routes.items()
        }
        replace = [r for dst, r in sorted(want.items()) if not _same(have.get(dst), r)]
        delete = [r for dst, r in sorted(have.items()) if dst not in want]
        failures = writer.apply(delete=delete, replace=replace)
    finally:
        writer.close()
    failed = {route.dst for route, _code in failures}
    for route in replace:
        if route.dst not in failed:
            kind = "throw" if route.throw else "dev"
            log.info("wireguard.route_set", dst=route.dst, table=table, kind=kind,
                     reason="not a WireGuard peer" if route.throw else "peer's allowed CIDR")
            written += 1
    for route in delete:
        if route.dst not in failed:
            log.info("wireguard.route_removed", dst=route.dst, table=table, reason="no longer wanted")
            removed += 1
    if failures:
        detail = ", ".join(f"{route.dst}: {os.strerror(code)}" for route, code in failures)
        raise DataplaneError(f"WireGuard table {table}: routes not written: {detail}")
    return written, removed


def _same(have: Route | None, want: Route) -> bool:
    """Whether the route in the table already is the wanted one (its kind, and its device)."""
    if have is None or have.throw != want.throw or have.blackhole:
        return False
    return want.throw or [h.dev for h in have.hops] == [h.dev for h in want.hops]


def _table_has_routes(table: int, netns: str | None, family: int = socket.AF_INET) -> bool:
    """Whether table ``table`` of ``family`` holds any route: one raw dump, each route's header read
    only (pyroute2 decodes every route of every table, 10,000 BGP routes included, to filter by table)."""
    compat = 252  # RT_TABLE_COMPAT: the header's table field when the table id is >= 256
    sock = run_in_netns(netns, route_socket) if netns else route_socket()
    with sock:
        sock.settimeout(10.0)
        sock.sendall(nl.pack_dump(nl.AF_INET6 if family == socket.AF_INET6 else nl.AF_INET, seq=1))
        while True:
            for kind, seq, payload in nl.messages(sock.recv(1 << 20)):
                if seq != 1:
                    continue
                if kind == nl.NLMSG_DONE:
                    return False
                if kind == nl.NLMSG_ERROR:
                    code = nl.error_code(payload)
                    raise DataplaneError(f"dumping routes of table {table}: {os.strerror(code)}")
                if (table < 256 and payload[4] != table) or (table >= 256 and payload[4] != compat):
                    continue
                if nl.route_matches(payload, protocol=None, table=table):
                    return True


def probe_device(netns: str, run_dir: str = "/run/felixpy-probe") -> None:
    """Make a WireGuard device and key it as the agent does (the kernel feature probe)."""
    from pyroute2.netlink.exceptions import NetlinkError

    name = "wgprobe0"
    try:
        ensure_device(name, mtu=1420, netns=netns)
        key = genkey()
        conf = os.path.join(run_dir, f"{netns}.conf")
        try:
            sync_config(name, conf, f"[Interface]\nPrivateKey = {key}\nListenPort = {WG_PORT}\n", netns=netns)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(conf)
        if read_device(name, netns=netns).public_key != pubkey(key):
            raise WireguardUnsupported("the device did not take its key")
    except CommandFailed as exc:
        raise WireguardUnsupported(str(exc)) from exc
    finally:
        with contextlib.suppress(DataplaneError, NetlinkError, NetlinkFailure):  # (the raw lookup's)
            delete_device(name, netns=netns)
