"""IpsetWriter: the agent's ``cali40*``/``cali60*`` sets, written through ``ipset restore``.

A new set is created and filled directly. A set whose members changed gets only the members that
came and went (``del``/``add`` lines, Felix's deltas: a label change costs its own members, not the
whole set's); a set whose type or family changed is rebuilt atomically: a temp set
(``cali4t<n>``/``cali6t<n>``) is created and filled, ``swap``ped with the live one, then the temp
destroyed, so iptables rules referencing the set never see it half-filled. Sets no longer desired
are destroyed; do that after iptables stopped referencing them (``apply_updates``, then the
iptables writer, then ``apply_deletions``; ``apply`` does both). Sets of any other name are never
touched. ``resync`` re-reads ``ipset save``. Sets are per network namespace on current kernels.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.kernel_objects import IpSet
from felixpy.dataplane.prefetch import Prefetch, take
from felixpy.dataplane.tool_runner import run
from felixpy.dataplane.toolstats import ToolStats

log = structlog.get_logger(__name__)
OWNED_PREFIXES = ("cali40", "cali60")
TEMP_PREFIXES = ("cali4t", "cali6t")
MAX_NAME = 31
MAXELEM = 1048576


@dataclass(frozen=True, slots=True)
class KernelSet:
    name: str
    set_type: str
    family: str
    members: frozenset[str]


_DIGITS = frozenset("0123456789")


def _plain_v4_host(addr: str) -> str | None:
    """``a.b.c.d`` or ``a.b.c.d/32`` in canonical form (no leading zero, each part <= 255) as
    ``ipset save`` prints it, else None. The common member (every endpoint address): this
    answers it with string operations, without building an ip_network."""
    host = addr[:-3] if addr.endswith("/32") else addr
    parts = host.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not part or len(part) > 3 or not _DIGITS.issuperset(part) or (part[0] == "0" and len(part) > 1):
            return None
        if int(part) > 255:
            return None
    return host


@functools.lru_cache(maxsize=1 << 16)  # pure; called for a member when planned and again when written
def normalise_member(member: str) -> str:
    """As ``ipset save`` prints it: host nets without /32 (/128), v6 compressed, port part kept."""
    if "," not in member:
        plain = _plain_v4_host(member)
        if plain is not None:
            return plain
    addr, sep, rest = member.partition(",")
    net = ipaddress.ip_network(addr.strip(), strict=False)
    text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return text + sep + rest.strip()


def parse_save(text: str) -> dict[str, KernelSet]:
    """``ipset save`` -> our sets (and our temp sets) by name."""
    headers: dict[str, tuple[str, str]] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[1].startswith(OWNED_PREFIXES + TEMP_PREFIXES):
            continue
        if parts[0] == "create":
            family = parts[parts.index("family") + 1] if "family" in parts else "inet"
            headers[parts[1]] = (parts[2], family)
            members.setdefault(parts[1], set())
        elif parts[0] == "add":
            members.setdefault(parts[1], set()).add(parts[2])
    return {n: KernelSet(n, t, f, frozenset(members[n])) for n, (t, f) in headers.items()}


def _create(name: str, s: IpSet) -> str:
    return f"create {name} {s.set_type} family {s.family} maxelem {MAXELEM}"


def plan_updates(
    desired: Mapping[str, IpSet], actual: Mapping[str, KernelSet], *, deltas: bool = False
) -> tuple[list[str], list[str]]:
    """Pure: (``ipset restore`` lines, names changed) bringing desired sets into the kernel.
    ``deltas``: a set of the right type and family gets ``del``/``add`` of the members that differ
    (each its own fact: no packet needs both at once) instead of a rebuilt temp set swapped in."""
    lines: list[str] = [f"destroy {n}" for n in sorted(actual) if n.startswith(TEMP_PREFIXES)]
    changed = []
    temp_n = 0
    for name, s in sorted(desired.items()):
        want = frozenset(normalise_member(m) for m in s.members)
        have = actual.get(name)
        if have is None:
            lines += [_create(name, s)] + [f"add {name} {m}" for m in sorted(want)]
        elif deltas and (have.set_type, have.family) == (s.set_type, s.family) and have.members != want:
            lines += [f"del {name} {m} -exist" for m in sorted(have.members - want)]
            lines += [f"add {name} {m} -exist" for m in sorted(want - have.members)]
        elif (have.set_type, have.family, have.members) != (s.set_type, s.family, want):
            temp = f"{'cali6t' if s.family == 'inet6' else 'cali4t'}{temp_n}"
            temp_n += 1
            lines += [_create(temp, s)] + [f"add {temp} {m}" for m in sorted(want)]
            lines += [f"swap {temp} {name}", f"destroy {temp}"]
        else:
            continue
        changed.append(name)
    return lines, changed


def plan_deletions(desired: Iterable[str], actual: Iterable[str]) -> list[str]:
    keep = set(desired)
    return sorted(n for n in actual if n.startswith(OWNED_PREFIXES) and n not in keep)


class IpsetWriter:
    def __init__(self, *, netns: str | None = None) -> None:
        self.netns = netns
        self._desired: dict[str, IpSet] = {}
        self._actual: dict[str, KernelSet] | None = None
        # Sets updated since the last successful apply_updates; None = compare every set. With the
        # cached view of the kernel the others are known to match (no re-normalising of thousands
        # of members on every one-set change).
        self._dirty: set[str] | None = None
        self.stats = ToolStats()  # felix_ipset_{calls,errors,lines_executed}
        self._prefetch: Prefetch[dict[str, KernelSet]] | None = None

    def prefetch(self) -> None:
        """Start ``ipset save`` now, in its own thread, for the first apply to plan against
        (``felixpy.dataplane.prefetch``)."""
        if self._actual is None and self._prefetch is None:
            self._prefetch = Prefetch("ipset-save", self._save)

    def set_ipsets(self, sets: Iterable[IpSet]) -> None:
        self._desired = {s.name: _checked(s) for s in sets}
        self._dirty = None

    def update_ipset(self, s: IpSet) -> None:
        self._desired[s.name] = _checked(s)
        if self._dirty is not None:
            self._dirty.add(s.name)

    def remove_ipset(self, name: str) -> None:
        self._desired.pop(name, None)

    def resync(self) -> list[str]:
        self._actual = None
        self._prefetch = None  # a re-read is asked for: not one made earlier
        return self.apply()

    def apply(self) -> list[str]:
        """Updates then deletions; returns the names created, changed or destroyed."""
        return self.apply_updates() + self.apply_deletions()

    def apply_updates(self) -> list[str]:
        if self._actual is None:
            self._dirty = None
        actual = self._read()
        desired = self._desired
        if self._dirty is not None:
            desired = {n: self._desired[n] for n in self._dirty if n in self._desired}
        lines, changed = plan_updates(desired, actual, deltas=True)
        if lines:
            self._restore(lines)
            for name in changed:
                s = self._desired[name]
                log.info(
                    "ipset.written",
                    set=name,
                    members=len(s.members),
                    reason="new" if name not in actual else "members changed",
                )
                actual[name] = KernelSet(
                    name, s.set_type, s.family, frozenset(normalise_member(m) for m in s.members)
                )
            for name in [n for n in actual if n.startswith(TEMP_PREFIXES)]:
                del actual[name]
        self._dirty = set()
        return changed

    def apply_deletions(self) -> list[str]:
        actual = self._read()
        gone = []
        for name in plan_deletions(self._desired, actual):
            try:
                with self.stats.call("ipset"):
                    run(["ipset", "destroy", name], netns=self.netns)
            except DataplaneError as exc:  # still referenced by a rule: retry next time
                log.warning("ipset.destroy_failed", set=name, error=str(exc))
                continue
            del actual[name]
            gone.append(name)
            log.info("ipset.destroyed", set=name, reason="no longer desired")
        return gone

    def _read(self) -> dict[str, KernelSet]:
        if self._actual is None:
            early, self._prefetch = take(self._prefetch), None
            self._actual = early if early is not None else self._save()
        return self._actual

    def _save(self) -> dict[str, KernelSet]:
        with self.stats.call("ipset"):
            text = run(["ipset", "save"], netns=self.netns)
        return parse_save(text)

    def _restore(self, lines: list[str]) -> None:
        try:
            with self.stats.call("ipset"):
                run(["ipset", "restore"], netns=self.netns, input="\n".join(lines) + "\n")
            self.stats.add_lines("ipset", len(lines))
        except DataplaneError:
            self._actual = None  # unknown state: re-read next time
            raise


def _checked(s: IpSet) -> IpSet:
    if not s.name.startswith(OWNED_PREFIXES) or len(s.name) > MAX_NAME:
        raise ValueError(f"ipset {s.name!r}: must start with cali40/cali60 and be at most {MAX_NAME} chars")
    return s
