"""Publishing WireGuard keys on the Node in a real etcd: each family's field, the other left alone.

``node_key_publisher`` is what the agent's two WireGuard drivers write through: ``wireguard.cali``'s
key as ``status.wireguardPublicKey``, ``wg-v6.cali``'s as ``status.wireguardPublicKeyV6`` (Calico's
fields). The calc then reads both back into one snapshot (what the peers' agents see).
"""

from __future__ import annotations

import base64

from felixpy.calc.wireguard import WireguardCalc
from felixpy.dataplane.wireguard_driver import node_key_publisher
from felixpy.datastore.resources import KVBackend
from felixpy.resources.node import Node, NodeBGPSpec

K4, K6 = (base64.b64encode(bytes([i]) * 32).decode() for i in (4, 6))


def test_each_family_publishes_and_clears_its_own_field(etcd_backend: KVBackend) -> None:
    etcd_backend.create(Node.model_validate({"metadata": {"name": "node1"}, "spec": {
        "bgp": {"ipv4Address": "10.99.1.10/24", "ipv6Address": "fd00:99::10/64"}}}))
    v4, v6 = node_key_publisher(etcd_backend, "node1"), node_key_publisher(etcd_backend, "node1", ipv6=True)
    v4(K4)
    v6(K6)
    status = etcd_backend.get(Node, "node1").status
    assert status is not None and (status.wireguard_public_key, status.wireguard_public_key_v6) == (K4, K6)
    calc = WireguardCalc()
    calc.on_node("node1", etcd_backend.get(Node, "node1"))
    (u,) = calc.flush()
    n = u.nodes[0]
    assert (n.ip, n.public_key, n.ip6, n.public_key_v6) == ("10.99.1.10", K4, "fd00:99::10", K6)
    v6(None)  # wireguardEnabledV6 turned off: only the IPv6 key goes
    status = etcd_backend.get(Node, "node1").status
    assert status is not None and (status.wireguard_public_key, status.wireguard_public_key_v6) == (K4, None)
    v6(None)  # already clear: no write
    assert etcd_backend.get(Node, "node1").status.wireguard_public_key == K4  # type: ignore[union-attr]
    node_key_publisher(etcd_backend, "gone", ipv6=True)(K6)  # no such Node: nothing written, no error


def test_kubernetes_datastore_keeps_both_keys_in_calicos_node_annotations(kube_api) -> None:  # type: ignore[no-untyped-def]
    """Kubernetes mode: the keys and WireGuard device addresses are annotations on the k8s Node,
    under Calico's names (projectcalico.org/WireguardPublicKey, ...V6,
    IPv4/IPv6WireguardInterfaceAddr); a BGP field written later (register_node) leaves them be."""
    from felixpy.datastore.kubernetes import KubernetesBackend

    backend = KubernetesBackend.for_url(kube_api.url)
    kube_api.store.create("nodes", None, {"metadata": {"name": "node1", "annotations": {
        "projectcalico.org/IPv6WireguardInterfaceAddr": "fd00:245::1"}}})
    node_key_publisher(backend, "node1")(K4)
    node_key_publisher(backend, "node1", ipv6=True)(K6)
    ann = kube_api.store.get("nodes", None, "node1")["metadata"]["annotations"]
    assert ann["projectcalico.org/WireguardPublicKey"] == K4
    assert ann["projectcalico.org/WireguardPublicKeyV6"] == K6
    node = backend.get(Node, "node1")
    assert node.spec.wireguard is not None
    assert str(node.spec.wireguard.interface_ipv6_address) == "fd00:245::1"
    bgp = NodeBGPSpec.model_validate({"ipv6Address": "fd00:99::10/64"})
    node.spec = node.spec.model_copy(update={"bgp": bgp})
    backend.update(node)
    calc = WireguardCalc()
    calc.on_node("node1", backend.get(Node, "node1"))
    (u,) = calc.flush()
    n = u.nodes[0]
    assert (n.public_key, n.public_key_v6, n.ip6, n.interface_addr_v6) == (K4, K6, "fd00:99::10",
                                                                          "fd00:245::1")
    node_key_publisher(backend, "node1", ipv6=True)(None)
    ann = kube_api.store.get("nodes", None, "node1")["metadata"]["annotations"]
    assert "projectcalico.org/WireguardPublicKeyV6" not in ann
    assert ann["projectcalico.org/WireguardPublicKey"] == K4
