"""Refuse to delete an IP pool that still holds allocations unless it is disabled (IPAM's rule).

Deleting an enabled pool with addresses in use would strand those workloads: their blocks stay routed
nowhere and new pods could be given the same addresses from a re-created pool. Disabling first stops new
allocations; the operator then moves or deletes the workloads and deletes the pool.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from felixpy.ctl.connect import open_kv
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import NotFound
from felixpy.resources.base import Resource
from felixpy.resources.ippool import IPPool
from ipam.errors import PoolCheckError
from ipam.ipam import IPAM
from ipam.pools import check_pool_delete


class PoolInUseError(Exception):
    pass


def guard_pool_deletes(args: argparse.Namespace, backend: Backend, targets: Iterable[Resource | str]) -> None:
    """Raise PoolInUseError naming the pool and its addresses in use, before anything is deleted."""
    pools = []
    for target in targets:
        if isinstance(target, IPPool | str):
            name = target if isinstance(target, str) else target.name
            try:
                stored = backend.get(IPPool, name)
            except NotFound:
                continue
            assert isinstance(stored, IPPool)
            pools.append(stored)
    if not pools:
        return
    with open_kv(args) as kv:
        ipam = IPAM(kv, backend, cache_seconds=0)
        for pool in pools:
            try:
                check_pool_delete(pool, in_use=ipam.pool_usage(pool.spec.cidr)[0])
            except PoolCheckError as err:
                raise PoolInUseError(str(err)) from None
