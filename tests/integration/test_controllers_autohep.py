"""Auto host endpoints on a real etcd: `<node>-auto-hep` with the node's labels and addresses, kept in
step, removed when the node goes or autoCreate is turned off; HostEndpoints of others untouched."""

from __future__ import annotations

from felixpy.controllers import hostendpoints
from felixpy.controllers.hostendpoints import CREATED_BY, hep_name
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.node import Node


def nodes(backend) -> list[Node]:
    return backend.list(Node)[0]


def heps(backend) -> dict[str, HostEndpoint]:
    return {h.name: h for h in backend.list(HostEndpoint)[0]}


def test_auto_host_endpoints(etcd_kv, etcd_backend) -> None:
    b = etcd_backend
    b.create(
        Node.model_validate(
            {
                "metadata": {"name": "n1", "labels": {"zone": "a"}},
                "spec": {
                    "bgp": {"ipv4Address": "10.0.0.5/24", "ipv4IPIPTunnelAddr": "10.244.0.1"},
                    "ipv4VXLANTunnelAddr": "10.244.0.2",
                },
            }
        )
    )
    b.create(
        HostEndpoint.model_validate(
            {"metadata": {"name": "mine"}, "spec": {"node": "n1", "interfaceName": "eth1"}}
        )
    )

    def run(enabled: bool = True) -> int:
        return hostendpoints.sync(b, nodes(b), heps(b).values(), enabled=enabled)

    assert run() == 1
    hep = heps(b)["n1-auto-hep"]
    assert hep.metadata.labels == {"zone": "a", CREATED_BY: "calico-kube-controllers"}
    assert hep.spec.interface_name == "*" and hep.spec.profiles == ["projectcalico-default-allow"]
    assert sorted(map(str, hep.spec.expected_i_ps)) == ["10.0.0.5", "10.244.0.1", "10.244.0.2"]
    assert run() == 0, "a repeated pass writes nothing"
    n1 = b.get(Node, "n1")
    n1.metadata.labels = {"zone": "b"}
    b.update(n1)
    assert run() == 1 and heps(b)["n1-auto-hep"].metadata.labels["zone"] == "b"
    assert run(enabled=False) == 1
    assert set(heps(b)) == {"mine"}, "only auto HEPs are removed"
    run()
    b.delete(Node, "n1")
    assert run() == 1 and set(heps(b)) == {"mine"}, "the node's auto HEP goes with it"


def test_long_node_names_hashed() -> None:
    name = hep_name("n" * 300)
    assert len(name) <= 253 and name.endswith("-auto-hep") and name == name.lower()
    assert hep_name("node-1") == "node-1-auto-hep"
