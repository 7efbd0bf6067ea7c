"""Driving the policy conformance cases through a running ``felixpy-lab``.

``PolicyLab`` wraps a ``LabCLI`` whose nine pods ``x/a`` .. ``z/c`` are up: it writes a case's
policy documents to a YAML file and ``felixctl apply``s / ``delete``s them through the lab,
waits (bounded) until the agents have written the policies' chains, probes the matrix with
``probe --matrix -o json``, and answers the same flows through the reference evaluator with
the pods' real addresses and the named ports the lab reports for them. Only the lab's CLI and
``ip netns exec <node> iptables-save`` are used: nothing here touches the root namespace.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from felixpy.lab.testing import LabCLI
from policy.chain_names import policy_chain
from policy.convert import policy_from_doc
from policy.entities import PROTOCOL_NUMBERS, NamedPort
from policy.evaluator import Evaluator, Flow
from tests.fixtures import waiting
from tests.fixtures.conformance_cases import POD_KEYS, Doc, NetpolCase, Probe, namespace_labels, topology

Matrix = dict[Probe, dict[tuple[str, str], bool]]
PortTriple = tuple[str, str, int]  # (name, protocol, port), as conformance_cases.NAMED_PORTS
PROBE_TIMEOUT = 1.0
PROGRAM_DEADLINE = 15.0  # seconds for the agents to write (or remove) a case's chains
MATRIX_DEADLINE = 30.0  # seconds for the matrix to match once the chains are there (a round: ~2.5 s idle)


@dataclass
class PolicyLab:
    lab: LabCLI
    ips: dict[str, str]  # "x/a" -> pod IP
    node_of: dict[str, str]  # "x/a" -> node name
    node_netns: list[str]
    ports: dict[str, tuple[PortTriple, ...]]  # "x/a" -> the named ports `status` reports
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fpc-policy-")))

    @classmethod
    def from_status(cls, lab: LabCLI) -> PolicyLab:
        status = lab.status()
        pods = {f"{p['namespace']}/{p['name']}": p for p in status["pods"]}
        return cls(
            lab,
            ips={k: str(p["ip"]) for k, p in pods.items()},
            node_of={k: str(p["node"]) for k, p in pods.items()},
            node_netns=[str(n["netns"]) for n in status["nodes"]],
            ports={k: port_triples(p.get("ports", [])) for k, p in pods.items()},
        )

    def wep_ports(self) -> dict[str, tuple[PortTriple, ...]]:
        """Per pod, the named ports of its WorkloadEndpoint as stored in etcd (``felixctl get wep``)."""
        listing = json.loads(self.lab.ok("ctl", "--", "get", "wep", "-A", "-o", "json", timeout=60))
        items = listing["items"]
        return {f"{i['metadata']['namespace']}/{i['spec']['pod']}": port_triples(i["spec"].get("ports", []))
                for i in items}

    # ------------------------------------------------------------------ datastore

    def _write(self, docs: Sequence[Doc], tag: str) -> Path:
        path = self.workdir / f"{tag}.yaml"
        path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        return path

    def apply(self, docs: Sequence[Doc], tag: str = "apply") -> None:
        self.lab.ok("ctl", "--", "apply", "-f", str(self._write(docs, tag)), timeout=60)

    def delete(self, docs: Sequence[Doc], tag: str = "delete") -> None:
        path = self._write(docs, tag)
        self.lab.ok("ctl", "--", "delete", "--skip-not-found", "-f", str(path), timeout=60)

    # ------------------------------------------------------------------ kernel

    def policy_chains(self) -> list[set[str]]:
        """Per node, the names of the policy chains (``cali-pi-*``/``cali-po-*``) in its filter table."""
        out = []
        for netns in self.node_netns:
            text = subprocess.run(
                ["ip", "netns", "exec", netns, "iptables-save", "-t", "filter"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout
            out.append({
                line[1:].split(" ", 1)[0] for line in text.splitlines()
                if line.startswith((":cali-pi-", ":cali-po-"))
            })
        return out

    def wait_programmed(self, docs: Iterable[Doc]) -> bool:
        """Every chain of ``docs`` present on at least one node, and no other policy's chain."""
        wanted = expected_chains(docs)

        def done() -> bool:
            per_node = self.policy_chains()
            present = set().union(*per_node)
            return present == wanted
        return wait_for(done, PROGRAM_DEADLINE)

    def wait_clean(self) -> bool:
        return self.wait_programmed([])

    # ------------------------------------------------------------------ probes

    def matrix(self, probes: Sequence[Probe]) -> Matrix:
        ports = ",".join(sorted({str(p) for _, p in probes}))
        protos = ",".join(sorted({proto.lower() for proto, _ in probes}))
        out = self.lab.ok(
            "probe", "--matrix", "--ports", ports, "--proto", protos, "-o", "json",
            "--parallel", "4", "--timeout", str(PROBE_TIMEOUT), timeout=120,
        )
        tables = json.loads(out)["tables"]
        return {
            pr: {(s, d): bool(tables[f"{pr[1]}/{pr[0].lower()}"][s][d]) for s in POD_KEYS for d in POD_KEYS}
            for pr in probes
        }

    def matrix_until(self, probes: Sequence[Probe], expected: Matrix) -> Matrix:
        """Probe until the matrix equals ``expected`` or the deadline passes; the last one."""
        deadline = time.monotonic() + MATRIX_DEADLINE
        got, rounds = self.matrix(probes), 1
        while got != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            got, rounds = self.matrix(probes), rounds + 1
        if rounds > 1:
            print(f"matrix probed {rounds} times ({'matched' if got == expected else 'no match'})")
        return got

    def evaluator_matrix(self, case: NetpolCase) -> Matrix:
        """The reference evaluator's answer for every flow of ``case``, with the pods' real IPs and ports."""
        upstream = topology(self.ips, node_of=self.node_of)
        endpoints = [replace(ep, ports=policy_ports(self.ports[ep.key])) for ep in upstream]
        ev = Evaluator(endpoints, [policy_from_doc(d) for d in case.policies], namespace_labels())
        return {
            (proto, port): {
                (s, d): s == d or ev.allowed(Flow(self.ips[s], self.ips[d], proto, port, src_port=40000))
                for s in POD_KEYS for d in POD_KEYS
            }
            for proto, port in case.probes
        }


def port_triples(ports: Iterable[dict[str, object]]) -> tuple[PortTriple, ...]:
    """``[{name, protocol, port}]`` -> sorted (name, protocol, port) triples."""
    return tuple(sorted((str(p["name"]), str(p["protocol"]), int(str(p["port"]))) for p in ports))


def policy_ports(triples: Iterable[PortTriple]) -> tuple[NamedPort, ...]:
    return tuple(NamedPort(name, PROTOCOL_NUMBERS[proto.lower()], number) for name, proto, number in triples)


def expected_chains(docs: Iterable[Doc]) -> set[str]:
    chains: set[str] = set()
    for doc in docs:
        pol = policy_from_doc(doc)
        chains.update(policy_chain(pol.id, direction) for direction in pol.types)
    return chains


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.3) -> bool:
    return waiting.eventually(predicate, timeout, interval)


def all_allowed(probes: Sequence[Probe]) -> Matrix:
    return {pr: {(s, d): True for s in POD_KEYS for d in POD_KEYS} for pr in probes}


def render(table: dict[tuple[str, str], bool]) -> str:
    """k8s netpol e2e layout: rows are sources, columns destinations, ``.``/``X``."""
    lines = ["-\t" + "\t".join(POD_KEYS)]
    for src in POD_KEYS:
        lines.append(src + "\t" + "\t".join("." if table[(src, dst)] else "X" for dst in POD_KEYS))
    return "\n".join(lines)


def diff_report(name: str, got: Matrix, expected: Matrix, oracle: Matrix) -> str:
    parts = [f"case {name}"]
    for pr in got:
        if got[pr] == expected[pr] == oracle[pr]:
            continue
        parts.append(f"--- {pr[0]}/{pr[1]} lab:\n{render(got[pr])}")
        parts.append(f"--- {pr[0]}/{pr[1]} expected (truth table):\n{render(expected[pr])}")
        if oracle[pr] != expected[pr]:
            parts.append(f"--- {pr[0]}/{pr[1]} evaluator:\n{render(oracle[pr])}")
        wrong = sorted(k for k in got[pr] if got[pr][k] != expected[pr][k])
        parts.append("differs at: " + ", ".join(f"{s}->{d}" for s, d in wrong))
    return "\n".join(parts)
