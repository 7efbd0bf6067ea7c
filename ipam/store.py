"""IPAM's etcd layout (Calico's v1-style keys) and the reads/writes over the KV protocol.

    /calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26      block JSON
    /calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26     {"state": "confirmed", "deleted": false}
    /calico/ipam/v2/handle/<handle id>                     {"block": {"10.0.0.0/26": 1}, "deleted": false}
    /calico/ipam/v2/config                                 {"strict_affinity": .., "auto_allocate_blocks": ..,
                                                            "maxBlocksPerHost": ..}

Reads return (object, mod revision); writes are TxnOps so a caller can put a block, its
affinity and its handles in one all-or-nothing transaction.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from felixpy.datastore.kv import KV, TxnOp
from ipam.allocator import IPAMConfig
from ipam.block import Block, Handle, IPNetwork

PREFIX = "/calico/ipam/v2"
CONFIG_KEY = f"{PREFIX}/config"
HANDLE_PREFIX = f"{PREFIX}/handle/"
HOST_PREFIX = f"{PREFIX}/host/"


def _cidr_part(cidr: IPNetwork | str) -> str:
    return str(cidr).replace("/", "-")


def block_prefix(version: int) -> str:
    return f"{PREFIX}/assignment/ipv{version}/block/"


def block_key(cidr: IPNetwork) -> str:
    return block_prefix(cidr.version) + _cidr_part(cidr)


def affinity_prefix(node: str, version: int) -> str:
    return f"{HOST_PREFIX}{node}/ipv{version}/block/"


def affinity_key(node: str, cidr: IPNetwork) -> str:
    return affinity_prefix(node, cidr.version) + _cidr_part(cidr)


def handle_key(handle_id: str) -> str:
    return HANDLE_PREFIX + handle_id


def cidr_from_key(key: str) -> IPNetwork:
    last = key.rsplit("/", 1)[1]
    addr, _, plen = last.rpartition("-")
    return ipaddress.ip_network(f"{addr}/{plen}")


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Affinity:
    node: str
    cidr: IPNetwork
    state: str
    revision: int


class IPAMStore:
    """Typed access to the IPAM keys over any KV."""

    def __init__(self, kv: KV):
        self.kv = kv

    # ---- blocks --------------------------------------------------------------------------------
    def get_block(self, cidr: IPNetwork) -> tuple[Block, int] | None:
        kv = self.kv.get(block_key(cidr))
        return None if kv is None else (Block.from_json(json.loads(kv.value)), kv.mod_revision)

    def list_blocks(self, version: int | None = None) -> list[tuple[Block, int]]:
        out: list[tuple[Block, int]] = []
        for v in (4, 6) if version is None else (version,):
            items, _ = self.kv.list(block_prefix(v))
            out.extend((Block.from_json(json.loads(i.value)), i.mod_revision) for i in items)
        return out

    def block_cidrs(self, version: int) -> set[str]:
        """The CIDRs of every existing block (from the keys; values are not decoded)."""
        items, _ = self.kv.list(block_prefix(version))
        return {str(cidr_from_key(i.key)) for i in items}

    @staticmethod
    def block_create(block: Block) -> TxnOp:
        return TxnOp("create", block_key(block.cidr), _dump(block.to_json()))

    @staticmethod
    def block_update(block: Block, revision: int) -> TxnOp:
        return TxnOp("update", block_key(block.cidr), _dump(block.to_json()), revision)

    @staticmethod
    def block_delete(cidr: IPNetwork, revision: int) -> TxnOp:
        return TxnOp("delete", block_key(cidr), revision=revision)

    # ---- affinities ----------------------------------------------------------------------------
    def list_affinities(self, node: str | None = None, version: int | None = None) -> list[Affinity]:
        prefix = HOST_PREFIX if node is None else f"{HOST_PREFIX}{node}/"
        if node is not None and version is not None:
            prefix = affinity_prefix(node, version)
        items, _ = self.kv.list(prefix)
        out = []
        for i in items:
            parts = i.key[len(HOST_PREFIX) :].split("/")
            if len(parts) != 4 or parts[2] != "block":
                continue
            doc = json.loads(i.value or b"{}")
            if doc.get("deleted"):
                continue
            cidr = cidr_from_key(i.key)
            if version is None or cidr.version == version:
                out.append(Affinity(parts[0], cidr, doc.get("state", "confirmed"), i.mod_revision))
        return out

    def get_affinity(self, node: str, cidr: IPNetwork) -> Affinity | None:
        kv = self.kv.get(affinity_key(node, cidr))
        if kv is None:
            return None
        return Affinity(node, cidr, json.loads(kv.value or b"{}").get("state", "confirmed"), kv.mod_revision)

    @staticmethod
    def affinity_create(node: str, cidr: IPNetwork, state: str = "confirmed") -> TxnOp:
        return TxnOp("create", affinity_key(node, cidr), _dump({"state": state, "deleted": False}))

    @staticmethod
    def affinity_update(node: str, cidr: IPNetwork, revision: int, state: str = "confirmed") -> TxnOp:
        return TxnOp("update", affinity_key(node, cidr), _dump({"state": state, "deleted": False}), revision)

    @staticmethod
    def affinity_delete(node: str, cidr: IPNetwork, revision: int | None = None) -> TxnOp:
        return TxnOp("delete", affinity_key(node, cidr), revision=revision)

    # ---- handles -------------------------------------------------------------------------------
    def get_handle(self, handle_id: str) -> tuple[Handle, int] | None:
        kv = self.kv.get(handle_key(handle_id))
        return None if kv is None else (Handle.from_json(handle_id, json.loads(kv.value)), kv.mod_revision)

    def list_handles(self) -> list[tuple[Handle, int]]:
        items, _ = self.kv.list(HANDLE_PREFIX)
        return [
            (Handle.from_json(i.key[len(HANDLE_PREFIX) :], json.loads(i.value)), i.mod_revision)
            for i in items
        ]

    @staticmethod
    def handle_write(handle: Handle, revision: int | None) -> TxnOp:
        """Create (revision None), update, or delete when the handle holds nothing any more."""
        key = handle_key(handle.id)
        if revision is None:
            return TxnOp("create", key, _dump(handle.to_json()))
        if handle.total == 0:
            return TxnOp("delete", key, revision=revision)
        return TxnOp("update", key, _dump(handle.to_json()), revision)

    # ---- config --------------------------------------------------------------------------------
    def get_config(self) -> IPAMConfig:
        kv = self.kv.get(CONFIG_KEY)
        return IPAMConfig() if kv is None else IPAMConfig.from_json(json.loads(kv.value))

    def set_config(self, config: IPAMConfig) -> None:
        self.kv.put(CONFIG_KEY, _dump(config.to_json()))
