"""`KVBackend`: typed v3 resources stored in Calico's etcd layout over any `KV`.

Key:   /calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>
Value: the JSON of ``obj.to_dict()`` without ``metadata.resourceVersion``; on read the
       resourceVersion is the key's etcd mod revision (the CAS token), as a string.
The Kubernetes kinds felixpy keeps in etcd mode (networking.k8s.io NetworkPolicy,
Namespace) live under the same prefix with their own plurals.

Events from `watch` and from `decode_event` build their pydantic model lazily
(`LazyResourceEvent`): the JSON is decoded once, the model on first access of ``.obj``.
A syncer delivering 10,000 endpoints to a consumer that only needs some of them does
not pay for validating all of them up front.
"""

from __future__ import annotations

import builtins
import datetime
import inspect
import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any, Literal, cast

from felixpy.datastore.backend import R, ResourceEvent
from felixpy.datastore.errors import AlreadyExists, Conflict, NotFound
from felixpy.datastore.kv import KV, KeyValue, WatchEvent
from felixpy.resources.base import Resource
from felixpy.resources.registry import kind_by_plural

ROOT = "/calico/resources/v3/projectcalico.org/"
APPLY_RETRIES = 5


def kind_prefix(kind: type[Resource], namespace: str | None = None) -> str:
    base = f"{ROOT}{kind.PLURAL}/"
    return f"{base}{namespace}/" if kind.NAMESPACED and namespace else base


def resource_key(kind: type[Resource], name: str, namespace: str | None = None) -> str:
    if not name or "/" in name:
        raise ValueError(f"invalid {kind.KIND} name {name!r}")
    if kind.NAMESPACED:
        return f"{ROOT}{kind.PLURAL}/{namespace or 'default'}/{name}"
    return f"{ROOT}{kind.PLURAL}/{name}"


def parse_key(key: str) -> tuple[type[Resource], str | None, str] | None:
    """(kind, namespace, name) of a resource key, or None for keys that are not ours."""
    if not key.startswith(ROOT):
        return None
    parts = key[len(ROOT) :].split("/")
    kind = kind_by_plural(parts[0])
    if kind is None:
        return None
    if kind.NAMESPACED and len(parts) == 3:
        return kind, sys.intern(parts[1]), parts[2]
    if not kind.NAMESPACED and len(parts) == 2:
        return kind, None, parts[1]
    return None


def encode(obj: Resource) -> tuple[str, bytes]:
    """(key, stored value) of a resource; the value never carries resourceVersion."""
    data = obj.to_dict()
    meta = data.setdefault("metadata", {})
    meta.pop("resourceVersion", None)
    if not type(obj).NAMESPACED:
        meta.pop("namespace", None)
    elif not meta.get("namespace"):
        meta["namespace"] = "default"
    return resource_key(type(obj), obj.name, meta.get("namespace")), _dumps(data)


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode_dict(value: bytes, revision: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(value)
    data.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return data


def decode(kind: type[Resource], value: bytes, revision: int) -> Resource:
    return kind.model_validate(decode_dict(value, revision))


class LazyResourceEvent(ResourceEvent):
    """A ResourceEvent holding the stored JSON; ``obj`` is parsed and validated on first access.

    ``raw`` is the stored value (for a delete: the last value, or None). The model comes from
    pydantic's own JSON parser in one pass (faster than json.loads + model_validate), with
    ``metadata.resourceVersion`` set to the event's revision.
    """

    __slots__ = ("_model", "_raw")
    _model: Resource | None
    _raw: bytes | None

    def __init__(
        self,
        event_type: Literal["put", "delete"],
        kind: type[Resource],
        name: str,
        namespace: str | None,
        raw: bytes | None,
        revision: int,
    ):
        setattr_ = object.__setattr__
        setattr_(self, "type", event_type)
        setattr_(self, "kind", kind)
        setattr_(self, "name", name)
        setattr_(self, "namespace", namespace)
        setattr_(self, "revision", revision)
        setattr_(self, "_raw", raw)
        setattr_(self, "_model", None)

    @property
    def obj(self) -> Resource | None:
        model = self._model
        if model is None and self._raw:
            kind: Any = self.kind  # (ResourceEvent's field named `type` confuses mypy here)
            model = kind.model_validate_json(self._raw)
            model.metadata.resource_version = str(self.revision)
            object.__setattr__(self, "_model", model)
        return model

    @property
    def raw(self) -> bytes | None:
        return self._raw

    @property
    def data(self) -> dict[str, Any] | None:
        """The decoded JSON (camelCase wire form, resourceVersion set), without building the model."""
        return decode_dict(self._raw, self.revision) if self._raw else None


def decode_event(ev: WatchEvent) -> LazyResourceEvent | None:
    """A KV watch event as a resource event (None for keys outside the resource layout)."""
    parsed = parse_key(ev.key)
    if parsed is None:
        return None
    kind, ns, name = parsed
    raw = ev.value if ev.type == "put" else ev.prev_value
    return LazyResourceEvent(ev.type, kind, name, ns, raw or None, ev.mod_revision)


def kv_to_event(kv: KeyValue) -> LazyResourceEvent | None:
    return decode_event(WatchEvent("put", kv.key, kv.value, kv.mod_revision))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ResourceWatch:
    """Iterator of ``list[ResourceEvent]`` over a KV watch; ``close()`` ends it from any thread."""

    def __init__(self, inner: Iterator[list[WatchEvent]], plurals: set[str] | None):
        self._inner = inner
        self._plurals = plurals

    def __iter__(self) -> ResourceWatch:
        return self

    def __next__(self) -> list[ResourceEvent]:
        while True:
            out: list[ResourceEvent] = []
            for ev in next(self._inner):
                rev = decode_event(ev)
                if rev is not None and (self._plurals is None or _plural(rev) in self._plurals):
                    out.append(rev)
            if out:
                return out

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def _plural(ev: LazyResourceEvent) -> str:
    kind: Any = ev.kind
    return str(kind.PLURAL)


class KVBackend:
    """The Backend protocol (backend.py) in Calico's etcd v3 layout."""

    def __init__(self, kv: KV):
        self.kv = kv
        self._can_pin = "revision" in inspect.signature(kv.list).parameters

    def get(self, kind: type[R], name: str, namespace: str | None = None) -> R:
        kv = self.kv.get(resource_key(kind, name, namespace))
        if kv is None:
            raise NotFound(f"{kind.KIND} {_label(name, namespace, kind)} not found")
        return cast("R", decode(kind, kv.value, kv.mod_revision))

    def list(self, kind: type[R], namespace: str | None = None) -> tuple[builtins.list[R], int]:
        kvs, rev = self.kv.list(kind_prefix(kind, namespace))
        out = []
        for kv in kvs:
            parsed = parse_key(kv.key)
            if parsed is not None and parsed[0] is kind:
                out.append(decode(kind, kv.value, kv.mod_revision))
        return cast("tuple[list[R], int]", (out, rev))

    def list_events(
        self, kind: type[Resource], revision: int | None = None
    ) -> tuple[builtins.list[LazyResourceEvent], int]:
        """Like `list`, as lazy put events (the syncer's path); ``revision`` pins the read when the KV can."""
        prefix = kind_prefix(kind)
        pin = {"revision": revision} if revision and self._can_pin else {}
        kvs, rev = self.kv.list(prefix, **pin)
        namespaced, new = kind.NAMESPACED, LazyResourceEvent
        events = []
        cut = len(prefix)
        for kv in kvs:
            parts = kv.key[cut:].split("/")
            if namespaced and len(parts) == 2:
                ns, name = sys.intern(parts[0]), parts[1]  # one copy per namespace, not per resource
            elif not namespaced and len(parts) == 1:
                ns, name = None, parts[0]
            else:
                continue
            events.append(new("put", kind, name, ns, kv.value, kv.mod_revision))
        return events, rev

    def create(self, obj: R) -> R:
        data = obj.to_dict()
        meta = data.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        stored = type(obj).model_validate(data)
        key, value = encode(stored)
        rev = self.kv.create(key, value)
        return cast("R", decode(type(obj), value, rev))

    def update(self, obj: R) -> R:
        if not obj.metadata.resource_version:
            raise ValueError(f"update of {obj.kind} {obj.name!r} needs metadata.resourceVersion")
        key, value = encode(obj)
        rev = self.kv.update(key, value, int(obj.metadata.resource_version))
        return cast("R", decode(type(obj), value, rev))

    def apply(self, obj: R) -> R:
        kind = type(obj)
        for _ in range(APPLY_RETRIES):
            try:
                current = self.get(kind, obj.name, obj.namespace)
            except NotFound:
                try:
                    return self.create(obj)
                except AlreadyExists:  # lost a create race: re-read and update
                    continue
            data = obj.to_dict()
            meta = data.setdefault("metadata", {})
            if current.metadata.uid:
                meta.setdefault("uid", current.metadata.uid)
            if current.metadata.creation_timestamp:
                meta.setdefault("creationTimestamp", current.metadata.creation_timestamp)
            meta["resourceVersion"] = current.metadata.resource_version
            try:
                return self.update(kind.model_validate(data))
            except (Conflict, NotFound):
                continue
        raise Conflict(f"apply of {kind.KIND} {obj.name!r} kept losing races")

    def delete(
        self, kind: type[Resource], name: str, namespace: str | None = None, revision: str | None = None
    ) -> Resource:
        key = resource_key(kind, name, namespace)
        for _ in range(APPLY_RETRIES):
            kv = self.kv.get(key)
            if kv is None:
                raise NotFound(f"{kind.KIND} {_label(name, namespace, kind)} not found")
            if revision is not None and int(revision) != kv.mod_revision:
                raise Conflict(f"{kind.KIND} {name!r}: revision {revision} is stale (now {kv.mod_revision})")
            try:
                self.kv.delete(key, kv.mod_revision)
            except Conflict:
                if revision is not None:
                    raise
                continue
            return decode(kind, kv.value, kv.mod_revision)
        raise Conflict(f"delete of {kind.KIND} {name!r} kept losing races")

    def watch(self, kinds: builtins.list[type[Resource]], start_revision: int) -> ResourceWatch:
        if len(kinds) == 1:
            return ResourceWatch(self.kv.watch(kind_prefix(kinds[0]), start_revision), None)
        return ResourceWatch(self.kv.watch(ROOT, start_revision), {k.PLURAL for k in kinds})


def _label(name: str, namespace: str | None, kind: type[Resource]) -> str:
    return f"'{namespace or 'default'}/{name}'" if kind.NAMESPACED else f"'{name}'"
