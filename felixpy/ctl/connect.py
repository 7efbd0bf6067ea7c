"""How felixctl commands reach the datastore (shared by every sub-command).

Where the settings come from, first match wins:
  1. ``--config FILE`` (calicoctl.cfg form, ``kind: CalicoAPIConfig``);
  2. the environment, when ``DATASTORE_TYPE`` or ``ETCD_ENDPOINTS`` is set;
  3. ``/etc/felixpy/felixctl.cfg`` when it exists, else Calico's ``/etc/calico/calicoctl.cfg``;
  4. the environment's defaults (etcd at http://127.0.0.1:2379).

Sub-commands get an ``argparse.Namespace`` with ``config`` set and use::

    with open_backend(args) as backend:   # typed resources (felixpy.datastore.backend.Backend)
        ...
    with open_kv(args) as kv:             # raw keys, for IPAM (felixpy.datastore.kv.KV)
        ...
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from felixpy.datastore.backend import Backend
from felixpy.datastore.config import DatastoreConfig, connect_backend, connect_kv
from felixpy.datastore.kv import KV

DEFAULT_CONFIG = Path("/etc/felixpy/felixctl.cfg")
CALICO_CONFIG = Path("/etc/calico/calicoctl.cfg")  # calicoctl's default, honoured beside felixpy's own
_ENV_KEYS = ("DATASTORE_TYPE", "ETCD_ENDPOINTS")


class ConfigError(Exception):
    """The datastore settings could not be read (bad file, bad values)."""


def datastore_config(args: argparse.Namespace) -> DatastoreConfig:
    path = getattr(args, "config", None)
    if not path and not any(os.environ.get(k) for k in _ENV_KEYS):
        path = next((str(p) for p in (DEFAULT_CONFIG, CALICO_CONFIG) if p.is_file()), None)
    try:
        return DatastoreConfig.load(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        source = f"config file {path}" if path else "the environment"
        raise ConfigError(f"invalid datastore settings in {source}: {exc}") from None


@contextmanager
def open_kv(args: argparse.Namespace) -> Iterator[KV]:
    kv = connect_kv(datastore_config(args))
    try:
        yield kv
    finally:
        kv.close()


@contextmanager
def open_backend(args: argparse.Namespace) -> Iterator[Backend]:
    backend = connect_backend(datastore_config(args))
    try:
        yield backend
    finally:
        closer = getattr(getattr(backend, "kv", backend), "close", None)
        if callable(closer):
            closer()
