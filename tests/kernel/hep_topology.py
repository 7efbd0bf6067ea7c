"""A host and a client namespace on the real kernel, for the host endpoint policy tests.

Shape: ``<tag>-host`` (eth0 ``host_ip``/24) ⇄ veth ⇄ ``<tag>-client`` (eth0 ``client_ip``/24). Each
runs the bounded TCP/UDP echo responder of ``policy_topology`` on its own ports. ``host``'s eth0 is
the host endpoint (``HepShape.host_endpoint``); ``HostPair`` writes the compiler's output into
``host`` through the agent's write path with the chosen iptables backend, and probes over the veth.
Namespaces come from the per-test ``netns`` fixture, which deletes them even on failure.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from felixpy.dataplane.iptables_backend import BackendKind
from felixpy.resources.endpoint import HostEndpoint
from policy.convert import policy_from_doc
from policy.entities import Direction, Policy
from tests.fixtures.netns import Netns
from tests.kernel.policy_topology import NODE, PolicyDataplane, flush_conntrack, probe, wait_ready
from tests.kernel.policy_topology import start_responder as topology_responder

Probe = tuple[Direction, int]
GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy"}


@dataclass(frozen=True)
class HepShape:
    """What differs between the tests using the pair: names, addresses and the ports listened on."""

    tag: str  # namespaces are "<tag>-host" and "<tag>-client"
    host_ip: str
    client_ip: str
    host_ports: tuple[int, ...]
    client_ports: tuple[int, ...]

    def host_endpoint(self) -> HostEndpoint:
        """``host``'s eth0 as the host endpoint ``host-eth0`` (label role=edge) of node ``NODE``."""
        return HostEndpoint.model_validate(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "HostEndpoint",
                "metadata": {"name": "host-eth0", "labels": {"role": "edge"}},
                "spec": {"node": NODE, "interfaceName": "eth0", "expectedIPs": [self.host_ip]},
            }
        )


def gnp(name: str, **spec: Any) -> Policy:
    """A GlobalNetworkPolicy selecting the host endpoint (``role == 'edge'``)."""
    return policy_from_doc(
        {**GNP, "metadata": {"name": name}, "spec": {"selector": "role == 'edge'", **spec}}
    )


class HostPair:
    """The two namespaces plus a policy dataplane writing into ``host``."""

    def __init__(self, host: Netns, client: Netns, shape: HepShape, backend: BackendKind = "legacy") -> None:
        self.host, self.client = host, client
        self.shape = shape
        self.backend = backend
        self.dp = PolicyDataplane(host.name, backend=backend)
        self.policies: list[Policy] = []

    @property
    def save_tool(self) -> str:
        return "iptables-nft-save" if self.backend == "nft" else "iptables-legacy-save"

    @property
    def iptables(self) -> str:
        return "iptables-nft" if self.backend == "nft" else "iptables-legacy"

    def set_policies(self, *policies: Policy) -> None:
        """Make ``policies`` the whole policy set (the previous ones removed), apply, flush conntrack."""
        c = self.dp.compiler
        for p in self.policies:
            c.remove_policy(p.id)
        for p in policies:
            c.update_policy(p)
        self.policies = list(policies)
        self.dp.apply()
        flush_conntrack(self.host)

    def inbound(self, port: int) -> bool:
        return probe(self.client.path, self.shape.host_ip, ("TCP", port), 1.0)

    def outbound(self, port: int) -> bool:
        return probe(self.host.path, self.shape.client_ip, ("TCP", port), 1.0)

    def probe(self, what: Probe) -> bool:
        direction, port = what
        return self.inbound(port) if direction == "Ingress" else self.outbound(port)

    def observe(self, *probes: Probe) -> dict[Probe, bool]:
        return {p: self.probe(p) for p in probes}

    def observed(self) -> dict[Probe, bool]:
        """Every host port from the client, then every client port from the host."""
        got: dict[Probe, bool] = {("Ingress", p): self.inbound(p) for p in self.shape.host_ports}
        got.update({("Egress", p): self.outbound(p) for p in self.shape.client_ports})
        return got

    def save(self, table: str) -> str:
        return self.host.run(self.save_tool, "-t", table)


def start_responder(ns: Netns, ports: tuple[int, ...]) -> subprocess.Popen[str]:
    proc = topology_responder(ns, 120, ports)
    wait_ready(proc)
    return proc


P = TypeVar("P", bound=HostPair)


@contextmanager
def host_pair(
    netns: Callable[..., Netns],
    shape: HepShape,
    kind: Callable[[Netns, Netns, HepShape, BackendKind], P],
    backend: BackendKind = "legacy",
) -> Iterator[P]:
    """The wired pair with both responders running; on exit the backend is closed and the
    responders killed (``netns`` deletes the namespaces)."""
    host, client = netns(f"{shape.tag}-host"), netns(f"{shape.tag}-client")
    host.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client.name)
    for ns, ip in ((host, shape.host_ip), (client, shape.client_ip)):
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    procs = [start_responder(host, shape.host_ports), start_responder(client, shape.client_ports)]
    made = kind(host, client, shape, backend)
    try:
        yield made
    finally:
        made.dp.close()
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
