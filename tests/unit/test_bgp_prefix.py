"""The fast prefix parsing in bgp.route against ``ipaddress`` (the slow, obviously right reference)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bgp.filters import PoolInfo, pool_for
from bgp.route import key_inside, normalize_prefix, prefix_key


def reference_key(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


def samples() -> list[str]:
    rng = random.Random(4456)
    out = [
        "0.0.0.0/0",
        "255.255.255.255/32",
        "10.65.1.5/26",
        "10.1.1.1",
        "fd00::1/64",
        "::/0",
        "fd00:65::/122",
    ]
    for _ in range(2000):
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        out.append(f"{address}/{rng.randint(0, 32)}")
    return out


def test_keys_and_normal_forms_match_ipaddress() -> None:
    for text in samples():
        assert prefix_key(text) == reference_key(text), text
        assert normalize_prefix(text) == str(ipaddress.ip_network(text, strict=False)), text


@pytest.mark.parametrize(
    "bad", ["010.1.1.0/24", "10.1.1.0/33", "10.1.1.256/24", "10.1.1/24", "10.1.1.0/-1", "x/8"]
)
def test_what_ipaddress_refuses_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_prefix(bad)


def test_containment_matches_subnet_of() -> None:
    rng = random.Random(7)
    outers = ["10.0.0.0/8", "10.64.0.0/10", "10.65.0.0/16", "0.0.0.0/0", "10.65.1.0/26", "fd00::/8"]
    for text in samples():
        inner = ipaddress.ip_network(text, strict=False)
        for outer_text in rng.sample(outers, 3):
            outer = ipaddress.ip_network(outer_text)
            want = inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]
            assert key_inside(prefix_key(text), prefix_key(outer_text)) == want, (text, outer_text)


def test_pool_for_picks_the_most_specific() -> None:
    pools = (PoolInfo("10.0.0.0/8"), PoolInfo("10.65.0.0/16"), PoolInfo("fd00:65::/48"))
    assert pool_for("10.65.3.0/26", pools) == pools[1]
    assert pool_for("10.66.3.0/26", pools) == pools[0]
    assert pool_for("11.0.0.0/26", pools) is None
    assert pool_for("fd00:65::/122", pools) == pools[2]
    assert pool_for("10.0.0.0/7", pools) is None  # wider than every pool
