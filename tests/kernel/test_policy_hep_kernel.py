"""Host endpoint policy on the real kernel: a "host" namespace whose ``eth0`` is a host endpoint.

Shape: ``host`` (eth0 10.66.0.1/24) ⇄ veth ⇄ ``client`` (eth0 10.66.0.2/24). Both run a small
TCP echo responder (bounded lifetime and connection count). The compiler's output is written
into ``host`` with the real iptables/ipset writers; every probe is a new flow (conntrack is
flushed between phases) and its verdict is also asked of the reference evaluator.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from felixpy.resources.endpoint import HostEndpoint
from policy.convert import endpoint_from_hep, hep_key, policy_from_doc
from policy.evaluator import Evaluator, Flow
from policy.model import Direction, Policy
from tests.fixtures.netns import Netns
from tests.kernel.policy_topology import NODE, PolicyDataplane, flush_conntrack, probe, wait_ready
from tests.kernel.policy_topology import start_responder as topology_responder

pytestmark = pytest.mark.kernel
HOST_IP, CLIENT_IP = "10.66.0.1", "10.66.0.2"
HOST_PORTS = (8080, 9090, 22, 179)
CLIENT_PORTS = (8080, 2379)
HEP = HostEndpoint.model_validate(
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": "host-eth0", "labels": {"role": "edge"}},
        "spec": {"node": NODE, "interfaceName": "eth0", "expectedIPs": [HOST_IP]},
    }
)


def gnp(name: str, **spec: Any) -> Policy:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy"}
    return policy_from_doc(
        {**doc, "metadata": {"name": name}, "spec": {"selector": "role == 'edge'", **spec}}
    )


ALLOW_8080 = gnp("web", ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}])
DENY_ALL = gnp("deny-all", types=["Ingress", "Egress"])


class HostPair:
    def __init__(self, host: Netns, client: Netns) -> None:
        self.host, self.client = host, client
        self.dp = PolicyDataplane(host.name)

    def inbound(self, port: int) -> bool:
        return probe(self.client.path, HOST_IP, ("TCP", port), 1.0)

    def outbound(self, port: int) -> bool:
        return probe(self.host.path, CLIENT_IP, ("TCP", port), 1.0)

    def set_policies(self, *policies: Policy) -> None:
        c = self.dp.compiler
        for pid in [p.id for p in (ALLOW_8080, DENY_ALL)]:
            c.remove_policy(pid)
        for p in policies:
            c.update_policy(p)
        self.dp.apply()
        flush_conntrack(self.host)

    def observed(self) -> dict[tuple[Direction, int], bool]:
        got = {("Ingress", p): self.inbound(p) for p in HOST_PORTS}
        got.update({("Egress", p): self.outbound(p) for p in CLIENT_PORTS})
        return got


def expected(policies: list[Policy], *, hep: bool = True) -> dict[tuple[Direction, int], bool]:
    """The reference evaluator's verdicts for the same probes (no host endpoint: all allowed)."""
    ep = endpoint_from_hep(HEP)
    ev = Evaluator([ep], policies)
    out: dict[tuple[Direction, int], bool] = {}
    for p in HOST_PORTS:
        out[("Ingress", p)] = not hep or ev.host_allows(ep, "Ingress", Flow(CLIENT_IP, HOST_IP, "TCP", p))
    for p in CLIENT_PORTS:
        out[("Egress", p)] = not hep or ev.host_allows(ep, "Egress", Flow(HOST_IP, CLIENT_IP, "TCP", p))
    return out


def start_responder(ns: Netns, ports: tuple[int, ...]) -> subprocess.Popen[str]:
    proc = topology_responder(ns, 120, ports)
    wait_ready(proc)
    return proc


@pytest.fixture
def pair(netns: Any) -> Iterator[HostPair]:
    host, client = netns("hep-host"), netns("hep-client")
    host.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client.name)
    for ns, ip in ((host, HOST_IP), (client, CLIENT_IP)):
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    procs = [start_responder(host, HOST_PORTS), start_responder(client, CLIENT_PORTS)]
    made = HostPair(host, client)
    try:
        yield made
    finally:
        made.dp.close()
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def test_host_endpoint_policy_and_failsafes(pair: HostPair) -> None:
    assert pair.observed() == expected([], hep=False)
    assert all(pair.observed().values())  # before the host endpoint: nothing policed

    pair.dp.compiler.update_endpoint(HEP)
    pair.set_policies(ALLOW_8080)
    got = pair.observed()
    assert got == expected([ALLOW_8080])
    assert got[("Ingress", 8080)] and not got[("Ingress", 9090)]
    assert got[("Ingress", 22)] and got[("Ingress", 179)]  # failsafe in
    assert got[("Egress", 2379)] and not got[("Egress", 8080)]  # no egress policy: failsafe out only

    pair.set_policies(DENY_ALL)
    got = pair.observed()
    assert got == expected([DENY_ALL])
    assert not got[("Ingress", 8080)] and got[("Ingress", 22)] and got[("Ingress", 179)]
    assert got[("Egress", 2379)] and not got[("Egress", 8080)]


def test_removing_the_host_endpoint_lifts_enforcement(pair: HostPair) -> None:
    pair.dp.compiler.update_endpoint(HEP)
    pair.set_policies(DENY_ALL)
    assert not pair.inbound(8080) and pair.inbound(22)

    pair.dp.compiler.remove_endpoint(hep_key(HEP.name))
    pair.set_policies(DENY_ALL)  # still defined, but selects nothing on this host any more
    assert all(pair.observed().values())
    saved = pair.host.run("iptables-legacy-save", "-t", "filter")
    assert "cali-fh-eth0" not in saved and "cali-from-host-endpoint" not in saved
    assert "cali-pi-gnp/deny-all" not in saved


def test_loopback_and_other_interfaces_are_not_policed(pair: HostPair) -> None:
    pair.dp.compiler.update_endpoint(HEP)
    pair.set_policies(DENY_ALL)
    assert probe(pair.host.path, "127.0.0.1", ("TCP", 9090), 1.0)  # named host endpoint: eth0 only
    assert not pair.inbound(9090)
