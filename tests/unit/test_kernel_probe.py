"""The kernel feature probes' verdicts on the error texts kernels and tools really print."""

from __future__ import annotations

import pytest

from felixpy.dataplane.kernel_probe import REQUIRE_ENV, classify, required_features
from felixpy.dataplane.wireguard_kernel import parse_dump


@pytest.mark.parametrize(
    "feature, error, supported",
    [
        # every kernel with the ipip module: its fallback tunl0 already has the asked-for parameters
        ("ipip", "RTNETLINK answers: File exists", True),
        ("ipip", "(17, 'File exists')", True),  # pyroute2's NetlinkError text
        # a kernel without the module (iproute2 >= 5.x, then older iproute2, then pyroute2)
        ("ipip", "Error: Unknown device type.", False),
        ("ipip", "RTNETLINK answers: Operation not supported", False),
        ("ipip", "cannot create tunl0 (ipip module?): (95, 'Operation not supported')", False),
        ("wireguard", "Error: Unknown device type.", False),
        ("wireguard", "cannot create wireguard.cali (wireguard module?): (95, 'Operation not supported')",
         False),
        ("wireguard", "Unable to access interface: Protocol not supported", False),
        ("wireguard", "nsenter: failed to execute wg: No such file or directory", False),
        # "File exists" says nothing about vxlan/wireguard support: a leftover device
        ("vxlan", "RTNETLINK answers: File exists", False),
        ("wireguard", "RTNETLINK answers: File exists", False),
        ("vxlan", "Error: Unknown device type.", False),
    ],
)
def test_classify_real_error_texts(feature: str, error: str, supported: bool) -> None:
    result = classify(feature, error)
    assert result.supported is supported
    assert result.feature == feature
    if not supported:
        assert error.strip() in result.reason  # the kernel's own words reach the skip line


def test_unknown_text_is_not_taken_for_support() -> None:
    result = classify("ipip", "Permission denied")
    assert not result.supported and "Permission denied" in result.reason


def test_required_features_from_env() -> None:
    assert required_features({REQUIRE_ENV: "ipip, WireGuard,,"}) == {"ipip", "wireguard"}
    assert required_features({}) == set()


def test_parse_wg_dump() -> None:
    text = (
        "cHJpdmF0ZQ==\tcHVibGlj\t51820\t0x200000\n"
        "cGVlcjE=\t(none)\t10.99.1.11:51820\t10.244.1.0/26,10.244.0.192/26\t0\t0\t0\t25\n"
        "cGVlcjI=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    state = parse_dump(text)
    assert (state.private_key, state.public_key, state.listen_port, state.fwmark) == (
        "cHJpdmF0ZQ==", "cHVibGlj", 51820, 0x200000)
    p1, p2 = state.peers["cGVlcjE="], state.peers["cGVlcjI="]
    assert p1.endpoint == "10.99.1.11:51820" and p1.keepalive == 25
    assert p1.allowed_ips == ("10.244.0.192/26", "10.244.1.0/26")
    assert (p2.endpoint, p2.allowed_ips, p2.keepalive) == (None, (), 0)
    assert parse_dump("(none)\t(none)\t0\toff\n").private_key is None
