"""Workload anti-spoofing (``policy.rpf``): raw ``cali-PREROUTING``'s strict RPF check and
``cali-rpf-skip`` as the compiler renders them (v4 and v6, exact), the ``workloadSourceSpoofing``
gate, the incremental updates, the resource fields' validation and the Kubernetes annotation."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.calc.policy_stage import PolicyCalc
from felixpy.kube.convert import pod_to_wep
from felixpy.resources import ResourceError
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.parse import parse_document
from felixpy.runtime.config_watch import invalid_fields
from felixpy.runtime.settings import FelixParams
from policy.chain_names import MARK_ACCEPT, MARK_FROM_WORKLOAD, MARK_PASS, MARK_SCRATCH1
from policy.chains import ChainConfig
from policy.compile_hostraw import raw_prerouting_chain
from policy.compiler import PolicyCompiler
from policy.convert import endpoint_from_wep
from policy.entities import Endpoint
from tests.unit.test_policy_hostraw import hep, untracked

V3 = "projectcalico.org/v3"
SPOOF = "spec.allowSpoofedSourcePrefixes"
FROM_WL = "-m mark --mark 0x40000/0x40000"
RPF_DROP = (f"{FROM_WL} -m rpfilter --validmark --invert", "-j DROP")
ANY = ChainConfig(workload_source_spoofing="Any")
ANY6 = ChainConfig(workload_source_spoofing="Any", version=6)


def rules(c: PolicyCompiler, name: str) -> list[tuple[str, str]]:
    return [(r.match, r.action) for r in c.chains()[("raw", name)].rules]


def wl(name: str, iface: str, *prefixes: str, node: str = "n1", ips: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(f"ns/{name}", "ns", {"app": name}, ips or ("10.65.0.9",), iface=iface, node=node,
                    profiles=("kns.ns",), allowed_source_prefixes=prefixes)  # fmt: skip


@pytest.mark.parametrize("version", [4, 6])
def test_raw_prerouting_marks_workload_packets_and_drops_those_failing_strict_rpf(version: int) -> None:
    c = PolicyCompiler("n1", config=ChainConfig(version=version))
    assert rules(c, "cali-PREROUTING") == [
        ("", "-j MARK --set-xmark 0x0/0xf0000"),  # every bit we use cleared first
        ("-i cali+", "-j MARK --set-xmark 0x40000/0x40000"),
        (FROM_WL, "-j cali-rpf-skip"),
        RPF_DROP,  # the same rule for iptables and ip6tables: no DHCPv6/NDP exception needed
    ]
    assert rules(c, "cali-rpf-skip") == []
    assert [(h.table, h.chain, h.rule.action) for h in c.hooks() if h.table == "raw"] == [
        ("raw", "PREROUTING", "-j cali-PREROUTING")
    ]
    assert {k for k in c.chains() if k[0] == "raw"} == {("raw", "cali-PREROUTING"), ("raw", "cali-rpf-skip")}


def test_every_interface_prefix_is_marked_and_the_untracked_part_skips_workloads() -> None:
    chain = raw_prerouting_chain(ChainConfig(iface_prefixes=("cali", "tap")), untracked=True)
    assert [(r.match, r.action) for r in chain.rules] == [
        ("", "-j MARK --set-xmark 0x0/0xf0000"),
        ("-i cali+", "-j MARK --set-xmark 0x40000/0x40000"),
        ("-i tap+", "-j MARK --set-xmark 0x40000/0x40000"),
        (FROM_WL, "-j cali-rpf-skip"),
        RPF_DROP,
        ("-m mark --mark 0x0/0x40000", "-j cali-from-host-endpoint"),
        ("-m mark --mark 0x10000/0x10000", "-j ACCEPT"),
    ]


def test_from_workload_bit_is_calicos_scratch0_and_apart_from_the_long_lived_bits() -> None:
    assert MARK_FROM_WORKLOAD == 0x40000  # classic Calico scratch0, "from workload" in raw
    assert not MARK_FROM_WORKLOAD & (MARK_ACCEPT | MARK_PASS | MARK_SCRATCH1)
    c = PolicyCompiler("n1")
    forward = c.chains()[("filter", "cali-FORWARD")].rules[0]
    assert forward.action == "-j MARK --set-xmark 0x0/0xe0000"  # cleared before filter policy runs


def test_allowed_prefixes_of_local_workloads_per_ip_version() -> None:
    v4, v6 = PolicyCompiler("n1", config=ANY), PolicyCompiler("n1", config=ANY6)
    for c in (v4, v6):
        c.update_endpoint(wl("b", "calib", "10.70.0.0/16", "fd00:70::/64", "10.9.9.9/32"))
        c.update_endpoint(wl("a", "calia", "192.168.5.0/24"))
        c.update_endpoint(wl("far", "calif", "10.80.0.0/16", node="n2"))  # another node's: not here
        c.update_endpoint(wl("plain", "calip"))
    assert rules(v4, "cali-rpf-skip") == [
        ("-i calia -s 192.168.5.0/24", "-j ACCEPT"),
        ("-i calib -s 10.9.9.9/32", "-j ACCEPT"),
        ("-i calib -s 10.70.0.0/16", "-j ACCEPT"),
    ]
    assert rules(v6, "cali-rpf-skip") == [("-i calib -s fd00:70::/64", "-j ACCEPT")]
    assert v4.spoofing_ignored() == {} == v6.spoofing_ignored()
    assert rules(v4, "cali-PREROUTING")[-1] == RPF_DROP  # the check itself is unchanged


def test_disabled_workload_source_spoofing_ignores_the_field() -> None:
    for cfg in (ChainConfig(), ChainConfig(version=6)):
        c = PolicyCompiler("n1", config=cfg)
        c.update_endpoint(wl("b", "calib", "10.70.0.0/16", "fd00:70::/64"))
        assert rules(c, "cali-rpf-skip") == []
        assert rules(c, "cali-PREROUTING")[-1] == RPF_DROP
        assert c.spoofing_ignored() == {"ns/b": ("10.70.0.0/16", "fd00:70::/64")}
        c.update_endpoint(wl("b", "calib"))
        assert c.spoofing_ignored() == {}


def test_rpf_skip_follows_endpoint_updates_incrementally() -> None:
    c = PolicyCompiler("n1", config=ANY)
    c.update_endpoint(wl("a", "calia"))
    c.dirty()
    c.update_endpoint(wl("a", "calia", "10.70.0.0/16"))
    changes = c.dirty()
    assert set(changes.chains) == {("raw", "cali-rpf-skip")} and changes.hooks is None
    assert rules(c, "cali-rpf-skip") == [("-i calia -s 10.70.0.0/16", "-j ACCEPT")]
    c.update_endpoint(Endpoint("ns/a", "ns", {"app": "b"}, ("10.65.0.9",), iface="calia", node="n1",
                               profiles=("kns.ns",), allowed_source_prefixes=("10.70.0.0/16",)))  # fmt: skip
    assert ("raw", "cali-rpf-skip") not in c.dirty().chains  # labels changed, prefixes did not
    c.update_endpoint(wl("a", "calix", "10.70.0.0/16"))  # the interface changed
    assert rules(c, "cali-rpf-skip") == [("-i calix -s 10.70.0.0/16", "-j ACCEPT")]
    c.remove_endpoint("ns/a")
    changes = c.dirty()
    assert changes.chains[("raw", "cali-rpf-skip")].rules == ()
    assert ("raw", "cali-rpf-skip") not in changes.removed_chains  # the chain stays: PREROUTING jumps to it


def test_host_endpoints_and_untracked_policy_leave_the_workload_check_alone() -> None:
    c = PolicyCompiler("n1", config=ANY)
    c.update_endpoint(wl("a", "calia", "10.70.0.0/16"))
    c.update_endpoint(hep())
    c.update_policy(untracked("unt", ingress=[{"action": "Deny", "protocol": "UDP"}]))
    pre = rules(c, "cali-PREROUTING")
    assert pre[:4] == [
        ("", "-j MARK --set-xmark 0x0/0xf0000"),
        ("-i cali+", "-j MARK --set-xmark 0x40000/0x40000"),
        (FROM_WL, "-j cali-rpf-skip"),
        RPF_DROP,
    ]
    assert pre[4] == ("-m mark --mark 0x0/0x40000", "-j cali-from-host-endpoint")
    assert rules(c, "cali-rpf-skip") == [("-i calia -s 10.70.0.0/16", "-j ACCEPT")]
    c.remove_policy("gnp/unt")
    assert rules(c, "cali-PREROUTING") == pre[:4]


# ------------------------------------------------------------------------------ resources


def wep_doc(**spec: Any) -> dict[str, Any]:
    base = {"node": "n1", "interfaceName": "cali1234", "ipNetworks": ["10.0.0.1/32"]}
    meta = {"name": "n1-k8s-pod-eth0", "namespace": "default"}
    return {"apiVersion": V3, "kind": "WorkloadEndpoint", "metadata": meta, "spec": {**base, **spec}}


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (wep_doc(allowSpoofedSourcePrefixes=["10.0.0.0/33"]), f"{SPOOF}[0]", "not a valid"),
        (wep_doc(allowSpoofedSourcePrefixes=["10.1.0.0/16", "10.1.2.3"]), f"{SPOOF}[1]", "prefix length"),
        ({"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": "default"},
          "spec": {"workloadSourceSpoofing": "Enabled"}}, "spec.workloadSourceSpoofing", "'Any'"),
    ],
    ids=["wep-bad-cidr", "wep-bare-address", "felixconfig-bad-value"],
)  # fmt: skip
def test_validation_names_the_field(document: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ResourceError) as info:
        parse_document(document)
    assert info.value.field == field, str(info.value)
    assert words in info.value.reason, str(info.value)


def test_wep_field_reaches_the_policy_endpoint() -> None:
    wep = parse_document(wep_doc(allowSpoofedSourcePrefixes=["10.70.0.0/16", "fd00:70::/64"]))
    assert isinstance(wep, WorkloadEndpoint)
    ep = endpoint_from_wep(wep)
    assert ep.allowed_source_prefixes == ("10.70.0.0/16", "fd00:70::/64")
    dumped = wep.model_dump(by_alias=True)["spec"]["allowSpoofedSourcePrefixes"]
    assert dumped == ["10.70.0.0/16", "fd00:70::/64"]


def test_felix_parameter_default_env_and_config() -> None:
    assert FelixParams().workloadSourceSpoofing == "Disabled"  # Calico's default
    assert FelixParams.resolve({"FELIX_WORKLOADSOURCESPOOFING": "Any"}).workloadSourceSpoofing == "Any"
    assert FelixParams.resolve({}, None, {"workloadSourceSpoofing": "Any"}).workloadSourceSpoofing == "Any"
    assert list(invalid_fields({}, {"workloadSourceSpoofing": "any"}, None)) == ["workloadSourceSpoofing"]


def pod(annotation: str | None) -> dict[str, Any]:
    ann = {"cni.projectcalico.org/podIP": "10.65.0.9/32"}
    if annotation is not None:
        ann["cni.projectcalico.org/allowedSourcePrefixes"] = annotation
    return {"metadata": {"name": "p", "namespace": "default", "annotations": ann},
            "spec": {"nodeName": "n1", "containers": []}, "status": {"phase": "Running"}}  # fmt: skip


@pytest.mark.parametrize(
    ("annotation", "prefixes"),
    [
        (None, []),
        ('["10.70.0.0/16", "fd00:70::/64"]', ["10.70.0.0/16", "fd00:70::/64"]),
        ('["10.70.1.5/16"]', ["10.70.0.0/16"]),  # host bits dropped, as Calico's conversion does
        ('["10.70.0.0/16", "nonsense"]', []),  # one bad entry: no exception at all (fails closed)
        ('["10.70.0.5"]', []),  # a bare address is not a CIDR
        ("10.70.0.0/16", []),  # not JSON
    ],
)
def test_kubernetes_annotation_fills_the_field(annotation: str | None, prefixes: list[str]) -> None:
    wep = pod_to_wep(pod(annotation))
    assert wep is not None and wep.spec.allow_spoofed_source_prefixes == prefixes


def test_agent_logs_endpoints_whose_prefixes_are_ignored() -> None:
    c = PolicyCompiler("n1")
    calc = PolicyCalc([c])
    wep = parse_document(wep_doc(allowSpoofedSourcePrefixes=["10.70.0.0/16"]))
    with capture_logs() as logs:
        for _ in range(2):
            calc.on_resource("WorkloadEndpoint", ("default", "n1-k8s-pod-eth0"), wep)
            calc.flush()
    logged = [e for e in logs if e["event"] == "policy.source_spoofing_ignored"]
    assert len(logged) == 1 and logged[0]["endpoints"] == {"default/n1-k8s-pod-eth0": ["10.70.0.0/16"]}
    assert "workloadSourceSpoofing: Any" in logged[0]["reason"]
