"""NetworkPolicy conformance across nodes: the truth-table cases on a real multi-node lab.

One lab for the module: three nodes (two racks behind a BIRD top-of-rack when bird2 is
installed, else one L2 segment), namespaces x, y, z labelled ``ns=<name>`` and pods
``x/a`` .. ``z/c`` labelled ``pod=<name>``, spread round-robin over the nodes so that almost
every flow crosses nodes (and, with racks, the fabric), each serving TCP and UDP on 80 and 81
with the upstream pods' named ports ``serve-80-tcp`` .. ``serve-81-udp`` on its
WorkloadEndpoint (half the pods get them from ``--named-serve``, half from explicit ``--ports``).

Per case: the case's documents are ``felixctl apply``'d through the lab, the test waits
(bounded) until the agents have written the policies' chains, then probes the matrix until
it matches or a deadline passes. The lab's matrix must equal BOTH the case's truth table and
the reference evaluator's answer computed with the pods' real addresses. The documents are
then deleted, every policy chain must disappear, and the all-allowed baseline must return.
All the cases run, the named-port ones included; the evaluator uses the ports the lab reports.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from felixpy.lab import ports
from felixpy.lab.layout import LabError
from felixpy.lab.testing import LabCLI, missing_prerequisites, root_snapshot
from tests.e2e.policy_lab_helpers import PolicyLab, all_allowed, diff_report
from tests.fixtures.conformance_cases import (
    CASES,
    NAMED_PORTS,
    NAMESPACES,
    POD_KEYS,
    TCP80,
    UDP81,
    NetpolCase,
    cases,
    knp,
    peer,
    port,
)
from tests.fixtures.conformance_cases import Expect as E

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NODES = ("node1", "node2", "node3")
LAB_CASES = list(CASES)
FULL = (TCP80, ("TCP", 81), ("UDP", 80), UDP81)
UPSTREAM_PORTS = tuple(sorted(NAMED_PORTS))
EXPLICIT_PORTS = ",".join(f"{name}={number}/{proto.lower()}" for name, proto, number in NAMED_PORTS)


def _port_args(i: int) -> tuple[str, ...]:
    """Even pods name their served ports with --named-serve, odd ones list them with --ports."""
    return ("--named-serve",) if i % 2 == 0 else ("--ports", EXPLICIT_PORTS)


def _up(lab: LabCLI) -> None:
    if shutil.which("bird") and shutil.which("birdc"):
        lab.ok("up", "--nodes", "3", "--racks", "2", "--tor", "bird", "--timeout", "90", timeout=150)
    else:
        print("note: bird2 is not installed, the nodes share one L2 segment")
        lab.ok("up", "--nodes", "3", "--timeout", "90", timeout=150)
    for ns in NAMESPACES:
        lab.ok("ns", "add", ns, "--labels", f"ns={ns}", timeout=60)
    for i, key in enumerate(POD_KEYS):
        node = NODES[i % len(NODES)]
        lab.ok("pod", "add", key, "--node", node, "--labels", f"pod={key.split('/')[1]}",
               "--serve", "80,81", *_port_args(i), timeout=90)


@pytest.fixture(scope="module")
def plab() -> Iterator[PolicyLab]:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    before = root_snapshot()
    started = time.monotonic()
    lab = LabCLI.unique("fpc")
    policy_lab: PolicyLab | None = None
    try:
        _up(lab)
        policy_lab = PolicyLab.from_status(lab)
        yield policy_lab
    finally:
        down = lab.down()
        if policy_lab is not None:
            shutil.rmtree(policy_lab.workdir, ignore_errors=True)
        print(f"policy lab {lab.name}: {time.monotonic() - started:.0f}s from up to down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert root_snapshot() == before, "the lab changed the root namespace"


def check_matrix(plab: PolicyLab, case: NetpolCase) -> None:
    """Probe (bounded polling) and compare with the truth table and the evaluator."""
    truth = case.truth_table()
    oracle = plab.evaluator_matrix(case)
    got = plab.matrix_until(case.probes, truth)
    report = diff_report(case.name, got, truth, oracle)
    if got != truth or got != oracle:
        print(report)
    assert got == truth, report
    assert got == oracle, report


def assert_lifted(plab: PolicyLab) -> None:
    assert plab.wait_clean(), f"policy chains left on the nodes: {plab.policy_chains()}"
    baseline = plab.matrix_until(FULL, all_allowed(FULL))
    assert baseline == all_allowed(FULL), diff_report("baseline", baseline, all_allowed(FULL), baseline)


def test_spread_and_baseline(plab: PolicyLab) -> None:
    """Pods really are on every node, and with no policy every flow connects."""
    assert sorted(plab.ips) == sorted(POD_KEYS)
    assert set(plab.node_of.values()) == set(NODES)
    assert len(set(plab.ips.values())) == len(POD_KEYS)
    assert plab.policy_chains() == [set(), set(), set()]
    assert_lifted(plab)


def test_named_ports_on_endpoints(plab: PolicyLab) -> None:
    """Every pod's status and its WorkloadEndpoint in etcd carry the upstream named ports."""
    assert plab.ports == {key: UPSTREAM_PORTS for key in POD_KEYS}
    assert plab.wep_ports() == {key: UPSTREAM_PORTS for key in POD_KEYS}


def test_port_flags_give_the_upstream_names() -> None:
    """Pure: --named-serve 80,81 and the explicit --ports list both spell the cases' NAMED_PORTS."""
    for named in (ports.serve_names([80, 81]), ports.parse_ports(EXPLICIT_PORTS)):
        assert sorted((p.name, p.protocol, p.port) for p in named) == list(UPSTREAM_PORTS)
    assert ports.parse_ports("dns=53/UDP,web=8080") == [
        ports.NamedPort("dns", "UDP", 53), ports.NamedPort("web", "TCP", 8080)]
    for bad in ("web=80/icmp", "web", "Web=80", "a=1,a=2", "web=0/tcp", "80=80"):
        with pytest.raises(LabError):
            ports.parse_ports(bad)


@pytest.mark.parametrize("name", [c.name for c in LAB_CASES])
def test_case_in_lab(plab: PolicyLab, name: str) -> None:
    case = next(c for c in cases(plab.ips) if c.name == name)  # ipBlocks with the real IPs
    assert plab.evaluator_matrix(case) == case.truth_table(), "evaluator and truth table disagree"
    plab.apply(case.policies, tag=name)
    try:
        programmed = plab.wait_programmed(case.policies)
        check_matrix(plab, case)
        assert programmed, f"the agents did not write the chains: {plab.policy_chains()}"
    finally:
        plab.delete(case.policies, tag=f"{name}-del")
    assert_lifted(plab)


def test_every_case_runs_in_the_lab() -> None:
    assert len(LAB_CASES) == len(CASES) >= 41
    named = {c.name for c in LAB_CASES if "named-port" in c.name}
    assert named == {"ingress-named-port", "ingress-named-port-from-namespace", "egress-named-port"}


def _stage(name: str, docs: tuple[dict[str, object], ...], expects: tuple[E, ...]) -> NetpolCase:
    return NetpolCase(name, docs, expects, FULL)


def test_policy_update_and_delete(plab: PolicyLab) -> None:
    """One policy changed in place, a second added, then each deleted: the matrix follows."""
    a = {"pod": "a"}
    from_b = knp("p", "x", a, ingress=[{"from": [peer({"pod": "b"})]}])
    from_y_81 = knp("p", "x", a, ingress=[{"from": [peer(ns={"ns": "y"})], "ports": [port(81)]}])
    deny_x = knp("deny", "x", types=["Ingress"])
    deny_a = E("*/*", "x/a", False)
    stages = [
        ("apply", from_b, _stage("from-b", (from_b,), (deny_a, E("x/b", "x/a", True)))),
        ("apply", from_y_81, _stage("updated-to-y-81", (from_y_81,), (
            deny_a, E("y/*", "x/a", True, (("TCP", 81),))))),
        ("apply", deny_x, _stage("plus-deny-x", (from_y_81, deny_x), (
            E("*/*", "x/*", False), E("y/*", "x/a", True, (("TCP", 81),))))),
        ("delete", from_y_81, _stage("p-deleted", (deny_x,), (E("*/*", "x/*", False),))),
    ]
    try:
        for verb, doc, case in stages:
            (plab.apply if verb == "apply" else plab.delete)([doc], tag=case.name)
            assert plab.wait_programmed(case.policies), f"{case.name}: chains {plab.policy_chains()}"
            check_matrix(plab, case)
    finally:
        plab.delete([from_b, deny_x], tag="update-cleanup")
    assert_lifted(plab)
