"""Fallback for ``felixctl apply -f -`` while felixctl is not installed: the same datastore calls.

Run inside the etcd namespace as ``python -m felixpy.lab.applier`` with DATASTORE_TYPE and
ETCD_ENDPOINTS set; reads multi-document YAML on stdin and applies each document in order.
"""

from __future__ import annotations

import sys

import yaml

from felixpy.datastore.config import DatastoreConfig, connect_backend
from felixpy.resources.registry import kind_for


def main() -> int:
    backend = connect_backend(DatastoreConfig.from_env())
    for doc in yaml.safe_load_all(sys.stdin.read()):
        if not doc:
            continue
        kind = kind_for(doc.get("apiVersion", ""), doc.get("kind", ""))
        if kind is None:
            print(f"unknown kind {doc.get('apiVersion')}/{doc.get('kind')}", file=sys.stderr)
            return 1
        obj = backend.apply(kind.model_validate(doc))
        print(f"Successfully applied 1 '{obj.kind}' resource(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
