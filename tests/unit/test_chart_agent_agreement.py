"""The chart and the agent agree: the chart is rendered with Helm's engine and non-default values,
the node container's environment is resolved as the kubelet resolves it, and the agent's own
settings code (Settings.from_env, FelixParams.resolve, startup.default_pools) runs on it. Every value
of values.yaml must change what the chart renders (no dead values); the init container's
configuration must be what install-cni installs, naming only hostPaths the DaemonSet creates.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.kube.install_cni import install, render_conflist
from felixpy.runtime import startup
from felixpy.runtime.settings import FelixParams, Settings
from tests.fixtures.chart import CHART, container, container_env, find, host_paths, pod_spec, render

VALUES: dict[str, Any] = {
    "datastore": {"type": "kubernetes"},
    "ipPool": {
        "cidr": "10.50.0.0/16",
        "blockSize": 28,
        "ipipMode": "CrossSubnet",
        "vxlanMode": "Never",
        "natOutgoing": False,
        "nodeSelector": "rack == 'a'",
    },
    "ipv6Pool": {
        "cidr": "fd00:50::/48",
        "blockSize": 120,
        "vxlanMode": "Always",
        "natOutgoing": True,
        "nodeSelector": "has(ipv6)",
    },
    "bgp": {"asNumber": 65010},
    "mtu": 1400,
    "logSeverity": "debug",
    "healthPort": 9199,
    "prometheusMetricsPort": 9191,
    "defaultEndpointToHostAction": "Return",
    "node": {
        "ipAutodetectionMethod": "interface=eth.*",
        "ip6": "autodetect",
        "ip6AutodetectionMethod": "can-reach=fd00::1",
    },
    "cni": {
        "binDir": "/usr/libexec/cni",
        "confDir": "/etc/cni/conf.d",
        "confName": "05-felixpy.conflist",
        "networkName": "pods-x",
        "logDir": "/var/log/x/cni",
        "logFileMaxSizeMB": 7,
    },
    "stateDir": "/var/lib/x",
}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(VALUES)


def test_agent_settings_from_the_rendered_env(docs: list[dict[str, Any]]) -> None:
    env = container_env(docs, "felixpy-node", node_name="node-7")
    settings = Settings.from_env(env)
    params = FelixParams.resolve(settings.env)
    assert settings.nodename == "node-7" and settings.datastore_type == "kubernetes"
    assert settings.as_number == "65010" and settings.networking_backend == "bird"
    assert settings.ip_autodetection_method == "interface=eth.*" and settings.log_level == "debug"
    assert (settings.ip6, settings.ip6_autodetection_method) == ("autodetect", "can-reach=fd00::1")
    assert settings.state_dir == "/var/lib/x" and settings.run_dir == "/var/run/felixpy"
    assert (params.healthPort, params.prometheusMetricsPort, params.vethMTU) == (9199, 9191, 1400)
    assert params.defaultEndpointToHostAction == "RETURN" and params.logSeverityScreen == "debug"
    v4, v6 = (p.to_dict()["spec"] for p in startup.default_pools(settings))
    fields = ("cidr", "blockSize", "ipipMode", "vxlanMode", "natOutgoing", "nodeSelector")
    assert [v4.get(f) for f in fields] == ["10.50.0.0/16", 28, "CrossSubnet", "Never", False, "rack == 'a'"]
    assert [v6.get(f) for f in fields if f != "ipipMode"] == [
        "fd00:50::/48",
        120,
        "Always",
        True,
        "has(ipv6)",
    ]


def test_default_values_give_calicos_default_pool_and_no_ipv6_pool() -> None:
    settings = Settings.from_env(container_env(render({}), "felixpy-node", node_name="n"))
    pools = startup.default_pools(settings)
    assert len(pools) == 1
    spec = pools[0].to_dict()["spec"]
    assert (spec["cidr"], spec["natOutgoing"], spec["nodeSelector"]) == ("10.244.0.0/16", True, "all()")


def test_a_bad_boolean_is_one_line_naming_the_variable() -> None:
    with pytest.raises(
        ValueError, match=r"^CALICO_IPV4POOL_NAT_OUTGOING: expected true or false, not 'maybe'$"
    ):
        Settings.from_env({"NODENAME": "n", "CALICO_IPV4POOL_NAT_OUTGOING": "maybe"})


def test_daemonset_lands_on_linux_critical_and_keeps_routes_on_termination(
    docs: list[dict[str, Any]],
) -> None:
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert 0 < spec["terminationGracePeriodSeconds"] <= 60  # the agent's bounded graceful stop fits


def test_install_cni_writes_what_the_node_uses_into_the_hostpaths(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Run install-cni on the init container's rendered env into a host root built from the
    rendered hostPath volumes; the conflist's paths are the node container's and are hostPaths."""
    paths = host_paths(docs)
    init, node = container(docs, "install-cni"), container(docs, "felixpy-node")
    mounts = {m["mountPath"]: paths[m["name"]] for m in init["volumeMounts"]}
    assert (
        mounts["/host/opt/cni/bin"] == "/usr/libexec/cni"
        and mounts["/host/etc/cni/net.d"] == "/etc/cni/conf.d"
    )
    env = container_env(docs, "install-cni", node_name="node-7")
    host = tmp_path / "host"
    if _forwarder_built():
        install(
            bin_dir=host / mounts["/host/opt/cni/bin"].lstrip("/"),
            conf_dir=host / mounts["/host/etc/cni/net.d"].lstrip("/"),
            conf_name=env["CNI_CONF_NAME"],
            template=env["CNI_NETWORK_CONFIG"],
            node_name=env["KUBERNETES_NODE_NAME"],
            mtu=int(env["CNI_MTU"]),
        )
    else:
        print("install-cni not run: the static forwarder or /usr/lib/cni/portmap is missing")
    conf = json.loads(render_conflist(env["CNI_NETWORK_CONFIG"], node_name="node-7", mtu=int(env["CNI_MTU"])))
    felixpy = conf["plugins"][0]
    assert conf["name"] == "pods-x" and felixpy["nodename"] == "node-7" and felixpy["mtu"] == 1400
    assert [p["type"] for p in conf["plugins"]] == ["felixpy", "portmap"] and felixpy["ipam"][
        "type"
    ] == "felixpy-ipam"
    node_env = container_env(docs, "felixpy-node", node_name="node-7")
    node_mounts = {m["mountPath"]: paths.get(m["name"]) for m in node["volumeMounts"]}
    # the plugin (on the host) and the agent (in its container) meet at the same host directory
    assert (
        felixpy["run_dir"] == node_env["FELIXPY_RUN_DIR"]
        and node_mounts[felixpy["run_dir"]] == felixpy["run_dir"]
    )
    assert felixpy["log_file_path"] == "/var/log/x/cni/cni.log" and felixpy["log_file_max_size"] == 7
    assert "/var/log/x/cni" in paths.values() and node_mounts["/var/lib/x"] == "/var/lib/x"
    unused = {"log_level", "datastore_type", "policy"} & set(felixpy)
    assert not unused, f"keys no felixpy code reads: {unused}"
    if _forwarder_built():
        assert (host / "etc/cni/conf.d/05-felixpy.conflist").exists() and (
            host / "usr/libexec/cni/portmap"
        ).exists()


def _forwarder_built() -> bool:
    from felixpy.cni import forwarder

    try:
        forwarder.binary("felixpy-cni")
        forwarder.binary("felixpy-bundle-exec")
    except forwarder.ForwarderMissing:
        return False
    return Path("/usr/lib/cni/portmap").exists()


# ---- no dead values: every leaf of values.yaml changes the rendered manifests ----------------------

BASES: dict[str, dict[str, Any]] = {
    "default": {},
    # values only read with a feature on: etcd credentials, reflectors, the IPv6 pool
    "features-on": {
        "datastore": {
            "type": "etcdv3",
            "etcd": {
                "endpoints": "https://10.0.0.10:2379",
                "tls": {"secretName": "etcd-tls"},
                "username": "felixpy",
                "passwordSecret": "etcd-pass",
            },
        },
        "routeReflector": {"enabled": True},
        "ipv6Pool": {"cidr": "fd00:1::/48"},
    },
}
SAMPLES: dict[str, Any] = {
    "bgp.peers": [{"name": "tor", "peerIP": "192.0.2.1", "asNumber": 65001}],
    "routeReflector.nodeSelector": {"role": "rr"},
    "routeReflector.tolerations": [{"operator": "Exists"}],
    "node.tolerations": [{"key": "x", "operator": "Exists"}],
    "node.resources": {"requests": {"cpu": "1"}},
    "bfd.sidecar.resources": {"requests": {"cpu": "1"}},
}


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in SAMPLES:
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def _changed(path: str, value: Any) -> Any:
    if path in SAMPLES:
        return SAMPLES[path]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if path.endswith("cidr"):
        return "fd00:99::/48" if ":" in str(value) or "ipv6" in path.lower() else "10.99.0.0/16"
    return f"{value}x" if value else "changed"


def _set(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_every_value_changes_what_the_chart_renders() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    rendered = {name: render(base) for name, base in BASES.items()}
    dead = []
    for path, _value in _leaves(defaults):
        if path == "datastore.type":
            continue  # switches whole sets of env and volumes: covered by the tests above and test_helm_chart
        used = False
        for name, base in BASES.items():
            merged = _merge(defaults, base)
            current = merged
            for p in path.split("."):
                current = current.get(p) if isinstance(current, dict) else None
            if render(_set(base, path, _changed(path, current))) != rendered[name]:
                used = True
                break
        if not used:
            dead.append(path)
    assert not dead, f"values that change nothing the chart renders (remove them or use them): {dead}"


def test_node_container_env_has_no_variable_the_agent_ignores(docs: list[dict[str, Any]]) -> None:
    """Every variable the chart sets on the node container is one the agent (or a library it uses) reads."""
    import inspect

    from felixpy.datastore import config as datastore_config
    from felixpy.runtime import settings as settings_module

    read = inspect.getsource(settings_module) + inspect.getsource(datastore_config)
    env = container_env(docs, "felixpy-node", node_name="n")
    ignored = [
        name
        for name in env
        if f'"{name}"' not in read
        and not (
            name.startswith("FELIX_") and name[6:].lower() in {f.lower() for f in FelixParams.model_fields}
        )
    ]
    assert not ignored, f"set by the chart, read by nothing: {ignored}"
    assert find(docs, "ConfigMap", "felixpy-config")["data"]["veth_mtu"] == "1400"


def test_bfd_sidecar_serves_the_socket_the_agent_adopts(docs: list[dict[str, Any]]) -> None:
    """The sidecar's daemon listens where the agent's client looks (<FELIXPY_RUN_DIR>/bfd.sock) on the
    same host directory, with flags the daemon's own parser accepts, and the agent is told not to
    start a daemon of its own."""
    from bgp import bfd_client, bfd_daemon

    settings = Settings.from_env(container_env(docs, "felixpy-node", node_name="n"))
    assert settings.bfd_external is True
    sidecar, node, paths = container(docs, "felixpy-bfd"), container(docs, "felixpy-node"), host_paths(docs)
    assert sidecar["command"][0] == "felixpy-bfd"
    parsed = vars(bfd_daemon.build_parser().parse_args(sidecar["command"][1:]))
    assert parsed["socket"] == f"{settings.run_dir}/{bfd_client.SOCKET_NAME}"
    assert parsed["orphan_timeout"] == 0, "the pod, not the agent, bounds the sidecar's life"
    assert parsed["log_level"] == "debug"  # logSeverity reaches the sidecar too
    mount = {m["mountPath"]: paths[m["name"]] for m in sidecar["volumeMounts"]}
    node_mounts = {m["mountPath"]: paths.get(m["name"]) for m in node["volumeMounts"]}
    assert mount[settings.run_dir] == node_mounts[settings.run_dir]
    off = Settings.from_env(container_env(render({**VALUES, "bfd": {"sidecar": {"enabled": False}}}),
                                          "felixpy-node", node_name="n"))
    assert off.bfd_external is False
