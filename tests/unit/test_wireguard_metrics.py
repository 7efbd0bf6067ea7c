"""Calico's wireguard_* families (felixpy.runtime.wireguard_metrics): names, types and labels as a scrape
of the agent's registry shows them, from a real ``wg show <iface> dump`` text; absent when off."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane.wireguard import parse_dump
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
