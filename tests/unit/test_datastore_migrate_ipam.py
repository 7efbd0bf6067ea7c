"""`felixctl datastore migrate`: the IPAM part in calicoctl's export shape (migrateIPAM's JSON:
block_affinities, blocks, handles as [{Key, Value, TTL}], config as one entry); felixpy's earlier
{"keys": ...} still imports."""

from __future__ import annotations

from typing import Any

import pytest

from felixpy.ctl.datastore_cmd import ipam_export, ipam_import
from felixpy.ctl.resource_cmds import CommandError

P = "/calico/ipam/v2/"
KEYS: dict[str, Any] = {
    P + "assignment/ipv4/block/10.60.0.0-28": {"cidr": "10.60.0.0/28", "affinity": "host:n1"},
    P + "host/n1/ipv4/block/10.60.0.0-28": {"state": "confirmed", "deleted": False},
    P + "handle/k8s-pod-network.abc": {"block": {"10.60.0.0/28": 1}, "deleted": False},
    P + "config": {"strict_affinity": True, "auto_allocate_blocks": True, "maxBlocksPerHost": 0},
}


def test_export_is_calicoctl_shaped_and_imports_back_in_calicoctl_order() -> None:
    doc = ipam_export(KEYS)
    assert list(doc) == ["block_affinities", "blocks", "handles", "config"]
    assert doc["blocks"] == [{"Key": P + "assignment/ipv4/block/10.60.0.0-28",
                              "Value": KEYS[P + "assignment/ipv4/block/10.60.0.0-28"], "TTL": 0}]  # fmt: skip
    assert doc["config"]["Key"] == P + "config"
    back = ipam_import(doc, "f")
    assert back == KEYS
    assert [k.split("/")[4] for k in back] == ["host", "assignment", "handle", "config"]  # affinities first


def test_empty_parts_are_left_out_and_the_earlier_shape_still_imports() -> None:
    assert ipam_export({}) == {}
    assert ipam_import({}, "f") == {}
    assert ipam_import({"keys": KEYS}, "f") == KEYS


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({"blocks": "x"}, "'blocks' must be a list"),
        ({"blocks": [{"Key": P + "handle/x", "Value": {}}]}, f"blocks[0] needs a Key under {P}assignment/"),
        ({"handles": [{"Key": P + "handle/x"}]}, "handles[0] needs a Key"),
        ({"pools": []}, "unknown IPAM part 'pools'"),
    ],
)
def test_bad_ipam_parts_are_refused_naming_them(doc: Any, message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ipam_import(doc, "f")


def test_a_key_of_no_known_kind_is_refused_on_export() -> None:
    with pytest.raises(CommandError, match="none of calicoctl's kinds"):
        ipam_export({P + "mystery/x": {}})
