"""Host endpoint policy on the real kernel: a "host" namespace whose ``eth0`` is a host endpoint.

Shape (``hep_topology``): ``host`` (eth0 10.66.0.1/24) ⇄ veth ⇄ ``client`` (eth0 10.66.0.2/24).
Both run a small TCP echo responder (bounded lifetime and connection count). The compiler's output
is written into ``host`` with the real iptables/ipset writers; every probe is a new flow (conntrack is
flushed between phases) and its verdict is also asked of the reference evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from policy.convert import endpoint_from_hep, hep_key
from policy.entities import Direction, Policy
from policy.evaluator import Evaluator, Flow
from tests.fixtures.netns import Netns
from tests.kernel.hep_topology import HepShape, HostPair, gnp, host_pair
from tests.kernel.policy_topology import probe

pytestmark = pytest.mark.kernel
HOST_IP, CLIENT_IP = "10.66.0.1", "10.66.0.2"
HOST_PORTS = (8080, 9090, 22, 179)
CLIENT_PORTS = (8080, 2379)
SHAPE = HepShape("hep", HOST_IP, CLIENT_IP, HOST_PORTS, CLIENT_PORTS)
HEP = SHAPE.host_endpoint()
ALLOW_8080 = gnp("web", ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}])
DENY_ALL = gnp("deny-all", types=["Ingress", "Egress"])


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


@pytest.fixture
def pair(netns: Callable[..., Netns]) -> Iterator[HostPair]:
    with host_pair(netns, SHAPE, HostPair) as made:
        yield made


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
