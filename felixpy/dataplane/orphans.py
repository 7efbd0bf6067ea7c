"""Orphaned workload endpoints: local endpoints whose host interface (and so its pod's network
namespace) is gone while the endpoint is still in the datastore.

That happens when a pod's CNI DEL never reached the agent (agent down, the runtime deleted the
namespace anyway): the endpoint, its addresses and its ``cali-tw/fw`` chains stay until the
runtime retries the DEL. Their routes cannot be programmed (no interface), and that must neither
make the node not-ready nor fill the log: the dataplane withholds an orphan's routes from the
route table (tried once, logged once by ``route.deferred``), logs ``endpoint.orphaned`` once, and
gives them back when the interface reappears or the endpoint changes (``endpoint.orphan_cleared``);
the DEL, when it comes, removes the endpoint and everything with it as for any pod.

Pure bookkeeping: whether an interface exists is a callable the dataplane passes in.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from policy.entities import Endpoint

if TYPE_CHECKING:
    from felixpy.dataplane.kernel_objects import RouteTarget

log = structlog.get_logger(__name__)


@dataclass
class Orphan:
    endpoint: Endpoint
    since: float  # time.time() when found
    withheld: dict[str, RouteTarget] = field(default_factory=dict)  # dst -> target kept out of the table

    def to_json(self) -> dict[str, object]:
        ep = self.endpoint
        return {
            "namespace": ep.namespace,
            "name": ep.name,
            "interface": ep.iface,
            "addresses": list(ep.nets),
            "containerID": ep.container_id,
            "pod": ep.pod,
            "since": self.since,
        }


def _cidr(dst: str) -> str:
    """A route destination as the route table keys it (``10.0.0.1/32``, compressed IPv6)."""
    try:
        return str(ipaddress.ip_network(dst, strict=False))
    except ValueError:
        return dst


def _dst_index(endpoints: Mapping[tuple[str, str], Endpoint]) -> dict[str, tuple[str, str]]:
    return {_cidr(ip): key for key, ep in endpoints.items() for ip in ep.nets}


class Orphans:
    """The orphans of one dataplane, and the routes withheld for them."""

    def __init__(self, iface_exists: Callable[[str], bool]) -> None:
        self.iface_exists = iface_exists
        self.by_key: dict[tuple[str, str], Orphan] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def __contains__(self, key: object) -> bool:
        return key in self.by_key

    def report(self) -> list[dict[str, object]]:
        return [o.to_json() for _, o in sorted(self.by_key.items())]

    # ---- routes --------------------------------------------------------------------------
    def withholding(self, dst: str) -> Orphan | None:
        if not self.by_key:
            return None
        dst = _cidr(dst)
        for orphan in self.by_key.values():
            if dst in orphan.withheld:
                return orphan
        return None

    def find(
        self,
        failed: Iterable[str],
        endpoints: Mapping[tuple[str, str], Endpoint],
        desired: Mapping[str, RouteTarget],
    ) -> list[tuple[tuple[str, str], Orphan]]:
        """New orphans among the endpoints whose routes just failed: those whose interface is gone.
        Each new orphan holds its routes' targets (taken from ``desired``), for the caller to
        remove from the route table."""
        index = _dst_index(endpoints)
        found: list[tuple[tuple[str, str], Orphan]] = []
        for dst in failed:
            key = index.get(dst)
            if key is None or key in self.by_key:
                continue
            ep = endpoints[key]
            if self.iface_exists(ep.iface or ""):
                continue  # some other failure: not ours to hide
            dsts = [_cidr(ip) for ip in ep.nets]
            orphan = Orphan(ep, time.time(), {d: desired[d] for d in dsts if d in desired})
            self.by_key[key] = orphan
            found.append((key, orphan))
            log.warning(
                "endpoint.orphaned",
                endpoint=ep.key,
                iface=ep.iface,
                addresses=list(ep.nets),
                container=ep.container_id,
                reason=f"host interface {ep.iface} is gone (the pod's network namespace was removed "
                "without a CNI DEL reaching the agent)",
                action="routes withheld, readiness unaffected; the runtime's DEL cleans it "
                "(felixctl node check lists it)",
            )
        return found

    def forget(self, key: tuple[str, str], *, reason: str) -> Orphan | None:
        orphan = self.by_key.pop(key, None)
        if orphan is not None:
            ep = orphan.endpoint
            log.info(
                "endpoint.orphan_cleared",
                endpoint=ep.key,
                iface=ep.iface,
                addresses=list(ep.nets),
                reason=reason,
            )
        return orphan

    def revived(self) -> list[tuple[str, str]]:
        """Orphans whose interface exists again (a periodic check; the caller restores them)."""
        return [key for key, o in self.by_key.items() if self.iface_exists(o.endpoint.iface or "")]
