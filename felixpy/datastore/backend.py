"""The resource-level datastore interface: typed v3 resources with CAS on resourceVersion.

Implementations: `felixpy.datastore.resources.KVBackend` (etcd layout over a KV) and,
later, `felixpy.datastore.kubernetes.KubernetesBackend`. Callers never see keys.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from felixpy.resources.base import Resource


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    """A change to a resource. ``obj`` is the new object (put) or the last known one (delete, may be None)."""

    type: Literal["put", "delete"]
    kind: builtins.type[Resource]
    name: str
    namespace: str | None
    obj: Resource | None
    revision: int


R = TypeVar("R", bound=Resource)


class Backend(Protocol):
    def get(self, kind: type[R], name: str, namespace: str | None = None) -> R:
        """Raises NotFound."""
        ...

    def list(self, kind: type[R], namespace: str | None = None) -> tuple[builtins.list[R], int]:
        """Objects of ``kind`` (in ``namespace``, or all namespaces when None) and the list revision."""
        ...

    def create(self, obj: R) -> R:
        """Raises AlreadyExists. Returns the stored object with metadata.resourceVersion set."""
        ...

    def update(self, obj: R) -> R:
        """CAS on obj.metadata.resource_version (required). Raises Conflict or NotFound."""
        ...

    def apply(self, obj: R) -> R:
        """Create or replace, ignoring the revision (what `felixctl apply` does)."""
        ...

    def delete(
        self, kind: type[Resource], name: str, namespace: str | None = None, revision: str | None = None
    ) -> Resource:
        """Raises NotFound, or Conflict when ``revision`` is given and stale. Returns the deleted object."""
        ...

    def watch(
        self, kinds: builtins.list[type[Resource]], start_revision: int
    ) -> Iterator[builtins.list[ResourceEvent]]: ...
