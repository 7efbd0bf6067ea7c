"""``felixpy-lab demo``: the whole story on one screen, then teardown (``--keep`` leaves it up).

3 nodes in 2 racks behind a BIRD top-of-rack router (eBGP, AS per rack), 6 pods in the
namespaces ``x`` and ``y``, BGP sessions per node, each node's routes, the connectivity
matrix, then a Kubernetes NetworkPolicy that isolates ``y`` (ingress only from ``y``) and
the matrix again.
"""

from __future__ import annotations

import re
import time

from felixpy.lab import agents, bird, ctl, pods, probe, state
from felixpy.lab.down import down
from felixpy.lab.layout import LabError, LabNames
from felixpy.lab.plan import Options
from felixpy.lab.shell import Progress, ns_run
from felixpy.lab.state import LabState
from felixpy.lab.up import up

NAMESPACES = ("x", "y")
PODS = (("a", "node1"), ("b", "node2"), ("c", "node3"))
PORTS = [80, 81]
PROTOS = ["tcp"]
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-same-namespace", "namespace": "y"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]},
}
_PROTO = re.compile(r"\bproto (80|81)\b")
_TAGS = {"80": "<- felixpy (local)", "81": "<- felixpy (BGP)"}


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)), flush=True)


def _pods(names: LabNames, progress: Progress) -> None:
    for ns in NAMESPACES:
        pods.add_namespace(names, ns, {"ns": ns})
    for ns in NAMESPACES:
        for pod, node in PODS:
            with progress.step(f"pod {ns}/{pod} on {node} (felixpy-cni ADD, serving {PORTS})"):
                rec = pods.add(names, f"{ns}/{pod}", node=node, labels={"pod": pod}, serve=PORTS)
                progress.say(f"  {ns}/{pod} -> {rec.ip}")


def _bgp(names: LabNames, st: LabState) -> None:
    _banner("BGP sessions (felixctl node status, in each node's namespace)")
    for node in st.plan.nodes:
        text, rows = agents.node_status(names, st.plan, node)
        print(f"-- {node.name} (AS {node.asn}, rack {node.rack}): {agents.established(rows)} Established")
        print(text.rstrip())
    if st.plan.options.tor == "bird":
        print("-- top-of-rack BIRD (birdc show protocols, in the fabric namespace)")
        print(bird.birdc(names, "show", "protocols").rstrip())


def highlight_routes(text: str) -> str:
    """Mark the routes felixpy installed (proto 80 local, proto 81 learned over BGP)."""
    out = []
    for line in text.splitlines():
        m = _PROTO.search(line)
        out.append(f"{line.rstrip():<62} {_TAGS[m.group(1)]}" if m else line.rstrip())
    return "\n".join(out)


def _routes(st: LabState) -> None:
    _banner("routes (ip route, in each node's namespace)")
    for node in st.plan.nodes:
        print(f"-- {node.name} {node.cidr}")
        print(highlight_routes(ns_run(node.netns, "ip", "route")))


def _matrix(st: LabState, title: str) -> list[probe.Result]:
    _banner(title)
    t0 = time.monotonic()
    results = probe.matrix(st, PORTS, PROTOS, timeout=1.0, parallel=2)
    keys = [probe.pod_key(p) for p in st.pods if p.ip]
    print(probe.format_tables(results, keys))
    print(f"({len(results)} probes in {time.monotonic() - t0:.1f}s; '.' connected, 'X' blocked; rows = from)")
    return results


def _expected_after_policy(r: probe.Result) -> bool:
    return not r.dst.startswith("y/") or r.src.startswith("y/")


def _policy(names: LabNames, st: LabState, timeout: float) -> bool:
    _banner("policy: networking.k8s.io/v1 NetworkPolicy y/allow-same-namespace (felixctl apply)")
    print(ctl.apply(names, st.plan.etcd_endpoint, [POLICY]).rstrip())
    deadline = time.monotonic() + timeout
    results: list[probe.Result] = []
    while time.monotonic() < deadline:
        results = probe.matrix(st, PORTS, PROTOS, timeout=1.0, parallel=2)
        if all(r.connected == _expected_after_policy(r) for r in results):
            break
        time.sleep(0.5)
    results = _matrix(st, "connectivity after the policy (x -> y blocked, y -> y and * -> x allowed)")
    wrong = [r for r in results if r.connected != _expected_after_policy(r)]
    print("policy enforced as expected" if not wrong else f"UNEXPECTED: {len(wrong)} probe(s) differ")
    return not wrong


def demo(names: LabNames, *, keep: bool = False, timeout: float = 120.0) -> int:
    progress = Progress()
    opts = Options(name=names.name, nodes=3, racks=2, tor="bird")
    try:
        _banner("up: 3 nodes, 2 racks, BIRD top-of-rack, etcd, felixpy node + ExaBGP on each node")
        up(opts, progress, timeout=timeout)
        _pods(names, progress)
        st = state.load(names)
        _bgp(names, st)
        _routes(st)
        before = _matrix(st, "connectivity (probe --matrix --ports 80,81 --proto tcp)")
        if not all(r.connected for r in before):
            print("note: not every pod pair connects before any policy")
        return 0 if _policy(names, st, timeout=30.0) else 1
    except LabError as exc:
        print(f"demo failed: {exc}")
        return 2
    finally:
        if keep:
            print(f"\nlab {names.name} left up: 'felixpy-lab --name {names.name} status', then 'down'")
        else:
            _banner("down")
            down(names, progress)
