"""Shared helpers for the IPAM integration tests (not a test module)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from felixpy.datastore.kv import KV
from felixpy.resources.ippool import IPPool
from felixpy.resources.node import Node
from ipam.block import Block, Handle
from ipam.store import HANDLE_PREFIX, block_prefix


def make_pool(backend: Any, name: str, cidr: str, **spec: object) -> IPPool:
    return backend.create(IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}))


def make_node(backend: Any, name: str, labels: dict[str, str] | None = None) -> Node:
    return backend.create(Node.model_validate({"metadata": {"name": name, "labels": labels or {}}}))


def read_state(kv: KV) -> tuple[list[Block], dict[str, Handle]]:
    blocks = []
    for v in (4, 6):
        items, _ = kv.list(block_prefix(v))
        blocks += [Block.from_json(json.loads(i.value)) for i in items]
    items, _ = kv.list(HANDLE_PREFIX)
    handles = {
        i.key[len(HANDLE_PREFIX) :]: Handle.from_json(i.key[len(HANDLE_PREFIX) :], json.loads(i.value))
        for i in items
    }
    return blocks, handles


def assert_consistent(kv: KV) -> dict[str, str]:
    """Blocks and handles agree exactly; returns address -> handle for every allocation."""
    blocks, handles = read_state(kv)
    owner: dict[str, str] = {}
    expect: dict[str, dict[str, int]] = {}
    for b in blocks:
        free = set(b.unallocated)
        assert len(free) == len(b.unallocated), f"{b.cidr}: ordinal free twice"
        for o, idx in enumerate(b.allocations):
            assert (idx is None) == (o in free), f"{b.cidr} ordinal {o}: bitmap and free list disagree"
            if idx is not None:
                addr = str(b.address(o))
                assert addr not in owner, f"{addr} allocated twice"
                h = b.attributes[idx].handle_id or ""
                owner[addr] = h
                expect.setdefault(h, {})[str(b.cidr)] = expect.setdefault(h, {}).get(str(b.cidr), 0) + 1
    got = {h: dict(v.blocks) for h, v in handles.items() if v.blocks}
    assert got == expect, "handle records disagree with the blocks"
    return owner


def in_net(addr: str, cidr: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr)
