"""The BGP view on a 2-node lab (``felixpy-lab``: real agents, etcd, ExaBGP, pods): the agent's
``/metrics`` carries the per-session BGP families, and ``felixctl node routes`` / ``node status
--detail`` on a node show what its peer sent, what won, what was advertised and what is in the
kernel — all read from the running agent."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from felixpy.lab.testing import LabCLI, missing_prerequisites
from tests.fixtures import waiting

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SCRAPE = (
    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9091/metrics', timeout=5).read().decode())"
)


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    waiting.wait_for(check, what, timeout, every=0.5)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample (labels in any order), None when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        sample, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if sample.split("{")[0] == name and got == labels:
            return float(value)
    return None


NODE_STATUS = """apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata:
  name: node1-status
spec:
  node: node1
  classes: [Agent, BGP, Routes]
  updatePeriodSeconds: 2
"""


def test_metrics_and_node_routes_on_a_two_node_lab(tmp_path: Path) -> None:
    with LabCLI.unique("bgpv") as lab:
        lab.ok("up", "--nodes", "2", "--timeout", "120", timeout=200)
        for i, node in enumerate(["node1", "node2"]):
            lab.ok("pod", "add", f"x/p{i}", "--node", node, timeout=60)
        status = lab.status()
        address = {n["name"]: n["address"] for n in status["nodes"]}
        block = {p["node"]: str(ipaddress.ip_network(f"{p['ip']}/26", strict=False)) for p in status["pods"]}
        peer = address["node2"]

        def routes() -> dict[str, object]:
            out = lab.run("ctl", "--node", "node1", "--", "node", "routes", "-o", "json", timeout=60)
            return json.loads(out.stdout) if out.returncode == 0 else {}

        def received_best() -> bool:
            doc = routes()
            got = {r["prefix"]: r["status"] for p in doc.get("peers", []) for r in p["received"]}  # type: ignore[attr-defined,index]
            return got.get(block["node2"]) == "best"

        wait_for(received_best, f"node2's block {block['node2']} received and best at node1")
        doc = routes()
        (view,) = doc["peers"]  # type: ignore[index]
        assert view["peer"] == peer
        assert block["node1"] in [a["prefix"] for a in view["advertised"]]
        kernel = {k["prefix"]: k for k in doc["kernel"]}  # type: ignore[attr-defined]
        assert kernel[block["node2"]]["from"] == [peer]
        table = lab.ok("ctl", "--node", "node1", "--", "node", "routes", timeout=60)
        assert f"Routes received from {peer}" in table and "Kernel routes installed by felixpy's BGP" in table
        detail = lab.ok("ctl", "--node", "node1", "--", "node", "status", "--detail", timeout=60)
        assert f"Peer {peer}" in detail and "Times Established:" in detail, detail
        assert re.search(r"Hold time:\s+\d+s", detail), detail
        assert re.search(r"Routes:\s+received [1-9]", detail), detail

        # /metrics of the running agent: every BGP family, with this session's values
        def scrape() -> str:
            return lab.ok("exec", "node1", "--", "python3", "-c", SCRAPE, timeout=30)

        wait_for(lambda: (metric(scrape(), "felixpy_bgp_prefixes_accepted", peer=peer) or 0) >= 1,
                 "the accepted prefix counted")  # fmt: skip
        text = scrape()
        assert metric(text, "felixpy_bgp_sessions", state="Established") == 1.0, text
        assert metric(text, "felixpy_bgp_sessions", state="Idle") == 0.0
        assert metric(text, "felixpy_bgp_session_up", peer=peer) == 1.0
        assert (metric(text, "felixpy_bgp_session_established_total", peer=peer) or 0) >= 1
        changed = metric(text, "felixpy_bgp_session_last_change_timestamp_seconds", peer=peer)
        assert changed is not None and abs(changed - time.time()) < 3600
        received = metric(text, "felixpy_bgp_prefixes_received", peer=peer)
        assert received is not None and received >= 1
        assert (metric(text, "felixpy_bgp_prefixes_advertised", peer=peer) or 0) >= 1
        for family in ("felixpy_bgp_prefixes_rejected", "felixpy_bgp_routes_refused_total"):
            assert f"# TYPE {family.removesuffix('_total')}" in text, family

        # CalicoNodeStatus naming node1: its agent fills it in, Calico's shape
        manifest = tmp_path / "cns.yaml"
        manifest.write_text(NODE_STATUS)
        lab.ok("ctl", "--", "apply", "-f", str(manifest), timeout=60)

        def node_status() -> dict[str, Any]:
            out = lab.run("ctl", "--", "get", "caliconodestatus", "node1-status", "-o", "json", timeout=60)
            return (json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}

        def peer_listed() -> bool:
            peers = node_status().get("bgp", {}).get("peersV4", [])
            return any(p["peerIP"] == peer and p["state"] == "Established" for p in peers)

        wait_for(peer_listed, "node1's CalicoNodeStatus lists node2 Established")
        status = node_status()
        assert status["agent"]["birdV4"]["state"] == "Ready"
        assert status["agent"]["birdV4"]["routerID"] == address["node1"]
        assert status["bgp"]["numberEstablishedV4"] == 1 and status["bgp"]["peersV4"][0]["type"] == "NodeMesh"
        fib = [r for r in status["routes"]["routesV4"] if r["type"] == "FIB"]
        assert {
            "destination": block["node2"],
            "learnedFrom": {"sourceType": "NodeMesh", "peerIP": peer},
        }.items() <= {
            k: v for r in fib if r["destination"] == block["node2"] for k, v in r.items()
        }.items(), fib
        first = status["lastUpdated"]
        wait_for(lambda: node_status().get("lastUpdated") != first, "a refresh after updatePeriodSeconds", 30)
