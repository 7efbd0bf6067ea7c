"""The BGP decision engine: ExaBGP events + desired config in, commands and kernel routes out.

Single-threaded by contract (the service's loop is its only caller). Processes are elsewhere:
commands leave through ``send`` and kernel writes through the ``Fib``'s ``RouteOps``, so unit
tests drive it with a list and an in-memory route table.

Restart protocol (ExaBGP runs with ``manual-eor``): on the bridge's hello every session of
the new ExaBGP is unknown; learned routes are kept as stale; we re-announce everything and,
each time a session reaches ``up``, send End-of-RIB after our routes. A peer's stale routes
go when it sends End-of-RIB or its graceful-restart time runs out.

Agent restart: the kernel routes the previous run left are adopted (``Fib``) and kept until
every configured session has re-sent its table since this start - its End-of-RIB; for a peer
that offered no graceful restart (End-of-RIB optional), its session up and ``ADOPT_QUIET``
seconds without an UPDATE - or ``ADOPT_TIMEOUT`` passed (a peer that never comes back). Only
then do the adopted routes nobody announced again leave the kernel. A session merely ``up``
is not enough: its UPDATEs may still be on the way, and removing a route about to be learned
again would drop the established flows through it.

Graceful restart (RFC 4724) keeps a peer's routes only when its session ended without a
NOTIFICATION: ExaBGP's ``down`` reason then says ``notification received (c,s)`` or
``notification sent (c,s)``, and the routes go at once. Receive limits (``maxPrefixes``, counted
on what the session sent, BIRD's ``receive limit``): Warn logs once per crossing; Block refuses
new prefixes past the limit; Restart drops the peer's routes and closes the session
(``teardown 1``, Cease "maximum number of prefixes reached"; ExaBGP reconnects with its backoff);
Disable does the same and keeps the session out of ExaBGP's configuration (``disabled``) until
its peer definition changes or the agent restarts. Refusals are counted in ``counters``
(``bgp.metrics`` exports them) and logged once per UPDATE with their reasons.

Wire mode (route reflectors, ``wire=True``): ExaBGP runs ``bgp.exabgp_wire`` and tells us what
each session negotiated. An iBGP session that agreed on 4-byte AS numbers without ADD-PATH
gets raw UPDATE messages we encode, and ExaBGP keeps no Adj-RIB-Out for it — so nothing is
sent to such a peer until its session is ``up`` (then everything, then End-of-RIB), and every
new session gets the whole table again. A session that cannot do wire falls back to text.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import itemgetter, not_
from typing import TypeVar

from bgp import command_errors, limits, peer_filters
from bgp import exabgp_api as api
from bgp.advertiser import Advertiser, filter_advert, outbound
from bgp.bfd_gate import BfdGate, Failure
from bgp.fib import Fib, Resolver
from bgp.filters import (
    ImportPolicy,
    PoolInfo,
    announcers,
    attrs_reason,
    import_reason,
    pool_index,
    prefix_reasons,
    reason_kind,
)
from bgp.reflect import LocalInfo
from bgp.rib import Rib
from bgp.route import PathAttrs, PeerInfo, Route, family_of, normalize_prefix
from bgp.status import PeerStatus, peer_status
from bgp.topology import PeerSpec

log = logging.getLogger(__name__)
# Routes a previous run left in the kernel are adopted until every configured session has re-sent
# its table since this start (End-of-RIB), or at most this long (a peer that never comes back)
ADOPT_TIMEOUT = 120.0
# a peer that offered no graceful restart need not send End-of-RIB: its table counts as re-sent
# once its session has been up, and has brought no UPDATE, for this long
ADOPT_QUIET = 3.0
ADOPT_POLL = 0.5  # how often, while adopting, tick looks whether every peer re-sent its table
INTERNED_MAX = 10_000  # distinct attribute sets kept for interning (then start over)
CEASE_MAX_PREFIXES = 1  # RFC 4486 Cease subcode: maximum number of prefixes reached
CEASE_ADMIN_RESET = 4  # RFC 4486 Cease subcode: administrative reset (a BFD failure)
LOG_EXAMPLES = 5  # refused prefixes named in a refusal log line
COMMAND_RESENDS = 5  # re-sends per session a minute after ExaBGP answered error
# refusals that protect this node (logged as warnings); the others (outside the pools, BGPFilter
# rules, loops) are ordinary and logged at debug level
PROTECTIVE = frozenset(
    {
        "local workload",
        "covers local workload",
        "own block",
        "covers own block",
        "inside own block",
        "covers IP pool",
        "longer than block size",
        "borrowed by another node",
        "AS path too long",
        "max prefixes",
        "service IP range",
    }
)
_Interned = TypeVar("_Interned", PathAttrs, PeerInfo)
_V4, _V6 = family_of("0.0.0.0"), family_of("::")


@dataclass(frozen=True, slots=True)
class Desired:
    """Everything the engine needs from the datastore, already computed (see service.update)."""

    peers: tuple[PeerSpec, ...]
    local: LocalInfo
    import_policy: ImportPolicy
    pools: tuple[PoolInfo, ...]
    exports: dict[str, PathAttrs] = field(default_factory=dict)
    resolver: Resolver = field(default_factory=Resolver)
    ecmp: bool = False


@dataclass
class _Session:
    state: str = ""
    since: float = 0.0
    reason: str = ""
    router_id: str = ""
    gr_time: int | None = None
    stale_until: float | None = None
    local: str = ""  # our address on the session (next hop self in wire mode)
    wire_ok: bool = False  # this session negotiated what wire mode needs (Negotiated event)
    wire: bool | None = None  # decided when the session comes up; None = not (yet) up
    over_limit: bool = False  # received more than maxPrefixes (logged once per crossing)
    torn_down: bool = False  # we closed it (receive limit): ignore what it still sends
    hold_time: int = 0  # the peer's OPEN offer
    capabilities: tuple[str, ...] = ()  # the peer's OPEN
    established: int = 0  # times the session reached up
    up_at: float = 0.0  # monotonic time the session last reached up
    update_at: float = 0.0  # monotonic time of the last UPDATE it brought
    # graceful restart: what the peer had sent when it went down and has not sent again since
    # (what End-of-RIB or the restart time then removes from what it sent, not only from the RIB)
    stale_raw: set[str] | None = None


_Singles = dict[str, tuple[str, PathAttrs] | None]  # prefix -> advert (None: not to this peer)
_Group = tuple[tuple[str, PathAttrs] | None, list[str]]  # one advert for many prefixes


@dataclass
class _Classes:
    """A set of prefixes sorted by what their adverts depend on (``Engine._classify``)."""

    none: list[str] = field(default_factory=list)  # never advertised (outside exportable pools)
    gone: list[str] = field(default_factory=list)  # no best path and not ours: withdrawn from every peer
    each: list[tuple[str, tuple[Route, ...]]] = field(default_factory=list)  # ours, or no best path
    groups: dict[tuple[int, str, int, str], tuple[tuple[Route, ...], list[str]]] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        send: Callable[[list[str]], None],
        fib: Fib | None,
        *,
        now: float = 0.0,
        wall: Callable[[], float] = time.time,
        wire: bool = False,
        interface_of: Callable[[str], str] | None = None,
    ) -> None:
        self._send = send
        # the interface a next hop is reached over (BGPFilter interface rules); None: unknown
        self.interface_of = interface_of
        self._wire_enabled = wire
        self._wall = wall
        self.fib = fib
        self.rib = Rib(self._best_changed, on_changes=self._bests_changed)
        self.adv = Advertiser()
        self.desired: Desired | None = None
        self._specs: dict[str, PeerSpec] = {}
        self.sessions: dict[str, _Session] = {}
        self._raw: dict[str, dict[str, Route]] = {}
        # prefixes whose adverts may have changed, in the order they changed (a dict as an ordered
        # set): a withdrawn table comes out in the order it went in, with no sort of 10,000 texts
        self._dirty: dict[str, None] = {}
        self._interned: dict[object, object] = {}
        self._hello = False
        self._exa_known: set[str] = set()  # sessions the running ExaBGP has in its config
        self._adopt_until = now + ADOPT_TIMEOUT
        self._resent: set[str] = set()  # sessions that sent End-of-RIB since this start (adoption)
        self.status_changed = True
        # only the route counts in the status changed (UPDATEs): written a little later, once
        # per burst rather than once per batch of ExaBGP lines (bgp.service)
        self.routes_changed = False
        # ("refused", peer, reason kind) routes; ("max_prefixes", peer, action) crossings;
        # ("notification_down", peer) sessions whose routes went at once
        self.counters: Counter[tuple[str, ...]] = Counter()
        self.disabled: set[str] = set()  # sessions shut by a Disable receive limit
        # peer -> prefix -> why the route it sent is refused (what it sent and we keep out)
        self.rejected: dict[str, dict[str, str]] = {}
        self.disabled_changed = False
        self.bfd_gate = BfdGate()  # BFD failures, held routes, flap damping (issue 19)
        self._resends: dict[str, list[float]] = {}  # peer -> when refused commands were re-sent

    # --- configuration -------------------------------------------------------------------
    def configure(self, desired: Desired) -> None:
        old = self.desired
        self.desired = desired
        old_specs, self._specs = self._specs, {p.address: p for p in desired.peers}
        for address in list(self.disabled):
            if old_specs.get(address) != self._specs.get(address):  # redefined or gone: enabled again
                self.disabled.discard(address)
                self.disabled_changed = True
                if address in self.sessions:
                    self.sessions[address].torn_down = False
                log.info("bgp peer %s enabled again (its definition changed)", address)
        self.rib.set_ecmp(desired.ecmp)
        current = {p.address for p in desired.peers}
        for gone in set(self.sessions) - current:
            self._forget_peer(gone)
        for peer in current - set(self.sessions):
            self.sessions[peer] = _Session()
        released = self.bfd_gate.configure({p.address: p.bfd.hold_down for p in desired.peers if p.bfd})
        if old is None or old.import_policy != desired.import_policy or _peers_changed(old, desired):
            self._refilter()
        for address in released:
            self._bfd_release(address, "BFD no longer configured")
        if self.fib is not None and (old is None or old.resolver != desired.resolver):
            self.fib.resolver = desired.resolver
            for prefix, best in self.rib.best_routes():
                self.fib.stage(prefix, best)
        full = (
            old is None
            or old.local != desired.local
            or old.pools != desired.pools
            or _peers_changed(old, desired)
        )
        self._dirty.update(dict.fromkeys(desired.exports))
        if old is not None:
            self._dirty.update(dict.fromkeys(old.exports))
        self.status_changed = True
        self.flush(full=full)

    def _forget_peer(self, address: str) -> None:
        self.sessions.pop(address, None)
        self._exa_known.discard(address)
        self._raw.pop(address, None)
        self.rejected.pop(address, None)
        self.rib.drop_peer(address)
        self.adv.forget(address)

    def _refilter(self) -> None:
        for peer, routes in self._raw.items():
            spec = self._specs.get(peer)
            if spec is None or self.bfd_gate.holds(peer):
                continue
            for route in routes.values():
                reason, kept = self._reason(spec, route)
                self._import(peer, kept, reason)

    def _facts(self, spec: PeerSpec, route: Route) -> peer_filters.RouteFacts:
        lookup = self.interface_of
        return peer_filters.facts_of(
            route.attrs,
            learned=True,
            ebgp=spec.ebgp,
            version=6 if ":" in route.prefix else 4,
            interface=None if lookup is None else functools.partial(lookup, route.next_hop),
        )

    def _filtered(self, spec: PeerSpec, route: Route) -> tuple[str | None, Route]:
        """The session's BGPFilter import rules on a route felixpy's checks accepted: (why they
        refuse it or None, the route after the deciding Accept rule's operations)."""
        reason, attrs = peer_filters.import_decision(
            spec.route_filter, route.prefix, route.attrs, self._facts(spec, route)
        )
        if attrs is not route.attrs:
            route = Route(route.prefix, route.next_hop, self._intern(attrs), route.source, route.stale)
        return reason, route

    def _reason(self, spec: PeerSpec, route: Route) -> tuple[str | None, Route]:
        """Why a route from ``spec``'s session is refused: felixpy's checks, then the session's
        BGPFilter import rules (which can refuse more, never accept what the checks refused);
        and the route as stored (after the rules' operations)."""
        assert self.desired is not None
        policy = self.desired.import_policy
        reason = import_reason(
            route,
            policy,
            local_as=spec.local_as,
            allow_local_as=spec.allow_local_as,
            max_as_path=spec.max_as_path,
            peer_node=spec.peer_node,
        )
        if reason is not None or spec.route_filter is None:
            return reason, route
        return self._filtered(spec, route)

    # --- events --------------------------------------------------------------------------
    def handle(self, event: api.Event, now: float) -> None:
        if isinstance(event, api.BridgeNote):
            self._on_hello(event, now)
        elif isinstance(event, api.StateChange):
            self._on_state(event, now)
        elif isinstance(event, api.Open):
            session = self.sessions.get(event.peer)
            if session is not None:
                session.router_id, session.gr_time = event.router_id, event.graceful_restart_time
                session.hold_time, session.capabilities = event.hold_time, event.capabilities
        elif isinstance(event, api.Negotiated):
            session = self.sessions.get(event.peer)
            if session is not None:
                session.wire_ok = event.asn4 and not event.add_path
        elif isinstance(event, api.Update):
            session = self.sessions.get(event.peer)
            if session is not None:
                session.update_at = now
            self._on_update(event)
        elif isinstance(event, api.EndOfRib):
            self._on_eor(event.peer)
        elif isinstance(event, api.RouteRefresh):
            session = self.sessions.get(event.peer)
            if session is not None and session.wire and self.desired is not None:
                log.info("bgp route refresh from %s: resending the whole table", event.peer)
                self._announce_all(event.peer, resend=True)
        elif isinstance(event, api.CommandFailed):
            self._on_command_failed(event.command, now)
        elif isinstance(event, api.Other) and event.text == "wire-error":
            # RFC 7606 would treat it as a withdraw; we cannot know its prefixes, so we keep what we have
            log.error(
                "bgp UPDATE from %s could not be decoded: %s", event.data.get("peer"), event.data.get("error")
            )

    def _on_command_failed(self, command: str, now: float) -> None:
        """ExaBGP refused a command: what it holds for the routes it named is unknown. Re-send,
        for those routes only, what is wanted now (a newer command for one of them is never
        undone), at most ``COMMAND_RESENDS`` times per session a minute."""
        failed = command_errors.classify(command)
        for peer in failed.peers:
            self.counters[("command_error", peer)] += 1
        if failed.kind not in ("routes", "eor") or self.desired is None or not self._hello:
            log.warning("bgp: exabgp answered error to %r: nothing to re-send", command[:160])
            return
        redo: list[str] = []
        for peer in failed.peers:
            if peer not in self._exa_known or peer not in self._specs:
                continue
            recent = [t for t in self._resends.get(peer, []) if now - t < 60.0]
            if len(recent) >= COMMAND_RESENDS:
                log.error("bgp peer %s: exabgp keeps refusing commands; not re-sent: %.160s", peer, command)
                continue
            self._resends[peer] = [*recent, now]
            redo.append(peer)
            if failed.kind == "eor":
                self._send([api.eor_command(peer, failed.family)])
            else:
                self._dirty.update(dict.fromkeys(self.adv.mark_uncertain(peer, failed.prefixes)))
        if redo:
            what = "every route" if failed.prefixes is None else f"{len(failed.prefixes or ())} prefixes"
            log.warning(
                "bgp: exabgp answered error to a %s command for %s (%s): re-sending what is wanted now",
                failed.kind,
                ", ".join(redo),
                failed.family or what,
            )
            self.flush()

    def _on_hello(self, note: api.BridgeNote, now: float) -> None:
        log.info("bgp bridge connected (dropped=%d): re-announcing everything", note.dropped)
        self._hello = True
        self._exa_known = set(self.sessions)
        self.adv.forget_all()
        for address, session in self.sessions.items():
            if session.state == "up":
                self._go_stale(address, session, now)
            session.state, session.since = "", self._wall()
            session.wire, session.wire_ok = None, False
        self.status_changed = True
        self.flush(full=True)

    def _on_state(self, event: api.StateChange, now: float) -> None:
        session = self.sessions.get(event.peer)
        if session is None:
            return
        was = session.state
        session.state, session.since, session.reason = event.state, self._wall(), event.reason
        self.status_changed = True
        if event.state == "up" and event.peer in self.disabled:
            # ExaBGP defers the reload that drops it while any session has routes queued: until
            # then every reconnection is closed again at once, before anything is exchanged
            self._send([api.teardown_command(event.peer, CEASE_MAX_PREFIXES)])
            log.info("bgp peer %s reconnected while disabled (receive limit): closed again", event.peer)
            return
        if event.state == "up":
            session.established += 1
            session.up_at = now
            session.local = event.local or session.local
            session.wire = session.wire_ok
            session.torn_down = session.over_limit = False
        else:
            session.wire, session.wire_ok = None, False
        if event.peer not in self._exa_known and self.desired is not None and self._hello:
            self._exa_known.add(event.peer)
            self._announce_all(event.peer)
        if event.state == "up" and self.desired is not None and self._hello:
            spec = self._peer(event.peer)
            if self._wire_candidate(spec):
                # a new session: ExaBGP has none of our routes for it (wire) or we held them back
                self._announce_all(event.peer, resend=bool(session.wire))
            self._send([api.eor_command(event.peer, f) for f in spec.families])
        elif event.state == "down" and was == "up":
            notified = "notification received" in event.reason or "notification sent" in event.reason
            if notified:
                self.counters[("notification_down", event.peer)] += 1
            closed_by_us = session.torn_down or event.peer in self.disabled
            self._go_stale(event.peer, session, now, graceful=not notified and not closed_by_us)

    def _go_stale(self, address: str, session: _Session, now: float, *, graceful: bool = True) -> None:
        if not graceful:
            count = len(self._raw.pop(address, {}))
            self.rejected.pop(address, None)
            self.rib.drop_peer(address)
            session.stale_until, session.stale_raw = None, None
            log.info(
                "bgp peer %s down (%s): %d routes removed at once (no graceful restart after a NOTIFICATION)",
                address,
                session.reason or "closed by us",
                count,
            )
        elif session.gr_time:
            session.stale_raw = set(self._raw.get(address, {}))
            count = self.rib.mark_stale(address)
            session.stale_until = now + session.gr_time
            log.info("bgp peer %s down: keeping %d routes stale for %ss", address, count, session.gr_time)
        else:
            self._raw.pop(address, None)
            self.rejected.pop(address, None)
            self.rib.drop_peer(address)

    def _on_update(self, update: api.Update) -> None:
        session = self.sessions.get(update.peer)
        if session is None or self.desired is None or session.torn_down:
            return
        spec = self._peer(update.peer)
        source = self._intern(
            PeerInfo(update.peer, session.router_id, spec.peer_as, spec.local_as, spec.rr_client)
        )
        raw = self._raw.setdefault(update.peer, {})
        rejected = self.rejected.setdefault(update.peer, {})
        self.routes_changed = True  # route counts only: the status file may wait (service)
        norm = _as_is if update.canonical else normalize_prefix
        if update.withdraw:
            gone = update.withdraw if update.canonical else [norm(p) for p in update.withdraw]
            deque(map(raw.pop, gone, repeat(None)), maxlen=0)
            if rejected:
                for prefix in gone:
                    rejected.pop(prefix, None)
            if session.stale_raw:
                session.stale_raw.difference_update(gone)
            self.rib.withdraw_many(update.peer, gone)
        policy = self.desired.import_policy
        # the same for every prefix of the update (one update comes from one session)
        loop = attrs_reason(
            update.attrs,
            policy,
            local_as=spec.local_as,
            allow_local_as=spec.allow_local_as,
            max_as_path=spec.max_as_path,
        )
        rules = spec.route_filter
        attrs = self._intern(update.attrs)
        by_hop: dict[str, list[str]] = {}
        for item in update.announce:
            by_hop.setdefault(item.next_hop, []).append(norm(item.prefix))
        groups = list(by_hop.items())
        for next_hop, group in update.nlri:
            groups.append((next_hop, list(group if update.canonical else map(norm, group))))
        refused: Counter[str] = Counter()
        examples: list[str] = []
        kept = self._limit(spec, session, raw, groups, refused)
        if kept is None:
            return
        accepted: list[Route] = []
        stale = session.stale_raw
        for next_hop, prefixes in kept:
            if stale:
                stale.difference_update(prefixes)
            routes = list(map(Route, prefixes, repeat(next_hop), repeat(attrs), repeat(source)))
            raw.update(zip(prefixes, routes, strict=True))
            if loop is not None:
                reasons: list[str | None] = [loop] * len(routes)
            else:
                who = announcers(
                    policy, peer_node=spec.peer_node, originator_id=attrs.originator_id, next_hop=next_hop
                )
                reasons = prefix_reasons(prefixes, policy, announcers=who)
            if rules is None and not any(reasons):  # all accepted (reasons are non-empty text)
                accepted += routes
                if rejected:
                    for prefix in prefixes:
                        rejected.pop(prefix, None)
                continue
            for route, reason in zip(routes, reasons, strict=True):
                if reason is None and rules is not None:
                    reason, route = self._filtered(spec, route)
                if reason is None:
                    accepted.append(route)
                    if rejected:
                        rejected.pop(route.prefix, None)
                    continue
                rejected[route.prefix] = reason
                self.rib.withdraw(update.peer, route.prefix)
                refused[reason_kind(reason)] += 1
                if len(examples) < LOG_EXAMPLES:
                    examples.append(f"{route.prefix} ({reason})")
        self.rib.update_many(update.peer, [] if self.bfd_gate.holds(update.peer) else accepted)
        if refused:
            self._refused(update.peer, refused, examples)

    def _refused(self, peer: str, refused: Counter[str], examples: list[str]) -> None:
        for kind, count in refused.items():
            self.counters[("refused", peer, kind)] += count
        level = logging.WARNING if PROTECTIVE.intersection(refused) else logging.DEBUG
        if log.isEnabledFor(level):
            counts = ", ".join(f"{kind}: {count}" for kind, count in sorted(refused.items()))
            log.log(level, "bgp routes from %s refused (%s), e.g. %s", peer, counts, "; ".join(examples))

    def _limit(
        self,
        spec: PeerSpec,
        session: _Session,
        raw: dict[str, Route],
        groups: limits.Groups,
        refused: Counter[str],
    ) -> limits.Groups | None:
        """Apply the session's receive limit to an UPDATE's announced prefixes (``groups``): what
        may go on, or None when the session was torn down (Restart, Disable)."""
        verdict = limits.check(spec.max_prefixes, spec.max_prefixes_action, raw, len(raw), groups)
        if verdict.over and not session.over_limit:
            self.counters[("max_prefixes", spec.address, spec.max_prefixes_action)] += 1
            log.warning(
                "bgp peer %s sent more than its limit of %d prefixes (%d): action %s",
                spec.address,
                spec.max_prefixes,
                verdict.total,
                spec.max_prefixes_action,
            )
        session.over_limit = verdict.over
        if verdict.blocked:
            refused["max prefixes"] += verdict.blocked
        if verdict.keep is None:
            self._tear_down(spec, session, disable=spec.max_prefixes_action == "Disable")
        return verdict.keep

    def _tear_down(self, spec: PeerSpec, session: _Session, *, disable: bool) -> None:
        """Close a session that broke its receive limit: its routes go now, never stale."""
        count = len(self._raw.pop(spec.address, {}))
        self.rejected.pop(spec.address, None)
        self.rib.drop_peer(spec.address)
        session.torn_down, session.stale_until = True, None
        self.status_changed = True
        self._send([api.teardown_command(spec.address, CEASE_MAX_PREFIXES)])
        if disable:
            self.disabled.add(spec.address)
            self.disabled_changed = True
        log.warning(
            "bgp peer %s: session closed for its receive limit (%s), %d routes removed%s",
            spec.address,
            spec.max_prefixes_action,
            count,
            "; disabled until its BGPPeer changes or the agent restarts" if disable else "",
        )

    def _intern(self, value: _Interned) -> _Interned:
        """One object for equal attributes (and sources): a table arrives as many UPDATEs with
        the same attributes, and ``_classify`` groups routes by the identity of these objects."""
        found = self._interned.get(value)
        if found is None:
            if len(self._interned) >= INTERNED_MAX:
                self._interned.clear()
            found = self._interned[value] = value
        return found  # type: ignore[return-value]

    def _import(self, peer: str, route: Route, reason: str | None) -> None:
        """Re-filter one route already received (``_refilter``): refusals are not counted again."""
        rejected = self.rejected.setdefault(peer, {})
        if reason is None:
            rejected.pop(route.prefix, None)
            self.rib.update(route)
        else:
            rejected[route.prefix] = reason
            log.debug("bgp route %s from %s refused: %s", route.prefix, peer, reason)
            self.rib.withdraw(peer, route.prefix)

    def _on_eor(self, peer: str) -> None:
        session = self.sessions.get(peer)
        if session is not None:
            session.stale_until = None
            self._forget_stale(peer, session)
            if self._adopt_until:
                self._resent.add(peer)
        swept = self.rib.sweep_stale(peer)
        log.info("bgp End-of-RIB from %s (%d stale routes removed)", peer, swept)

    def _forget_stale(self, peer: str, session: _Session) -> None:
        """What the peer did not send again after a graceful restart is gone from what it sent
        too: nothing a later re-filter could bring back, nothing ``node routes`` still lists."""
        stale, session.stale_raw = session.stale_raw, None
        raw, rejected = self._raw.get(peer, {}), self.rejected.get(peer, {})
        for prefix in stale or ():
            raw.pop(prefix, None)
            rejected.pop(prefix, None)
        if stale:
            self.status_changed = True

    # --- BFD (issue 19; bgp.bfd_gate decides) ---------------------------------------------
    def bfd_message(self, doc: dict[str, object], now: float) -> None:
        """A message from the BFD daemon: a failure takes the peer's routes out of the kernel now."""
        for failure in self.bfd_gate.handle(doc, now):
            self._bfd_failed(failure)
        if self.bfd_gate.changed:
            self.bfd_gate.changed = False
            self.status_changed = True

    def _bfd_failed(self, failure: Failure) -> None:
        """RFC 5882 §4.3: forwarding to the peer is gone, so no graceful restart for its routes -
        unless a restart is already under way and the peer's BFD shares fate with its control
        plane (C bit clear): then its Down is likely a side effect and the stale routes stay."""
        address = failure.peer
        session = self.sessions.get(address)
        if session is None:
            return
        self.counters[("bfd_down", address)] += 1
        restarting = session.state != "up" and session.stale_until is not None
        if restarting and not failure.remote_cpi:
            log.warning(
                "bgp peer %s: %s during its graceful restart, C bit clear: stale routes kept",
                address,
                failure.reason,
            )
            return
        count = len(self._raw.pop(address, {}))
        self.rejected.pop(address, None)
        self.rib.drop_peer(address)
        session.stale_until = None
        if session.state == "up":
            session.torn_down = True
            self._send([api.teardown_command(address, CEASE_ADMIN_RESET)])
        log.warning(
            "bgp peer %s: %s: %d routes removed at once, session %s; routes held until BFD is Up "
            "and the hold-down passed",
            address,
            failure.reason,
            count,
            "closed" if session.state == "up" else "was not established",
        )

    def _bfd_release(self, address: str, why: str) -> None:
        spec = self._specs.get(address)
        routes = list(self._raw.get(address, {}).values())
        if spec is not None:
            for route in routes:
                reason, kept = self._reason(spec, route)
                self._import(address, kept, reason)
        log.info("bgp peer %s: %s: %d received routes back in use", address, why, len(routes))
        self.status_changed = True

    # --- time ----------------------------------------------------------------------------
    def next_due(self, now: float) -> float | None:
        """When ``tick`` next has something to do (monotonic), None when nothing is timed: a
        graceful-restart time running out, a BFD hold-down passing; while routes of a previous
        run are kept, every ADOPT_POLL seconds (whether every peer re-sent its table)."""
        times = [s.stale_until for s in self.sessions.values() if s.stale_until is not None]
        times += self.bfd_gate.hold_ends()
        if self.fib is not None and self._adopt_until:
            times.append(min(self._adopt_until, now + ADOPT_POLL))
        return min(times) if times else None

    def tick(self, now: float) -> None:
        for address, session in self.sessions.items():
            if session.stale_until is not None and now >= session.stale_until:
                session.stale_until = None
                log.info("bgp graceful restart time for %s expired", address)
                self._forget_stale(address, session)
                self.rib.sweep_stale(address)
        for address in self.bfd_gate.due(now):
            self._bfd_release(address, "BFD Up and hold-down passed")
        if self.fib is not None and self._adopt_until:
            timed_out = now >= self._adopt_until
            if timed_out or self._tables_resent(now):
                self._adopt_until = 0.0
                waiting = sorted(a for a, s in self.sessions.items() if not self._resent_by(a, s, now))
                self._resent.clear()
                released = self.fib.release_adopted()
                log.info(
                    "bgp routes left by the previous run: %d nobody re-announced removed (%s)",
                    released,
                    f"adoption timed out; no table from {', '.join(waiting)}"
                    if timed_out and waiting
                    else "every peer re-sent its table",
                )

    @property
    def adopting(self) -> bool:
        """Whether routes a previous run left in the kernel are still kept (see ``tick``)."""
        return bool(self._adopt_until) and self.fib is not None

    def _tables_resent(self, now: float) -> bool:
        """Whether every configured session re-sent its table since this start: only then is a
        route left by the previous run and not learned again really gone (``Fib.release_adopted``).
        A session being up is not enough - its UPDATEs and End-of-RIB may still be on the way."""
        return (
            self.desired is not None
            and bool(self.sessions)
            and all(self._resent_by(address, s, now) for address, s in self.sessions.items())
        )

    def _resent_by(self, address: str, session: _Session, now: float) -> bool:
        if address in self._resent or address in self.disabled:  # disabled: nothing will come
            return True
        # no graceful restart offered: End-of-RIB is optional (RFC 4724 makes it a GR duty), so
        # up and quiet for ADOPT_QUIET stands for it; a peer that offered GR must send it
        return (
            session.state == "up"
            and session.gr_time is None
            and now - max(session.up_at, session.update_at) >= ADOPT_QUIET
        )

    # --- output --------------------------------------------------------------------------
    def _best_changed(self, prefix: str, best: tuple[Route, ...]) -> None:
        self._dirty[prefix] = None
        if self.fib is not None:
            self.fib.stage(prefix, best)

    def _bests_changed(self, changes: list[tuple[str, tuple[Route, ...]]]) -> None:
        self._dirty.update(dict.fromkeys(map(itemgetter(0), changes)))
        if self.fib is not None:
            for prefix, best in changes:
                self.fib.stage(prefix, best)

    def _peer(self, address: str) -> PeerSpec:
        return self._specs[address]

    def _to_peer(self, spec: PeerSpec) -> PeerInfo:
        session = self.sessions.get(spec.address)
        return PeerInfo(
            spec.address, session.router_id if session else "", spec.peer_as, spec.local_as, spec.rr_client
        )

    def _classify(self, prefixes: Iterable[str]) -> _Classes:
        """What does not depend on the peer, once per set of prefixes (see ``_adverts``).

        The prefixes keep the order they are given in (``gone`` is sent in that order); the
        common case, none of them ours, is sorted into gone and learned in C."""
        assert self.desired is not None
        d = self.desired
        classes = _Classes()
        best_of, exports, each = self.rib.best_map(), d.exports, classes.each
        order = list(prefixes)
        bests = list(map(best_of.get, order))
        gone = classes.gone
        if not exports or exports.keys().isdisjoint(order):
            gone += compress(order, map(not_, bests))
            learned = list(compress(order, bests))
        else:
            learned = []
            for prefix, best in zip(order, bests, strict=True):
                if prefix in exports:
                    each.append((prefix, best or ()))
                elif not best:
                    gone.append(prefix)  # ``outbound`` says None for it towards every peer
                else:
                    learned.append(prefix)
        groups, none = classes.groups, classes.none
        if not self._all_learned_exportable(d):
            exportable = []
            for prefix, pool in zip(learned, pool_index(d.pools).lookup(learned), strict=True):
                if pool is None or pool.disable_bgp_export:
                    none.append(prefix)
                else:
                    exportable.append(prefix)
            learned = exportable
        # prefixes of one UPDATE share one attributes object, next hop and source: compare
        # identities with the previous prefix's before building a key
        last_attrs: object = None
        last_source: object = None
        last_hop, last_v6 = "", False
        members: list[str] = []
        for prefix in learned:
            best = best_of[prefix]
            route = best[0]
            v6 = ":" in prefix
            if (
                route.attrs is last_attrs
                and route.source is last_source
                and route.next_hop == last_hop
                and v6 == last_v6
            ):
                members.append(prefix)
                continue
            last_attrs, last_source, last_hop, last_v6 = route.attrs, route.source, route.next_hop, v6
            key = (id(last_attrs), last_hop, id(last_source), _V6 if v6 else _V4)
            group = groups.get(key)
            if group is None:
                group = groups[key] = (best, [])
            members = group[1]
            members.append(prefix)
        # members keep the order given (every peer gets the same lists: one encoding for all);
        # ``_everything`` sorts, a flush of dirty prefixes sends them in the order they changed
        return classes

    @staticmethod
    def _all_learned_exportable(d: Desired) -> bool:
        """Whether every route in the RIB may be passed on without checking its pool: import
        already refused everything outside the pools (the same pools), none of them disables
        export, and no default route can have been let in."""
        return (
            d.import_policy.pools == d.pools
            and not d.import_policy.import_default
            and not any(pool.disable_bgp_export for pool in d.pools)
        )

    def _adverts(self, spec: PeerSpec, classes: _Classes) -> tuple[_Singles, list[_Group]]:
        """``outbound`` for every classified prefix towards one peer.

        What ``outbound`` says about a learned route depends on its prefix only through the
        family and export checks; the rest (reflection) is the same for every route that shares
        next hop, attributes and source — thousands on a reflector. So it is asked once per such
        group, and the whole group gets the one answer (one shared object, which also lets
        ``Advertiser.plan`` batch without hashing). Returns single prefixes and whole groups.
        """
        assert self.desired is not None
        d = self.desired
        to_peer = self._to_peer(spec)
        out: _Singles = dict.fromkeys(classes.none)
        whole: list[_Group] = [(None, classes.gone)] if classes.gone else []
        for prefix, best in classes.each:
            out[prefix] = outbound(
                prefix,
                spec,
                to_peer,
                exports=d.exports,
                best=best,
                pools=d.pools,
                local=d.local,
                interface_of=self.interface_of,
            )
        rules = spec.route_filter if spec.route_filter is not None and spec.route_filter.exports else None
        for best, members in classes.groups.values():
            advert = outbound(
                members[0],
                spec,
                to_peer,
                exports=d.exports,
                best=best,
                pools=d.pools,
                local=d.local,
                is_exportable=True,
                filtered=False,
            )
            if advert is None or rules is None:
                whole.append((advert, members))
                continue
            route = best[0]
            for prefix in members:  # export rules depend on the prefix: each member on its own
                out[prefix] = filter_advert(
                    rules,
                    prefix,
                    spec,
                    route.attrs,
                    advert,
                    learned=True,
                    next_hop=route.next_hop,
                    interface_of=self.interface_of,
                )
        return out, whole

    def _wire_candidate(self, spec: PeerSpec) -> bool:
        return (
            self._wire_enabled
            and self.desired is not None
            and bool(self.desired.local.cluster_id)
            and not spec.ebgp
        )

    def _mode(self, spec: PeerSpec) -> str | None:
        """None: hold back (wire candidate not up); "" text commands; else wire, next hop self."""
        if not self._wire_candidate(spec):
            return ""
        session = self.sessions.get(spec.address)
        if session is None or session.state != "up" or session.wire is None:
            return None
        return session.local if session.wire and session.local else ""

    def _everything(self) -> _Classes:
        prefixes = set(self.desired.exports if self.desired else {}) | {p for p, _ in self.rib.best_routes()}
        return self._classify(sorted(prefixes))

    def _announce_all(
        self, address: str, *, resend: bool = False, everything: _Classes | None = None
    ) -> None:
        spec = self._peer(address)
        mode = self._mode(spec)
        if mode is None:
            return
        changes, groups = self._adverts(spec, self._everything() if everything is None else everything)
        self._send(
            self.adv.plan(
                spec,
                changes,
                full=True,
                resend=resend and bool(mode),
                wire_self=mode or None,
                groups=groups,
            )
        )

    def flush(self, *, full: bool = False) -> None:
        """Send outbound changes for dirty prefixes (or everything) to peers ExaBGP knows, then
        write the kernel routes: a route reflector installs what it reflects (as Calico's do), but
        its clients need not wait for thousands of netlink writes first."""
        self._flush_adverts(full)
        if self.fib is not None:
            self.fib.apply()

    def _flush_adverts(self, full: bool) -> None:
        if self.desired is None or not self._hello:
            return
        dirty, self._dirty = self._dirty, {}
        changed: _Classes | None = None
        everything: _Classes | None = None
        wired: list[tuple[str, list[str]]] = []  # wire sessions' commands, merged below
        for spec in self.desired.peers:
            if spec.address not in self._exa_known:
                continue
            mode = self._mode(spec)
            if mode is None:
                continue
            if full or not self.adv.known(spec.address):
                everything = everything or self._everything()
                self._announce_all(spec.address, everything=everything)
                continue
            changed = changed or self._classify(dirty)
            changes, groups = self._adverts(spec, changed)
            lines = self.adv.plan(spec, changes, wire_self=mode or None, groups=groups)
            if mode and lines:
                wired.append((spec.address, lines))
            elif lines:
                self._send(lines)
        if wired:
            self._send(api.merge_wire_commands(wired))

    def status(self) -> list[PeerStatus]:
        if self.desired is None:
            return []
        out = []
        for spec in self.desired.peers:
            s = self.sessions.get(spec.address, _Session())
            kind = spec.type + (" (RR client)" if spec.rr_client else "")
            disabled = spec.address in self.disabled
            received = len(self._raw.get(spec.address, {}))
            rejected = self.rejected.get(spec.address, {})
            status = peer_status(
                spec.address,
                kind=kind,
                name=spec.name,
                exa_state="down" if disabled else s.state,
                since=s.since,
                reason="disabled: receive limit (maxPrefixes) exceeded" if disabled else s.reason,
                routes=received,
            )
            out.append(
                replace(
                    status,
                    routes_accepted=received - len(rejected),
                    routes_rejected=dict(Counter(reason_kind(r) for r in rejected.values())),
                    routes_advertised=self.adv.count(spec.address),
                    established=s.established,
                    hold_time=s.hold_time,
                    capabilities=s.capabilities,
                    graceful_restart=_gr_state(spec, s, self._wall_now()),
                    peer_as=spec.peer_as,
                    local_as=spec.local_as,
                    router_id=s.router_id,
                )
            )
        return out

    def _wall_now(self) -> float:
        return self._wall()

    def routes_view(self, *, limit: int = 5000) -> dict[str, object]:
        """What ``felixctl node routes`` prints: per peer, what it sent (accepted or refused with
        the reason, and whether it is the best path), what we advertise to it; and what this node
        installed in the kernel. At most ``limit`` routes per list (``truncated`` says so)."""
        best = self.rib.best_map()
        peers: list[dict[str, object]] = []
        specs = self.desired.peers if self.desired is not None else ()
        for spec in specs:
            raw = self._raw.get(spec.address, {})
            rejected = self.rejected.get(spec.address, {})
            stale = self.sessions[spec.address].stale_raw or set() if spec.address in self.sessions else set()
            received = []
            for prefix in sorted(raw)[:limit]:
                route = raw[prefix]
                reason = rejected.get(prefix)
                winners = sorted({r.source.address or "this node" for r in best.get(prefix, ())})
                won = spec.address in winners
                received.append(
                    {
                        "prefix": prefix,
                        "nextHop": route.next_hop,
                        "asPath": list(route.attrs.as_path),
                        "communities": [*route.attrs.communities, *route.attrs.large_communities],
                        "status": "rejected" if reason else ("best" if won else "accepted"),
                        "reason": reason or "",
                        "bestFrom": [] if reason else winners,  # whose path won (accepted, not best)
                        "stale": prefix in stale,
                    }
                )
            sent = self.adv.sent(spec.address)
            advertised = [
                {
                    "prefix": prefix,
                    "nextHop": hop,
                    "asPath": list(attrs.as_path),
                    "communities": [*attrs.communities, *attrs.large_communities],
                }
                for prefix, (hop, attrs) in sorted(sent.items())[:limit]
            ]
            peers.append(
                {
                    "peer": spec.address,
                    "name": spec.name,
                    "received": received,
                    "advertised": advertised,
                    "truncated": len(raw) > limit or len(sent) > limit,
                }
            )
        kernel: list[dict[str, object]] = []
        if self.fib is not None:
            for dst, fib_route in sorted(self.fib.applied().items())[:limit]:
                hops = [h.gateway + (f" dev {h.dev}" if h.dev else "") for h in fib_route.hops]
                winners = sorted({r.source.address for r in best.get(dst, ())})
                # metric: None = the default BGP metric, else a BGPFilter setPriority's
                kernel.append({"prefix": dst, "via": hops, "from": winners, "metric": fib_route.metric})
        exports = sorted(self.desired.exports)[:limit] if self.desired is not None else []
        return {"peers": peers, "kernel": kernel, "exports": exports}


def _gr_state(spec: PeerSpec, session: _Session, now: float) -> str:
    """Graceful restart, as ``node status --detail`` says it."""
    if session.stale_until is not None:
        return f"peer restarting: its routes kept as stale (up to {session.gr_time}s)"
    if session.gr_time is None:
        return "not offered by the peer" if session.state == "up" else ""
    return f"negotiated: peer restart time {session.gr_time}s, ours {spec.graceful_restart_time}s"


def _as_is(prefix: str) -> str:
    return prefix


def _peers_changed(old: Desired, new: Desired) -> bool:
    return old.peers != new.peers
