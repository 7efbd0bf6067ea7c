"""Calico's wireguard_* families (felixpy.runtime.wireguard_metrics): names, types and labels as a scrape
of the agent's registry shows them, from a real ``wg show <iface> dump`` text; absent when off."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane.wireguard_kernel import parse_dump
from felixpy.runtime.felix_metrics import exposition
from felixpy.runtime.wireguard_metrics import WireguardCollector, families

DUMP = (
    "cHJpdmF0ZQ==\tT3duS2V5\t51820\t0x200000\n"
    "UGVlcjE=\t(none)\t10.99.1.11:51820\t10.244.1.0/26\t1765000000\t1234\t5678\t0\n"
    "UGVlcjI=\t(none)\t(none)\t10.244.2.0/26\t0\t0\t0\toff\n"
)


def scrape(*metrics: object) -> str:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[object]:
            return list(metrics)

    registry.register(Fixed())  # type: ignore[arg-type]
    return exposition(registry).decode()


def test_families_have_calicos_names_types_and_labels() -> None:
    text = scrape(*families("node1", "wireguard.cali", parse_dump(DUMP)))
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["wireguard_meta"].type == "gauge"
    (meta,) = parsed["wireguard_meta"].samples
    assert meta.labels == {"hostname": "node1", "public_key": "T3duS2V5", "iface": "wireguard.cali",
                           "listen_port": "51820"} and meta.value == 1
    # Felix's counters carry bare names (Go's client adds no _total): so do the HELP/TYPE lines
    assert "# TYPE wireguard_bytes_rcvd counter" in text and "wireguard_bytes_rcvd_total" not in text
    assert "# TYPE wireguard_bytes_sent counter" in text
    peer1 = {"hostname": "node1", "public_key": "T3duS2V5", "peer_key": "UGVlcjE=",
             "peer_endpoint": "10.99.1.11:51820"}

    def sample(family: str, peer_key: str) -> tuple[dict[str, str], float]:
        (found,) = [s for s in parsed[family].samples if s.labels["peer_key"] == peer_key]
        return found.labels, found.value

    assert sample("wireguard_bytes_rcvd", "UGVlcjE=") == (peer1, 1234)
    assert sample("wireguard_bytes_sent", "UGVlcjE=") == (peer1, 5678)
    assert sample("wireguard_latest_handshake_seconds", "UGVlcjE=") == (peer1, 1765000000)
    labels, value = sample("wireguard_latest_handshake_seconds", "UGVlcjI=")
    assert value == 0 and labels["peer_endpoint"] == ""  # no handshake, no endpoint yet
    assert parsed["wireguard_bytes_rcvd"].type == "counter"
    assert parsed["wireguard_latest_handshake_seconds"].type == "gauge"


def test_nothing_exported_when_wireguard_is_off_or_has_no_driver() -> None:
    off = SimpleNamespace(cfg=WireguardConfig(enabled=False), netns=None)
    assert list(WireguardCollector("node1", off).collect()) == []
    assert list(WireguardCollector("node1", None).collect()) == []


class _OnDriver:
    """A driver with WireGuard on and a device whose dump is DUMP (what the collector reads)."""

    cfg = WireguardConfig(enabled=True)
    netns = None


def test_prometheus_wireguard_metrics_enabled_false_leaves_the_families_out(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from felixpy.dataplane import wireguard_kernel as drv
    from felixpy.resources.felixconfig import FelixConfiguration
    from felixpy.runtime import wireguard_metrics
    from felixpy.runtime.settings import FelixParams

    monkeypatch.setattr(drv, "read_device", lambda iface, netns=None: parse_dump(DUMP))

    def spec(doc: dict) -> dict:  # what the agent resolves from: the FelixConfiguration's spec
        fc = FelixConfiguration.model_validate({"metadata": {"name": "default"}, "spec": doc})
        return fc.spec.model_dump(by_alias=True, exclude_none=True)

    default = FelixParams.resolve({}, None, spec({"wireguardEnabled": True}))
    assert default.prometheusWireGuardMetricsEnabled is True  # Felix's default
    off = FelixParams.resolve(
        {}, None, spec({"wireguardEnabled": True, "prometheusWireGuardMetricsEnabled": False}))
    assert off.prometheusWireGuardMetricsEnabled is False
    # FELIX_PROMETHEUSWIREGUARDMETRICSENABLED wins over the FelixConfiguration, as every FELIX_* does
    env_on = FelixParams.resolve({"FELIX_PROMETHEUSWIREGUARDMETRICSENABLED": "true"}, None,
                                 spec({"prometheusWireGuardMetricsEnabled": False}))
    assert env_on.prometheusWireGuardMetricsEnabled is True

    for params, exported in ((default, True), (off, False)):
        registry = CollectorRegistry()
        added = wireguard_metrics.register(registry, "node1", _OnDriver(),
                                           enabled=params.prometheusWireGuardMetricsEnabled)
        text = exposition(registry).decode()
        assert added is exported
        assert ("wireguard_meta{" in text) is exported, text
        assert ("wireguard_bytes_rcvd{" in text) is exported, text


def test_prometheus_wireguard_metrics_enabled_is_honoured_not_just_stored() -> None:
    from felixpy.ctl.honoured import unhonoured
    from felixpy.resources.felixconfig import FelixConfiguration

    fc = FelixConfiguration.model_validate(
        {"metadata": {"name": "default"}, "spec": {"prometheusWireGuardMetricsEnabled": False}})
    assert unhonoured(fc) == []  # felixctl apply does not warn about it


DUMP_V6 = (
    "cHJpdmF0ZTY=\tT3duVjY=\t51821\t0x200000\n"
    "UGVlcjY=\t(none)\t[fd00:99::11]:51821\tfd00:244:0:1::/122\t1765000001\t11\t22\t0\n"
)


def test_both_devices_in_the_same_families_told_apart_by_iface_and_own_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """wireguardEnabled and wireguardEnabledV6: one collector over both drivers, each device a
    wireguard_meta series (iface, listen_port) and its peers' series under its own public_key; a
    device that is off (or not there yet) is left out, the other still exported."""
    from felixpy.dataplane import wireguard_kernel as drv

    dumps = {"wireguard.cali": DUMP, "wg-v6.cali": DUMP_V6}

    def read(iface: str, netns: str | None = None) -> object:
        if iface not in dumps:
            raise drv.DataplaneError(f"no device {iface}")
        return parse_dump(dumps[iface])

    monkeypatch.setattr(drv, "read_device", read)
    v4 = SimpleNamespace(cfg=WireguardConfig(enabled=True), netns=None)
    v6 = SimpleNamespace(cfg=WireguardConfig.v6(enabled=True), netns=None)
    text = scrape(*WireguardCollector("node1", [v4, v6]).collect())
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert sorted((s.labels["iface"], s.labels["listen_port"], s.labels["public_key"])
                  for s in parsed["wireguard_meta"].samples) == [
        ("wg-v6.cali", "51821", "T3duVjY="), ("wireguard.cali", "51820", "T3duS2V5")]
    rcvd = {(s.labels["public_key"], s.labels["peer_endpoint"]): s.value
            for s in parsed["wireguard_bytes_rcvd"].samples}
    assert rcvd[("T3duVjY=", "[fd00:99::11]:51821")] == 11 and rcvd[("T3duS2V5", "10.99.1.11:51820")] == 1234
    off6 = SimpleNamespace(cfg=WireguardConfig.v6(enabled=False), netns=None)
    only4 = list(WireguardCollector("node1", [v4, off6]).collect())
    assert [s.labels["iface"] for s in only4[0].samples] == ["wireguard.cali"]
    del dumps["wireguard.cali"]  # the IPv4 device being rebuilt: the IPv6 one is still exported
    meta = next(iter(WireguardCollector("node1", [v4, v6]).collect()))
    assert [s.labels["iface"] for s in meta.samples] == ["wg-v6.cali"]
    dumps.clear()
    assert list(WireguardCollector("node1", [v4, v6]).collect()) == []
