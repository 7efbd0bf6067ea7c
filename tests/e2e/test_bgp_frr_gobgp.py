"""Interop with two more BGP implementations from Debian, as a datacenter fabric would run them:
FRR's bgpd and GoBGP, each an eBGP peer of one felixpy node (BGPService with its real ExaBGP).

Both directions are checked: the peer learns the node's block with the node as next hop and our AS in
the path, and the peer's pod-pool prefix is installed in the node's kernel with protocol 81, while its
prefix outside every pool is not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPPeer, BGPPeerSpec
from tests.e2e.test_bgp_exabgp import POOL, Segment, kernel_routes, node, services, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp
FRR_BGPD = "/usr/lib/frr/bgpd"

FRR_CONF = """frr defaults traditional
hostname fabric
router bgp 65001
 bgp router-id 10.0.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.0.0.1 remote-as 64512
 address-family ipv4 unicast
  network 10.65.9.0/26
  network 192.0.2.0/24
 exit-address-family
"""

GOBGP_CONF = """[global.config]
  as = 65002
  router-id = "10.0.0.3"
  local-address-list = ["10.0.0.3"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.0.1"
    peer-as = 64512
"""


def peer(name: str, ip: str, asn: int) -> BGPPeer:
    return BGPPeer(metadata=ObjectMeta(name=name), spec=BGPPeerSpec(peer_ip=ip, as_number=asn))


def run_node(services: Callable[..., BGPService], ns: object, peers: list[BGPPeer]) -> BGPService:
    svc = services("n1", ns)
    svc.update(
        nodes=[node("n1", "10.0.0.1")],
        bgp_configs=[],
        peers=peers,
        pools=[POOL],
        local_blocks=["10.65.0.0/26"],
    )
    svc.start()
    return svc


def test_frr_ebgp_peer(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    if not Path(FRR_BGPD).exists() or shutil.which("vtysh") is None:
        print("skipping: FRR (bgpd, vtysh) is not installed")
        pytest.skip("FRR is not installed")
    seg = Segment(netns)
    ns_node, ns_frr = seg.attach("n1", "10.0.0.1/24"), seg.attach("frr", "10.0.0.2/24")
    (tmp_path / "frr.conf").write_text(FRR_CONF)
    frr = subprocess.Popen(
        ["ip", "netns", "exec", ns_frr.name, FRR_BGPD, "-Z", "-S", "-u", "root", "-g", "root",
         "-f", str(tmp_path / "frr.conf"), "-i", str(tmp_path / "bgpd.pid"), "--vty_socket", str(tmp_path),
         "-l", "10.0.0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def frr_routes() -> dict[str, object]:
        out = subprocess.run(
            ["ip", "netns", "exec", ns_frr.name, "vtysh", "--vty_socket", str(tmp_path), "-c",
             "show bgp ipv4 unicast json"], capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        try:
            return json.loads(out).get("routes", {})
        except ValueError:
            return {}

    svc = None
    try:
        svc = run_node(services, ns_node, [peer("frr", "10.0.0.2", 65001)])
        wait_for(
            lambda: "10.65.9.0/26 via 10.0.0.2 dev eth0" in kernel_routes(ns_node),
            "FRR's pool prefix in the node's kernel",
        )
        wait_for(lambda: "10.65.0.0/26" in frr_routes(), "the node's block in FRR")
        (path,) = frr_routes()["10.65.0.0/26"]
        assert path["nexthops"][0]["ip"] == "10.0.0.1"
        assert path["path"].split()[0] == "64512", "eBGP: the node's AS is first in the path"
        assert "192.0.2.0/24" not in kernel_routes(ns_node), "outside every pool: never installed"
        assert [(p.address, p.info) for p in svc.status()] == [("10.0.0.2", "Established")]
    except AssertionError:
        summary = subprocess.run(
            ["ip", "netns", "exec", ns_frr.name, "vtysh", "--vty_socket", str(tmp_path),
             "-c", "show bgp summary"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        print(f"FRR:\n{summary}\nnode routes:\n{kernel_routes(ns_node)}\nstatus: {svc and svc.status()}")
        raise
    finally:
        frr.kill()
        frr.wait(10)


def test_gobgp_ebgp_peer(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    if shutil.which("gobgpd") is None or shutil.which("gobgp") is None:
        print("skipping: GoBGP (gobgpd, gobgp) is not installed")
        pytest.skip("GoBGP is not installed")
    seg = Segment(netns)
    ns_node, ns_go = seg.attach("n1", "10.0.0.1/24"), seg.attach("go", "10.0.0.3/24")
    (tmp_path / "gobgp.toml").write_text(GOBGP_CONF)
    gobgpd = subprocess.Popen(
        ["ip", "netns", "exec", ns_go.name, "gobgpd", "-f", str(tmp_path / "gobgp.toml"), "-t", "toml",
         "--api-hosts", "127.0.0.1:50051"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def gobgp(*args: str) -> str:
        argv = ["ip", "netns", "exec", ns_go.name, "gobgp", "-u", "127.0.0.1", "-p", "50051", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout

    try:
        wait_for(lambda: gobgp("global").strip() != "", "gobgpd's API")
        gobgp("global", "rib", "add", "10.65.8.0/26", "-a", "ipv4")
        gobgp("global", "rib", "add", "0.0.0.0/0", "-a", "ipv4")
        run_node(services, ns_node, [peer("gobgp", "10.0.0.3", 65002)])
        wait_for(
            lambda: "10.65.8.0/26 via 10.0.0.3 dev eth0" in kernel_routes(ns_node),
            "GoBGP's pool prefix in the node's kernel",
        )
        wait_for(lambda: "10.65.0.0/26" in gobgp("global", "rib", "-a", "ipv4"), "the node's block in GoBGP")
        rib = json.loads(gobgp("global", "rib", "-a", "ipv4", "-j") or "{}")
        (path,) = rib["10.65.0.0/26"]
        hop = next(a["nexthop"] for a in path["attrs"] if "nexthop" in a)
        assert hop == "10.0.0.1"
        assert "default" not in kernel_routes(ns_node), "a default route is never imported unless configured"
    finally:
        gobgpd.kill()
        gobgpd.wait(10)
