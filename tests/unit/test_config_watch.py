"""When a FelixConfiguration change makes the agent restart (felixpy.runtime.config_watch)."""

from __future__ import annotations

import json

import pytest

from felixpy.calc.updates import FelixConfigUpdate, InvalidConfig
from felixpy.resources import FelixConfiguration
from felixpy.runtime.config_watch import (
    ROUTE_REFLECTOR_FIELDS,
    ConfigWatch,
    effective_changes,
    invalid_fields,
    params_digest,
)
from felixpy.runtime.settings import FelixParams
from felixpy.runtime.sync import _felix_config


def config(name: str, **spec: object) -> FelixConfigUpdate:
    obj = FelixConfiguration.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
    return FelixConfigUpdate(name, obj)


def deleted(name: str) -> FelixConfigUpdate:
    return FelixConfigUpdate(name, None)


def watch(env: dict[str, str] | None = None, **running: object) -> ConfigWatch:
    return ConfigWatch("n1", env or {}, FelixParams.resolve(env or {}, None, running or None))


# ---- the pure diff ---------------------------------------------------------------------------
def test_effective_changes_lists_only_differing_fields_with_old_and_new() -> None:
    a = FelixParams.resolve({}, None, {"vxlanVNI": 4097, "routeRefreshInterval": "30s"})
    b = FelixParams.resolve({}, None, {"vxlanVNI": 4097, "routeRefreshInterval": "1m", "vethMTU": 1400})
    assert effective_changes(a, b) == {"routeRefreshInterval": (30.0, 60.0), "vethMTU": (0, 1400)}
    assert effective_changes(a, a) == {}
    # spelled differently, same value: no change ("Accept" and "ACCEPT", "1m" and "60s")
    c = FelixParams.resolve({}, None, {"defaultEndpointToHostAction": "Accept"})
    d = FelixParams.resolve({}, None, {"defaultEndpointToHostAction": "ACCEPT"})
    assert effective_changes(c, d) == {} and params_digest(c) == params_digest(d)


def test_a_field_felixpy_does_not_act_on_restarts_nothing() -> None:
    a = FelixParams.resolve({}, None, None)
    b = FelixParams.resolve({}, None, {"logSeverityScreen": "Debug"})
    assert a != b and effective_changes(a, b) == {}


def test_a_route_reflector_restarts_only_for_what_it_uses() -> None:
    a = FelixParams.resolve({}, None, None)
    b = FelixParams.resolve({}, None, {"defaultEndpointToHostAction": "Accept", "healthPort": 9199})
    assert effective_changes(a, b, ROUTE_REFLECTOR_FIELDS) == {"healthPort": (9099, 9199)}


def test_params_digest_tells_parameter_sets_apart() -> None:
    a = FelixParams.resolve({}, None, None)
    b = FelixParams.resolve({}, None, {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}]})
    assert params_digest(a) == params_digest(FelixParams()) != params_digest(b)


def test_invalid_fields_names_each_unreadable_parameter() -> None:
    bad = invalid_fields(
        {},
        {"routeRefreshInterval": "soon"},
        {"failsafeInboundHostPorts": [{"protocol": "TCP"}], "vethMTU": 1400, "healthPort": "x"},
    )
    assert set(bad) == {"routeRefreshInterval", "failsafeInboundHostPorts", "healthPort"}
    assert "soon" in bad["routeRefreshInterval"]


# ---- the watch -------------------------------------------------------------------------------
def test_a_changed_effective_parameter_is_reported_once_settled() -> None:
    w = watch()
    w.on_updates([config("default", defaultEndpointToHostAction="Accept")], now=10.0)
    assert w.check(now=10.5) is None  # not settled yet: more edits may follow
    check = w.check(now=11.0)
    assert check is not None and check.restart and check.updated == ("default",)
    assert check.changes == {"defaultEndpointToHostAction": ("DROP", "ACCEPT")}
    assert check.wanted is not None and check.wanted.defaultEndpointToHostAction == "ACCEPT"
    assert w.check(now=12.0) is None  # reported once


def test_several_updates_in_a_row_settle_into_one_check() -> None:
    w = watch()
    w.on_updates([config("default", vethMTU=1400)], now=0.0)
    w.on_updates([config("default", vethMTU=1410)], now=0.6)
    assert w.check(now=1.2) is None  # the second edit restarted the settle window
    w.on_updates([config("default", vethMTU=1420, routeRefreshInterval="30s")], now=1.3)
    assert w.check(now=2.0) is None
    check = w.check(now=2.4)
    assert check is not None and check.changes == {"vethMTU": (0, 1420), "routeRefreshInterval": (90.0, 30.0)}
    assert w.check(now=9.0) is None


def test_an_edit_undone_within_the_window_restarts_nothing() -> None:
    w = watch()
    w.on_updates([config("default", vxlanVNI=7)], now=0.0)
    w.on_updates([deleted("default")], now=0.5)
    check = w.check(now=2.0)
    assert check is not None and check.changes == {} and not check.restart


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
    check = w.check(now=2.0)
    assert check is not None and check.changes == {"routeRefreshInterval": (90.0, 45.0)}
    w2 = watch()
    w2.on_updates([config("node.n2", vxlanVNI=7)], now=0.0)
    check2 = w2.check(now=2.0)
    # seen (so the agent can say it looked at it), but nothing to do
    assert check2 is not None and check2.updated == ("node.n2",) and not check2.restart


def test_env_overrides_and_the_running_snapshot_restart_nothing() -> None:
    env = {"FELIX_IPTABLESREFRESHINTERVAL": "10"}
    w = watch(env=env, iptablesRefreshInterval="10s", vxlanVNI=4097)
    w.on_updates([config("default", vxlanVNI=4097, iptablesRefreshInterval="20s")], now=0.0)
    check = w.check(now=2.0)
    assert check is not None and not check.restart  # same VNI; the env's 10 s wins over the new 20 s
    w.on_updates(
        [config("default", vxlanVNI=4097, iptablesRefreshInterval="20s", logSeverityScreen="Debug")], now=3.0
    )
    check = w.check(now=5.0)
    assert check is not None and not check.restart  # a field felixpy does not act on
    w.on_updates([config("node.n1", vxlanVNI=4098)], now=6.0)
    check = w.check(now=8.0)
    assert check is not None and check.changes == {"vxlanVNI": (4097, 4098)}  # env-free field: matters


def test_deleting_the_config_returns_to_defaults() -> None:
    w = watch(vxlanVNI=4097)
    w.on_updates([deleted("default")], now=0.0)
    check = w.check(now=2.0)
    assert check is not None and check.changes == {"vxlanVNI": (4097, 4096)}


def test_an_unusable_value_is_reported_and_changes_nothing() -> None:
    """Validation at apply time refuses these; if one reaches the agent anyway (an older writer, a
    hand-made etcd key), it keeps running with what it has and says which field is wrong."""
    w = watch()
    w.on_updates([config("default", routeRefreshInterval="soon", vethMTU=1400)], now=0.0)
    check = w.check(now=2.0)
    assert check is not None and not check.restart and check.changes == {}
    assert check.error is not None and "routeRefreshInterval" in check.error and "soon" in check.error
    # fixed later: now the change counts
    w.on_updates([config("default", routeRefreshInterval="20s", vethMTU=1400)], now=3.0)
    check = w.check(now=5.0)
    assert check is not None and check.restart and set(check.changes) == {"routeRefreshInterval", "vethMTU"}


def test_a_resource_that_does_not_validate_reaches_the_watch_as_invalid() -> None:
    """The sync turns a FelixConfiguration that fails model validation into InvalidConfig (it must
    not end the syncer, which would end the agent); the watch then keeps the running params."""

    class Event:  # the shape of a datastore event whose model fails to build
        type = "put"
        name = "default"

        @property
        def obj(self) -> object:
            return FelixConfiguration.model_validate_json(
                json.dumps(
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "FelixConfiguration",
                        "metadata": {"name": "default"},
                        "spec": {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": "ssh"}]},
                    }
                )
            )

    obj = _felix_config(Event())
    assert isinstance(obj, InvalidConfig) and "failsafeInboundHostPorts" in obj.error
    w = watch()
    w.on_updates([FelixConfigUpdate("default", obj)], now=0.0)
    check = w.check(now=2.0)
    assert check is not None and not check.restart and check.error is not None
    assert "failsafeInboundHostPorts" in check.error


def test_the_same_target_twice_does_not_restart_again() -> None:
    """After an in-place restart for parameters P, an agent that still came up without P (start-up
    read the datastore differently) must not exec again for P: no restart loop."""
    wanted = FelixParams.resolve({}, None, {"vethMTU": 1400})
    w = ConfigWatch("n1", {}, FelixParams(), last_target=params_digest(wanted))
    w.on_updates([config("default", vethMTU=1400)], now=0.0)
    check = w.check(now=2.0)
    assert check is not None and check.changes and check.repeated and not check.restart
    # a different change afterwards does restart
    w.on_updates([config("default", vethMTU=1380)], now=3.0)
    check = w.check(now=5.0)
    assert check is not None and check.restart


@pytest.mark.parametrize(
    ("env", "node", "default", "want"),
    [
        ({}, None, None, 90.0),
        ({}, None, {"routeRefreshInterval": "30s"}, 30.0),
        ({}, {"routeRefreshInterval": "45s"}, {"routeRefreshInterval": "30s"}, 45.0),
        (
            {"FELIX_ROUTEREFRESHINTERVAL": "5"},
            {"routeRefreshInterval": "45s"},
            {"routeRefreshInterval": "30s"},
            5.0,
        ),
        ({"FELIX_ROUTEREFRESHINTERVAL": ""}, None, {"routeRefreshInterval": "30s"}, 30.0),  # empty env: unset
    ],
)
def test_the_watch_resolves_with_felix_precedence(
    env: dict[str, str], node: dict[str, object] | None, default: dict[str, object] | None, want: float
) -> None:
    w = ConfigWatch("n1", env, FelixParams())
    updates = [config("default", **default)] if default else []
    updates += [config("node.n1", **node)] if node else []
    w.on_updates(updates, now=0.0)
    assert w.wanted().routeRefreshInterval == want
