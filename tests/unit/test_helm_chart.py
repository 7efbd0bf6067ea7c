"""The Helm chart, rendered by Helm's own template engine (helm-python-sdk embeds Helm's Go SDK),
for the default values and five value sets; every object checked against the Kubernetes schemas of a
current release (kubernetes-validate) or, for Calico kinds, against the chart's own CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's Go SDK) is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed"
)

from felixpy.kube import crds  # noqa: E402
from felixpy.resources.registry import kind_for  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "charts" / "felixpy"
K8S_VERSION = "1.33.0"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "etcd-tls": {
        "datastore": {
            "type": "etcdv3",
            "etcd": {
                "endpoints": "https://10.0.0.10:2379,https://10.0.0.11:2379",
                "tls": {"secretName": "etcd-tls"},
            },
        }
    },
    "route-reflectors": {
        "routeReflector": {
            "enabled": True,
            "replicas": 3,
            "nodeSelector": {"node-role.felixpy.io/route-reflector": "true"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "rr", "effect": "NoSchedule"}],
        }
    },
    "vxlan": {"ipPool": {"vxlanMode": "Always", "ipipMode": "Never"}, "bgp": {"enabled": False}},
    "external-peers": {
        "bgp": {
            "peers": [
                {
                    "name": "tor-rack1",
                    "peerIP": "192.0.2.1",
                    "asNumber": 65001,
                    "nodeSelector": "rack == 'rack1'",
                },
                {
                    "name": "tor-rack2",
                    "peerIP": "192.0.2.129:1179",
                    "asNumber": 65002,
                    "keepOriginalNextHop": True,
                },
            ]
        }
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values=values, name="felixpy", namespace="kube-system")
    return [
        d
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def crd_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for path in (CHART / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


def test_every_object_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    schemas = crd_schemas()
    assert docs, "the chart rendered nothing"
    for doc in docs:
        if doc["apiVersion"].startswith(crds.GROUP):
            jsonschema.validate(doc, schemas[doc["kind"]])
            # And the felixpy model accepts it as the v3 kind users write.
            model = kind_for("projectcalico.org/v3", doc["kind"])
            assert model is not None
            model.model_validate({**doc, "apiVersion": "projectcalico.org/v3"})
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_daemonset_runs_privileged_on_host_network_with_probes_and_cni_install(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    (ds,) = by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"], "the agent must run on every node, tainted or not"
    name, _ = rendered
    containers = {c["name"]: c for c in pod["containers"]}
    bfd_sidecar = name != "vxlan"  # on by default; not rendered without BGP
    assert list(containers) == (["felixpy-node", "felixpy-bfd"] if bfd_sidecar else ["felixpy-node"])
    agent = containers["felixpy-node"]
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/default-container"] == "felixpy-node"  # kubectl exec
    assert agent["command"] == ["felixpy", "node"]
    assert agent["securityContext"]["privileged"] is True
    agent_env = {e["name"]: e.get("value") for e in agent["env"]}
    if bfd_sidecar:
        bfd = containers["felixpy-bfd"]
        assert bfd["command"][0] == "felixpy-bfd" and agent_env["FELIXPY_BFD_EXTERNAL"] == "true"
        # least privilege: no capability at all (UDP above 1024, TTL per socket), read-only root
        assert bfd["securityContext"] == {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert bfd["resources"]["requests"] and [m["mountPath"] for m in bfd["volumeMounts"]] == [
            "/var/run/felixpy"
        ]
        assert "livenessProbe" not in bfd, "a liveness restart of the BFD daemon is the outage it avoids"
    else:
        assert "FELIXPY_BFD_EXTERNAL" not in agent_env
    assert agent["livenessProbe"]["httpGet"]["path"] == "/liveness"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readiness"
    assert agent["livenessProbe"]["httpGet"]["port"] == 9099
    (init,) = pod["initContainers"]
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    assert mounts == {"/host/opt/cni/bin", "/host/etc/cni/net.d"}
    host_paths = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    assert host_paths["cni-bin-dir"] == "/opt/cni/bin"
    assert host_paths["cni-net-dir"] == "/etc/cni/net.d"


def test_route_reflector_deployment_only_when_enabled_and_spread_over_dedicated_nodes() -> None:
    assert "felixpy-route-reflector" not in {d["metadata"]["name"] for d in by_kind(render({}), "Deployment")}
    docs = render(VALUE_SETS["route-reflectors"])
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "felixpy-route-reflector"]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    assert pod["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "node-role.felixpy.io/route-reflector": "true",
    }
    assert pod["tolerations"][0]["value"] == "rr"
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["ROUTE_REFLECTOR_CLUSTER_ID"] == "244.0.0.1"
    (config,) = by_kind(docs, "BGPConfiguration")
    assert config["spec"]["nodeToNodeMeshEnabled"] is False, "reflectors replace the full mesh"
    (peer,) = by_kind(docs, "BGPPeer")
    assert peer["spec"] == {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}


def test_etcd_mode_mounts_tls_secret_and_applies_bgp_resources_through_felixctl() -> None:
    docs = render(VALUE_SETS["etcd-tls"])
    (ds,) = by_kind(docs, "DaemonSet")
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATASTORE_TYPE"] == "etcdv3"
    assert env["ETCD_ENDPOINTS"] == "https://10.0.0.10:2379,https://10.0.0.11:2379"
    assert env["ETCD_CA_CERT_FILE"] == "/etc/felixpy/etcd-tls/ca.crt"
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["etcd-tls"]["secret"]["secretName"] == "etcd-tls"
    assert not [d for d in docs if d["apiVersion"].startswith(crds.GROUP)], "no CRD objects in etcd mode"
    (job,) = by_kind(docs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["felixctl", "apply"]
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "felixpy-bgp-resources")
    listing = yaml.safe_load(cm["data"]["resources.yaml"])
    assert [i["kind"] for i in listing["items"]] == ["BGPConfiguration"]


def test_vxlan_without_bgp_turns_the_speaker_off() -> None:
    docs = render(VALUE_SETS["vxlan"])
    (ds,) = by_kind(docs, "DaemonSet")
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CALICO_IPV4POOL_VXLAN"] == "Always"
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "felixpy-config")
    assert cm["data"]["networking_backend"] == "none"
    assert not by_kind(docs, "BGPConfiguration")


def test_external_peers_become_bgppeer_objects() -> None:
    peers = {
        p["metadata"]["name"]: p["spec"] for p in by_kind(render(VALUE_SETS["external-peers"]), "BGPPeer")
    }
    assert peers["tor-rack1"] == {"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": "rack == 'rack1'"}
    assert peers["tor-rack2"]["keepOriginalNextHop"] is True


def test_cni_config_in_configmap_is_valid_json_once_placeholders_are_filled() -> None:
    import json

    cm = next(d for d in by_kind(render({}), "ConfigMap") if d["metadata"]["name"] == "felixpy-config")
    text = (
        cm["data"]["cni_network_config"]
        .replace("__KUBERNETES_NODE_NAME__", "n1")
        .replace("__CNI_MTU__", "1440")
    )
    conf = json.loads(text)
    assert [p["type"] for p in conf["plugins"]] == ["felixpy", "portmap"]
    assert conf["plugins"][0]["mtu"] == 1440


def test_crds_in_chart_are_what_the_models_generate() -> None:
    committed = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert committed == crds.render_files(), "run `python -m felixpy.kube.crds charts/felixpy/crds`"


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"}, "ipipMode"),
        ("IPPool", {"cidr": "10.0.0.0/16", "natOutgoing": "yes"}, "natOutgoing"),
        ("IPPool", {"ipipMode": "Always"}, "cidr"),
        ("BGPPeer", {"peerIP": "192.0.2.1", "sourceAddress": "Elsewhere"}, "sourceAddress"),
        ("GlobalNetworkPolicy", {"ingress": [{"action": "Permit"}]}, "action"),
    ],
)
def test_crd_schema_rejects_what_the_model_rejects(kind: str, spec: dict[str, Any], field: str) -> None:
    doc = {"apiVersion": "crd.projectcalico.org/v1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(doc, crd_schemas()[kind])
    assert field in err.value.message or field in "/".join(map(str, err.value.path))


def test_bfd_sidecar_off_leaves_the_daemon_to_the_agent() -> None:
    (ds,) = by_kind(render({"bfd": {"sidecar": {"enabled": False}}}), "DaemonSet")
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    assert "FELIXPY_BFD_EXTERNAL" not in {e["name"] for e in agent["env"]}
