"""The lab's pure parts, no root needed: address plan, resources, bird.conf, tables, schema."""

from __future__ import annotations

import ipaddress

import jsonschema
import pytest

from felixpy.lab import bird, manifests, probe
from felixpy.lab.agents import expected_sessions, parse_node_status
from felixpy.lab.demo import highlight_routes
from felixpy.lab.layout import LabError, LabNames, check_name
from felixpy.lab.plan import Options, make_plan
from felixpy.lab.pods import parse_labels, parse_pod_ref
from felixpy.lab.state import LabState, PodRecord
from felixpy.lab.status import schema, to_json


def test_names_cannot_prefix_each_other() -> None:
    assert check_name("fxl") == "fxl"
    for bad in ("fxl-a", "Fxl", "1ab", "toolongname", "fpt", ""):
        with pytest.raises(LabError):
            check_name(bad)
    assert LabNames("fxl").owns_netns("fxl-node1")
    assert not LabNames("fxl").owns_netns("fxl2-node1")


def test_plan_single_segment() -> None:
    plan = make_plan(Options(name="t", nodes=2))
    assert [(n.name, n.address, n.rack, n.gateway) for n in plan.nodes] == [
        ("node1", "10.99.1.10", 1, "10.99.1.1"), ("node2", "10.99.1.11", 1, "10.99.1.1")]
    assert plan.etcd_endpoint == "http://10.98.0.2:2379"


def test_plan_racks_are_contiguous_and_rrs_spread() -> None:
    plan = make_plan(Options(name="t", nodes=5, racks=2, route_reflectors=2))
    assert [(n.name, n.rack) for n in plan.nodes] == [
        ("node1", 1), ("node2", 1), ("node3", 1), ("node4", 2), ("node5", 2), ("rr1", 1), ("rr2", 2)]
    addrs = [ipaddress.ip_address(n.address) for n in plan.nodes]
    assert len(set(addrs)) == len(addrs)
    assert all(ipaddress.ip_address(n.address) in ipaddress.ip_network(f"10.99.{n.rack}.0/24")
               for n in plan.nodes)


@pytest.mark.parametrize("opts", [
    Options(name="t", nodes=0),
    Options(name="t", nodes=2, racks=3),
    Options(name="t", pool="10.99.0.0/16"),
    Options(name="t", pool="8.8.0.0/16"),
    Options(name="t", cross_subnet=True),
    Options(name="t", tor="bird", route_reflectors=1),
])
def test_plan_rejects_bad_options(opts: Options) -> None:
    with pytest.raises(LabError):
        make_plan(opts)


def test_plan_survives_json_round_trip() -> None:
    plan = make_plan(Options(name="t", nodes=3, racks=2, tor="bird"))
    pod = PodRecord("x", "a", "node1", "t-pod-x-a", {"app": "a"}, "10.244.0.1")
    st = LabState(name="t", plan=plan, pods=[pod])
    again = LabState.from_json(st.to_json())
    assert again.plan == plan and again.pods == st.pods


def test_manifests_for_route_reflectors() -> None:
    plan = make_plan(Options(name="t", nodes=2, route_reflectors=1))
    docs = manifests.cluster_resources(plan)
    kinds = [d["kind"] for d in docs]
    assert kinds == ["IPPool", "BGPConfiguration", "Node", "Node", "Node", "BGPPeer"]
    assert docs[1]["spec"]["nodeToNodeMeshEnabled"] is False
    rr = docs[4]
    assert rr["metadata"]["labels"]["route-reflector"] == "true"
    assert rr["spec"]["bgp"]["routeReflectorClusterID"] == "244.0.0.1"
    assert docs[5]["spec"] == {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}


def test_manifests_for_encap_and_tor() -> None:
    plan = make_plan(Options(name="t", nodes=2, racks=2, tor="bird", encap="vxlan", cross_subnet=True))
    pool, conf, *rest = manifests.cluster_resources(plan)
    assert (pool["spec"]["vxlanMode"], pool["spec"]["ipipMode"]) == ("CrossSubnet", "Never")
    assert conf["spec"]["nodeToNodeMeshEnabled"] is False
    peers = [d for d in rest if d["kind"] == "BGPPeer"]
    assert [p["spec"]["peerIP"] for p in peers] == ["10.99.1.1", "10.99.2.1"]
    assert {d["spec"]["bgp"]["asNumber"] for d in rest if d["kind"] == "Node"} == {65101, 65102}


def test_bird_config_overrides_the_rack_as() -> None:
    plan = make_plan(Options(name="t", nodes=2, racks=2, tor="bird"))
    conf = bird.render_config(plan, "/tmp/bird.log")
    assert "protocol bgp n_node1 {" in conf and "neighbor 10.99.2.10 as 65102;" in conf
    assert "bgp_path.delete(65101)" in conf and "local 10.99.2.1 as 65000;" in conf


def test_expected_sessions() -> None:
    mesh = make_plan(Options(name="t", nodes=4))
    assert expected_sessions(mesh, mesh.nodes[0]) == 3
    rr = make_plan(Options(name="t", nodes=3, route_reflectors=2))
    assert [expected_sessions(rr, n) for n in rr.nodes] == [2, 2, 2, 4, 4]


def test_pod_refs_and_labels() -> None:
    assert parse_pod_ref("x/a") == ("x", "a")
    assert parse_pod_ref("a") == ("default", "a")
    assert parse_labels("app=a, tier=web") == {"app": "a", "tier": "web"}
    for bad in ("x/", "x/a b", "x/a;rm"):
        with pytest.raises(LabError):
            parse_pod_ref(bad)
    with pytest.raises(LabError):
        parse_labels("novalue")


def _result(src: str, dst: str, ok: bool, port: int = 80) -> probe.Result:
    return probe.Result(src, dst, "10.244.0.1", port, "tcp", ok, 1.0, "")


def test_truth_table_rows_are_from_columns_are_to() -> None:
    results = [_result("x/a", "x/a", True), _result("x/a", "x/b", False),
               _result("x/b", "x/a", True), _result("x/b", "x/b", True)]
    text = probe.format_tables(results, ["x/a", "x/b"])
    lines = [line.split() for line in text.splitlines()]
    assert lines == [["TCP/80", "x/a", "x/b"], ["x/a", ".", "X"], ["x/b", ".", "."]]
    doc = probe.matrix_json(results, ["x/a", "x/b"])
    assert doc["tables"]["80/tcp"]["x/a"] == {"x/a": True, "x/b": False}


def test_parse_calicoctl_style_table() -> None:
    text = ("+--------------+-------------------+-------+----------+-------------+\n"
            "| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n"
            "+--------------+-------------------+-------+----------+-------------+\n"
            "| 10.99.1.11   | node-to-node mesh | up    | 05:39:06 | Established |\n"
            "+--------------+-------------------+-------+----------+-------------+\n")
    assert parse_node_status(text) == [{"peer": "10.99.1.11", "type": "node-to-node mesh", "state": "up",
                                        "since": "05:39:06", "info": "Established"}]


def test_route_highlighting() -> None:
    text = "default via 10.99.1.1 dev eth0\n10.244.1.0/26 via 10.99.1.11 dev eth0 proto 81\n"
    out = highlight_routes(text).splitlines()
    assert out[0] == "default via 10.99.1.1 dev eth0"
    assert out[1].endswith("<- felixpy (BGP)")


def test_status_json_matches_schema() -> None:
    plan = make_plan(Options(name="t", nodes=2, route_reflectors=1))
    st = LabState(name="t", plan=plan, phase="up",
                  pods=[PodRecord("x", "a", "node1", "t-pod-x-a", {"app": "a"}, "10.244.0.1", serve=[80])])
    doc = to_json(LabNames("t"), st)
    jsonschema.validate(doc, schema())
    assert doc["nodes"][2]["role"] == "route-reflector"
    doc["nodes"][0]["role"] = "master"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema())
