"""When a FelixConfiguration change makes the agent restart (felixpy.node.config_watch)."""

from __future__ import annotations

from felixpy.calc.model import InputUpdate
from felixpy.node.config_watch import ConfigWatch
from felixpy.node.settings import FelixParams
from felixpy.resources import FelixConfiguration


def config(name: str, **spec: object) -> InputUpdate:
    obj = FelixConfiguration.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
    return InputUpdate("FelixConfiguration", ("", name), obj)


def watch(env: dict[str, str] | None = None, **running: object) -> ConfigWatch:
    return ConfigWatch("n1", env or {}, FelixParams.resolve(env or {}, None, running or None))


def test_a_changed_effective_parameter_is_reported_once_settled() -> None:
    w = watch()
    w.on_updates([config("default", defaultEndpointToHostAction="Accept")], now=10.0)
    assert w.changes(now=10.5) is None  # not settled yet: more edits may follow
    assert w.changes(now=11.0) == {"defaultEndpointToHostAction": ("DROP", "ACCEPT")}
    assert w.changes(now=12.0) is None  # reported once


def test_node_specific_config_wins_and_other_nodes_are_ignored() -> None:
    w = watch()
    w.on_updates(
        [
            config("default", routeRefreshInterval="30s"),
            config("node.n1", routeRefreshInterval="45s"),
            config("node.n2", routeRefreshInterval="5s"),
        ],
        now=0.0,
    )
    assert w.changes(now=2.0) == {"routeRefreshInterval": (90.0, 45.0)}
    w2 = watch()
    w2.on_updates([config("node.n2", vxlanVNI=7)], now=0.0)
    assert w2.changes(now=2.0) is None


def test_the_snapshot_of_the_running_config_and_env_overrides_restart_nothing() -> None:
    w = watch(env={"FELIX_IPTABLESREFRESHINTERVAL": "10"}, iptablesRefreshInterval="10s", vxlanVNI=4097)
    w.on_updates([config("default", vxlanVNI=4097, iptablesRefreshInterval="20s")], now=0.0)
    assert w.changes(now=2.0) is None  # same VNI; the env's 10 s wins over the new 20 s
    w.on_updates(
        [config("default", vxlanVNI=4097, iptablesRefreshInterval="20s", logSeverityScreen="Info")], now=3.0
    )
    assert w.changes(now=5.0) is None  # a field at its running value


def test_deleting_the_config_returns_to_defaults() -> None:
    w = watch(vxlanVNI=4097)
    w.on_updates([InputUpdate("FelixConfiguration", ("", "default"), None)], now=0.0)
    assert w.changes(now=2.0) == {"vxlanVNI": (4097, 4096)}


def test_an_unusable_value_is_reported_and_changes_nothing() -> None:
    """Validation at apply time refuses this; if such a value reaches the agent anyway (an older
    writer, a hand-made etcd key), it keeps running with what it has and says why."""
    w = watch()
    w._specs["default"] = {"failsafeInboundHostPorts": "tcp:notaport"}
    w._seen, w._last_update = True, 0.0
    assert w.changes(now=2.0) is None
    assert w.error is not None and "notaport" in w.error
