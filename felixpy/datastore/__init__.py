"""The datastore: a KV layer (etcd v3), typed resources over it, and the syncer.

    from felixpy.datastore import DatastoreConfig, connect_backend, Syncer
    backend = connect_backend(DatastoreConfig.from_env())   # KVBackend over EtcdKV (etcdv3)
    Syncer(backend, kinds, on_updates=..., on_status=...).start()

EtcdKV (felixpy.datastore.etcd) is not re-exported here so that importing the error tree
does not load gRPC.

Exceptions: felixpy.datastore.errors (one tree, documented there).
"""

from felixpy.datastore.backend import Backend, ResourceEvent
from felixpy.datastore.config import DatastoreConfig, connect_backend, connect_kv
from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, DatastoreError, NotFound, Unavailable
from felixpy.datastore.kv import KV, KeyValue, TxnOp, WatchEvent
from felixpy.datastore.resources import KVBackend, LazyResourceEvent
from felixpy.datastore.syncer import Status, Syncer, SyncerQueue, SyncStatus, Updates

__all__ = [
    "KV",
    "AlreadyExists",
    "Backend",
    "Compacted",
    "Conflict",
    "DatastoreConfig",
    "DatastoreError",
    "KVBackend",
    "KeyValue",
    "LazyResourceEvent",
    "NotFound",
    "ResourceEvent",
    "Status",
    "SyncStatus",
    "Syncer",
    "SyncerQueue",
    "TxnOp",
    "Unavailable",
    "Updates",
    "WatchEvent",
    "connect_backend",
    "connect_kv",
]
