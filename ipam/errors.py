"""The IPAM exception tree, in one place, so callers (CNI plugin, felixctl, agent) can tell them apart.

IPAMError
├── PoolExhausted          every usable pool is full for this node (never "fixed" by a retry soon)
├── NoUsablePool           no enabled pool of this IP version matches the node, the intended use, the request
├── PoolNotFound           a requested pool (CIDR or name) does not exist
├── AddressNotInPool       an explicit address lies in no IP pool
├── AddressInUse           an explicit address is already assigned
├── AddressReserved        an explicit address lies in an IPReservation
├── DatastoreLocked        ClusterInformation datastoreReady is false (felixctl datastore migrate lock)
├── BlockLimitReached      strictAffinity/maxBlocksPerHost: the node may claim no further block
├── AddressNotAssigned     release/lookup of a free address (felixctl reports it; release_ips ignores it)
├── BlockNotEmpty          release_affinity(must_be_empty=True) on a block that still holds addresses
├── NodeStillExists        gc_node refused: the Node resource is still there
├── NodeNotFound           tunnel_address for a node that has no Node resource
├── RetriesExhausted       lost the compare-and-swap race too many times (retryable: "try again later")
└── PoolCheckError         a pool change felixctl must refuse (a ValueError too)
    ├── PoolOverlap
    ├── PoolImmutableField
    └── PoolInUse

Datastore failures (felixpy.datastore.errors.Unavailable, ...) propagate unchanged.
"""

from __future__ import annotations


class IPAMError(Exception):
    """Base of every IPAM failure."""


class PoolExhausted(IPAMError):
    pass


class NoUsablePool(IPAMError):
    pass


class PoolNotFound(IPAMError):
    pass


class AddressNotInPool(IPAMError):
    pass


class AddressInUse(IPAMError):
    pass


class AddressReserved(IPAMError):
    pass


class DatastoreLocked(IPAMError):
    pass


class BlockLimitReached(IPAMError):
    pass


class AddressNotAssigned(IPAMError):
    pass


class BlockNotEmpty(IPAMError):
    pass


class NodeStillExists(IPAMError):
    pass


class NodeNotFound(IPAMError):
    pass


class HandleExists(IPAMError):
    """An assignment asked for a new handle (``auto_assign(new_handle=True)``) and the handle was
    already there: nothing was assigned; read what it holds (a repeated request)."""


class RetriesExhausted(IPAMError):
    """Retryable: too many compare-and-swap conflicts in a row."""


class PoolCheckError(IPAMError, ValueError):
    pass


class PoolOverlap(PoolCheckError):
    pass


class PoolImmutableField(PoolCheckError):
    pass


class PoolInUse(PoolCheckError):
    pass
