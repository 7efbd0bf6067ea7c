"""Untracked (raw) and pre-DNAT (mangle) host endpoint policy on the real kernel.

Shape (``hep_topology``, as ``test_policy_hep_kernel``): ``host`` (eth0 10.67.0.1/24) ⇄ veth ⇄
``client`` (eth0 10.67.0.2/24), each running a bounded TCP/UDP echo responder. ``host``'s eth0 is a
host endpoint; the compiler's output goes into ``host`` through the agent's write path (``write_changes``).
Every probe is a new flow (conntrack flushed between phases), and every verdict is also asked of
the reference (``policy.evaluate_hostraw``). ``conntrack -L`` and the rules' packet counters
(``iptables-save -c``) show where a packet was decided: no conntrack entry for an untracked flow,
the raw/mangle DROP rule counted for a denied one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from felixpy.dataplane.iptables_backend import BackendKind
from policy.convert import endpoint_from_hep
from policy.evaluate_hostraw import exchange_allowed
from policy.evaluator import Evaluator, Flow
from tests.fixtures.netns import Netns
from tests.kernel.hep_topology import HepShape, HostPair, Probe, gnp, host_pair

pytestmark = pytest.mark.kernel
HOST_IP, CLIENT_IP = "10.67.0.1", "10.67.0.2"
HOST_PORTS = (8080, 9090, 22)
CLIENT_PORTS = (8080, 2379)
DNAT_PORT = 7070  # DNATed by the test's own nat rule to HOST_IP:8080
SHAPE = HepShape("raw", HOST_IP, CLIENT_IP, HOST_PORTS, CLIENT_PORTS)
HEP = SHAPE.host_endpoint()


def tcp(port: int, action: str = "Allow", side: str = "destination") -> dict[str, Any]:
    return {"action": action, "protocol": "TCP", side: {"ports": [port]}}


OPEN = gnp("open", types=["Ingress", "Egress"], ingress=[{"action": "Allow"}], egress=[{"action": "Allow"}])
ALLOW_8080 = gnp("web", ingress=[tcp(8080)])
UNTRACKED_9090 = gnp(
    "unt",
    doNotTrack=True,
    applyOnForward=True,
    order=10,
    ingress=[tcp(9090)],
    egress=[tcp(9090, side="source")],
)
UNTRACKED_DENY_8080 = gnp(
    "unt-deny", doNotTrack=True, applyOnForward=True, order=20, ingress=[tcp(8080, "Deny")]
)
UNTRACKED_IN_ONLY = gnp("unt-in", doNotTrack=True, applyOnForward=True, ingress=[tcp(9090)])
UNTRACKED_DENY_ALL = gnp(
    "unt-all", doNotTrack=True, applyOnForward=True, types=["Ingress", "Egress"],
    ingress=[{"action": "Deny"}], egress=[{"action": "Deny"}],
)  # fmt: skip
PREDNAT_DENY_7070 = gnp("pre-deny", preDNAT=True, applyOnForward=True, ingress=[tcp(DNAT_PORT, "Deny")])
PREDNAT_ALLOW_7070 = gnp("pre-allow", preDNAT=True, applyOnForward=True, ingress=[tcp(DNAT_PORT)])
PREDNAT_DENY_ALL = gnp("pre-all", preDNAT=True, applyOnForward=True, ingress=[{"action": "Deny"}])


class RawPair(HostPair):
    """The pair with the host endpoint in place from the start, plus the reference and the counters."""

    def __init__(self, host: Netns, client: Netns, shape: HepShape, backend: BackendKind = "legacy") -> None:
        super().__init__(host, client, shape, backend)
        self.dp.compiler.update_endpoint(HEP)

    def expected(self, *probes: Probe) -> dict[Probe, bool]:
        """The reference's verdicts (a DNAT_PORT probe reaches normal policy as port 8080)."""
        ep = endpoint_from_hep(HEP)
        ev = Evaluator([ep], self.policies)
        out = {}
        for direction, port in probes:
            src, dst = (CLIENT_IP, HOST_IP) if direction == "Ingress" else (HOST_IP, CLIENT_IP)
            flow = Flow(src, dst, "TCP", port, src_port=40000)
            after = Flow(src, dst, "TCP", 8080, src_port=40000) if port == DNAT_PORT else None
            out[(direction, port)] = exchange_allowed(ev, ep, direction, flow, after_dnat=after)
        return out

    def check(self, *probes: Probe) -> dict[Probe, bool]:
        got = self.observe(*probes)
        assert got == self.expected(*probes)
        return got

    def tracked(self, port: int) -> int:
        """How many conntrack entries the host has for TCP flows into it, to ``port``."""
        argv = ("conntrack", "-L", "-p", "tcp", "--orig-dst", HOST_IP, "--dport", str(port))
        out = self.host.run(*argv, check=False)
        return sum(1 for line in out.splitlines() if line.startswith("tcp"))

    def dropped(self, table: str, chain: str) -> int:
        """Packets counted by the DROP rules of one of our chains."""
        text = self.host.run(self.save_tool, "-c", "-t", table)
        total = 0
        for line in text.splitlines():
            m = re.match(r"\[(\d+):\d+\] -A (\S+) .*-j DROP", line)
            if m and m.group(2) == chain:
                total += int(m.group(1))
        return total


@pytest.fixture
def pair(netns: Callable[..., Netns]) -> Iterator[RawPair]:
    with host_pair(netns, SHAPE, RawPair) as made:
        yield made


def dnat(pair: RawPair) -> None:
    """The test's own DNAT (a stand-in for a NodePort): HOST_IP:7070 → HOST_IP:8080."""
    pair.host.run(pair.iptables, "-t", "nat", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "--dport",
                  str(DNAT_PORT), "-j", "DNAT", "--to-destination", f"{HOST_IP}:8080")  # fmt: skip


# ------------------------------------------------------------------------------ untracked


def test_untracked_allow_is_not_tracked_and_untracked_deny_drops_before_conntrack(pair: RawPair) -> None:
    pair.set_policies(OPEN)
    assert pair.check(("Ingress", 8080), ("Ingress", 9090)) == {
        ("Ingress", 8080): True,
        ("Ingress", 9090): True,
    }
    assert pair.tracked(9090) >= 1 and pair.tracked(8080) >= 1  # conntrack runs in this namespace

    pair.set_policies(OPEN, UNTRACKED_9090, UNTRACKED_DENY_8080)
    got = pair.check(("Ingress", 9090), ("Ingress", 8080), ("Ingress", 22), ("Egress", 8080))
    assert got == {
        ("Ingress", 9090): True,
        ("Ingress", 8080): False,
        ("Ingress", 22): True,
        ("Egress", 8080): True,
    }
    assert pair.tracked(9090) == 0  # untracked Allow: through, without a conntrack entry
    assert pair.tracked(8080) == 0 and pair.dropped("raw", "cali-pi-gnp/unt-deny") >= 1  # dropped in raw
    assert pair.tracked(22) >= 1  # failsafe traffic is left to (tracked) normal processing


def test_untracked_reply_needs_its_own_untracked_allow(pair: RawPair) -> None:
    pair.set_policies(OPEN, UNTRACKED_IN_ONLY)  # the request untracked, the reply tracked: broken TCP
    assert pair.check(("Ingress", 9090)) == {("Ingress", 9090): False}
    pair.set_policies(OPEN, UNTRACKED_9090)
    assert pair.check(("Ingress", 9090)) == {("Ingress", 9090): True}
    assert pair.tracked(9090) == 0


# ------------------------------------------------------------------------------ pre-DNAT


def test_prednat_policy_sees_the_destination_before_dnat(pair: RawPair) -> None:
    dnat(pair)
    pair.set_policies(ALLOW_8080)  # the filter table allows the DNATed flow
    assert pair.check(("Ingress", DNAT_PORT), ("Ingress", 8080)) == {
        ("Ingress", DNAT_PORT): True, ("Ingress", 8080): True,
    }  # fmt: skip

    pair.set_policies(ALLOW_8080, PREDNAT_DENY_7070)
    assert pair.check(("Ingress", DNAT_PORT), ("Ingress", 8080)) == {
        ("Ingress", DNAT_PORT): False, ("Ingress", 8080): True,  # same backend port, only 7070 denied
    }  # fmt: skip
    assert pair.dropped("mangle", "cali-pi-gnp/pre-deny") >= 1

    pair.set_policies(PREDNAT_ALLOW_7070)  # no normal policy: the host endpoint denies by default
    assert pair.check(("Ingress", DNAT_PORT), ("Ingress", 8080), ("Ingress", 9090)) == {
        ("Ingress", DNAT_PORT): True,  # allowed pre-DNAT: normal policy skipped
        ("Ingress", 8080): False,
        ("Ingress", 9090): False,
    }


# ------------------------------------------------------------------------------ failsafes


def test_failsafe_ports_survive_untracked_and_prednat_deny_all(pair: RawPair) -> None:
    probes: tuple[Probe, ...] = (("Ingress", 22), ("Ingress", 8080), ("Egress", 2379), ("Egress", 8080))
    want = {("Ingress", 22): True, ("Ingress", 8080): False, ("Egress", 2379): True, ("Egress", 8080): False}
    pair.set_policies(OPEN, UNTRACKED_DENY_ALL)
    assert pair.check(*probes) == want
    pair.set_policies(OPEN, PREDNAT_DENY_ALL)
    assert pair.check(*probes) == {**want, ("Egress", 8080): True}  # pre-DNAT is ingress only
    pair.set_policies(OPEN, UNTRACKED_DENY_ALL, PREDNAT_DENY_ALL)
    assert pair.check(*probes) == want


# ------------------------------------------------------------------------------ life cycle


THEIRS = {
    "raw": ["-A", "PREROUTING", "-p", "udp", "--dport", "5353", "-m", "comment", "--comment", "theirs",
            "-j", "CT", "--notrack"],
    "mangle": ["-A", "PREROUTING", "-p", "udp", "--dport", "5353", "-m", "comment", "--comment", "theirs",
               "-j", "RETURN"],
}  # fmt: skip


@pytest.mark.parametrize("backend", ["legacy", "nft", "python-iptables"])
def test_deleting_the_policies_removes_raw_and_mangle_chains_only(netns: Any, backend: BackendKind) -> None:
    with host_pair(netns, SHAPE, RawPair, backend) as pair:
        dnat(pair)
        for table, rule in THEIRS.items():
            pair.host.run(pair.iptables, "-t", table, *rule)
        pair.host.run(pair.iptables, "-t", "raw", "-N", "their-chain")
        pair.set_policies(OPEN, UNTRACKED_9090, PREDNAT_DENY_7070)
        raw, mangle = pair.save("raw"), pair.save("mangle")
        assert "-A PREROUTING" in raw and "cali-fh-eth0" in raw and "cali-po-gnp/unt" in raw
        assert "cali-pi-gnp/pre-deny" in mangle and "cali-pi-gnp/unt" not in mangle
        assert pair.observe(("Ingress", 9090), ("Ingress", DNAT_PORT)) == {
            ("Ingress", 9090): True, ("Ingress", DNAT_PORT): False,
        }  # fmt: skip
        assert pair.tracked(9090) == 0

        pair.set_policies(OPEN)
        raw, mangle, nat = pair.save("raw"), pair.save("mangle"), pair.save("nat")
        assert "cali" not in mangle  # chains and hook gone
        # raw keeps only the workload anti-spoofing check (policy.rpf) and its PREROUTING hook
        assert set(re.findall(r"^:(cali-\S+)", raw, re.M)) == {"cali-PREROUTING", "cali-rpf-skip"}
        assert [line.split()[1] for line in raw.splitlines() if "cali" in line and line.startswith("-A ")
                and not line.startswith("-A cali-")] == ["PREROUTING"]  # fmt: skip
        assert raw.count("theirs") == 1 and mangle.count("theirs") == 1 and ":their-chain" in raw
        assert f"--to-destination {HOST_IP}:8080" in nat
        assert "cali-fh-eth0" in pair.save("filter")  # the host endpoint's filter chains stay
        assert pair.observe(("Ingress", 9090), ("Ingress", DNAT_PORT)) == {
            ("Ingress", 9090): True, ("Ingress", DNAT_PORT): True,
        }  # fmt: skip
        assert pair.tracked(9090) >= 1  # tracked again
