"""`KubernetesBackend`: the Backend protocol over the Kubernetes API (`DATASTORE_TYPE=kubernetes`).

Pods are the WorkloadEndpoints, Nodes carry the BGP fields in annotations, Namespaces and
networking.k8s.io NetworkPolicies are read as they are, and the Calico kinds are CRD objects under
`crd.projectcalico.org/v1` (see felixpy.kube.convert). Compare-and-swap is on `metadata.resourceVersion`.

Requests go through the official client's `ApiClient` (its kubeconfig / in-cluster configuration,
TLS and bearer-token handling) with raw JSON bodies, so one code path serves every kind, native or
custom. Watches: one streaming watch per kind from a resourceVersion, with bookmarks; a stream the
server ends is resumed from the last resourceVersion seen (bookmarks included); `410 Gone` surfaces as
`Compacted`, which makes the Syncer re-list — the same contract as etcd compaction.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any, cast

from felixpy.datastore.backend import R, ResourceEvent
from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, DatastoreError, NotFound, Unavailable
from felixpy.kube import convert
from felixpy.resources.base import Resource
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace, ServiceAccount
from felixpy.resources.node import Node
from felixpy.resources.stored import Profile

LIST_PAGE = 500
WATCH_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 30.0
MAX_WATCH_RESTARTS = 10_000  # bound on resumes of server-closed streams over the watch's life


def api_path(kind: type[Resource], namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a kind (all namespaces when ``namespace`` is None)."""
    if kind is WorkloadEndpoint:
        base, plural = "/api/v1", "pods"
    elif kind is Node:
        base, plural = "/api/v1", "nodes"
    elif kind is Namespace:
        base, plural = "/api/v1", "namespaces"
    elif kind is ServiceAccount:
        base, plural = "/api/v1", "serviceaccounts"
    elif kind is K8sNetworkPolicy:
        base, plural = "/apis/networking.k8s.io/v1", "networkpolicies"
    else:
        base, plural = f"/apis/{convert.CRD_API_VERSION}", kind.PLURAL
    path = f"{base}/namespaces/{namespace}/{plural}" if kind.NAMESPACED and namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


def pod_name_of_wep(name: str) -> str:
    """The pod name inside a WorkloadEndpoint name `<node>-k8s-<pod>-<endpoint>` ('-' doubled per part)."""
    parts = name.replace("--", "\0").split("-")
    if len(parts) != 4 or parts[1] != "k8s":
        raise NotFound(f"WorkloadEndpoint {name!r} is not a Kubernetes pod endpoint")
    return parts[2].replace("\0", "-")


PROFILES_READ_ONLY = (
    "Profile objects are generated from Namespaces (kns.<namespace>) and ServiceAccounts "
    "(ksa.<namespace>.<serviceaccount>) in Kubernetes mode and cannot be written; "
    "label the Namespace or ServiceAccount instead"
)


class KubernetesBackend:
    # Kinds this backend generates from others instead of storing (the agent syncs their sources).
    SYNTHESISED_KINDS: frozenset[str] = frozenset({"Profile"})

    def __init__(self, api_client: Any, *, interface_prefix: str = "cali"):
        self.api = api_client
        self.interface_prefix = interface_prefix

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None) -> KubernetesBackend:
        from kubernetes import client, config

        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        return cls(client.ApiClient())

    @classmethod
    def for_url(cls, url: str) -> KubernetesBackend:
        from kubernetes import client

        conf = client.Configuration(host=url)
        return cls(client.ApiClient(conf))

    # -- HTTP --------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] = REQUEST_TIMEOUT_S,
    ) -> Any:
        q = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, _, _ = self.api.param_serialize(
            method, path, query_params=q, header_params=headers, auth_settings=["BearerToken"]
        )
        try:
            return self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except Exception as err:  # urllib3 / socket errors arrive wrapped in ApiException(status=0)
            status = int(getattr(err, "status", 0) or 0)
            if status:
                raise error_for(status, str(getattr(err, "body", err))) from err
            raise Unavailable(f"Kubernetes API unreachable: {err}") from err

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return self._json_of(self._request(method, path, **kw))

    @staticmethod
    def _json_of(resp: Any) -> dict[str, Any]:
        """The JSON body of a response; a Kubernetes error Status raised as the datastore error."""
        data = json.loads(resp.read() or b"{}")
        if resp.status >= 300:
            raise error_for(resp.status, data.get("message", ""), data.get("reason", ""))
        return data

    # -- reads ------------------------------------------------------------------------------------

    def _from_k8s(self, kind: type[Resource], obj: dict[str, Any]) -> Resource | None:
        if kind is WorkloadEndpoint:
            return convert.pod_to_wep(obj, interface_prefix=self.interface_prefix)
        if kind is Node:
            return convert.k8s_node_to_node(obj)
        return convert.crd_to_resource(kind, obj)

    def get(self, kind: type[R], name: str, namespace: str | None = None) -> R:
        if kind is Profile:
            return cast("R", self._get_profile(name))
        k8s_name = pod_name_of_wep(name) if kind is WorkloadEndpoint else name
        ns = (namespace or "default") if kind.NAMESPACED else None
        obj = self._from_k8s(kind, self._json("GET", api_path(kind, ns, k8s_name)))
        if obj is None:
            raise NotFound(f"{kind.KIND} {name} not found (the pod has no address yet)")
        return cast("R", obj)

    def list(self, kind: type[R], namespace: str | None = None) -> tuple[list[R], int]:
        if kind is Profile:
            return cast("tuple[list[R], int]", self._list_profiles())
        out: list[Resource] = []
        token: str | None = None
        for _ in range(100_000):
            page = self._json("GET", api_path(kind, namespace), query={"limit": LIST_PAGE, "continue": token})
            out += [r for r in (self._from_k8s(kind, o) for o in page.get("items", [])) if r is not None]
            token = page.get("metadata", {}).get("continue")
            if not token:
                return cast("tuple[list[R], int]", (out, int(page["metadata"]["resourceVersion"])))
        raise DatastoreError(f"listing {kind.KIND} did not finish")

    def list_events(
        self, kind: type[Resource], revision: int | None = None
    ) -> tuple[builtins.list[ResourceEvent], int]:
        """The Syncer's path: a list as put events, each carrying its object's resourceVersion.

        ``revision`` is accepted for the protocol; Kubernetes lists are read at the server's current
        revision, and the Syncer's per-kind high-water mark drops watch events the list already covered.
        """
        objs, rev = self.list(kind)
        events = [
            ResourceEvent(
                "put",
                kind,
                o.name,
                o.namespace if kind.NAMESPACED else None,
                o,
                int(o.metadata.resource_version or 0),
            )
            for o in objs
        ]
        return events, rev

    def _get_profile(self, name: str) -> Profile:
        """A generated profile: ``kns.<ns>``, ``ksa.<ns>.<sa>`` or ``projectcalico-default-allow``."""
        if name == convert.DEFAULT_ALLOW_PROFILE:
            return convert.default_allow_profile()
        if name.startswith(convert.NAMESPACE_PROFILE_PREFIX):
            ns = self.get(Namespace, name[len(convert.NAMESPACE_PROFILE_PREFIX) :])
            assert isinstance(ns, Namespace)
            return convert.namespace_profile(ns)
        ns_name, dot, sa_name = name[len(convert.SA_PROFILE_PREFIX) :].partition(".")
        if name.startswith(convert.SA_PROFILE_PREFIX) and dot and ns_name and sa_name:
            sa = self.get(ServiceAccount, sa_name, ns_name)
            assert isinstance(sa, ServiceAccount)
            return convert.service_account_profile(sa)
        raise NotFound(
            f"Profile {name} not found (Kubernetes mode has kns.*, ksa.* and {convert.DEFAULT_ALLOW_PROFILE})"
        )

    def _list_profiles(self) -> tuple[builtins.list[Resource], int]:
        namespaces, ns_rev = self.list(Namespace)
        accounts, sa_rev = self.list(ServiceAccount)
        out: builtins.list[Resource] = [convert.default_allow_profile()]
        out += [convert.namespace_profile(ns) for ns in namespaces if isinstance(ns, Namespace)]
        out += [convert.service_account_profile(sa) for sa in accounts if isinstance(sa, ServiceAccount)]
        return out, max(ns_rev, sa_rev)

    # -- writes -----------------------------------------------------------------------------------

    def create(self, obj: R) -> R:
        kind = type(obj)
        if kind is Profile:
            raise DatastoreError(PROFILES_READ_ONLY)
        if convert.is_native(kind):
            return cast("R", self._patch_native(obj, create=True))
        body = convert.resource_to_crd(obj)
        return cast("R", self._store(kind, "POST", api_path(kind, obj.namespace), body))

    def update(self, obj: R) -> R:
        kind = type(obj)
        if kind is Profile:
            raise DatastoreError(PROFILES_READ_ONLY)
        if not obj.metadata.resource_version:
            raise Conflict(f"{kind.KIND} {obj.name}: update needs metadata.resourceVersion")
        if convert.is_native(kind):
            return cast("R", self._patch_native(obj))
        body = convert.resource_to_crd(obj)
        return cast("R", self._store(kind, "PUT", api_path(kind, obj.namespace, obj.name), body))

    def apply(self, obj: R) -> R:
        kind = type(obj)
        if kind is Profile:
            raise DatastoreError(PROFILES_READ_ONLY)
        if convert.is_native(kind):
            return cast("R", self._patch_native(obj))
        for _ in range(5):
            try:
                current = self.get(kind, obj.name, obj.namespace)
            except NotFound:
                try:
                    return self.create(obj)
                except AlreadyExists:
                    continue
            fresh = obj.model_copy(deep=True)
            fresh.metadata.resource_version = current.metadata.resource_version
            try:
                return self.update(fresh)
            except Conflict:
                continue
        raise Conflict(f"{kind.KIND} {obj.name}: kept changing while being applied")

    def delete(
        self, kind: type[Resource], name: str, namespace: str | None = None, revision: str | None = None
    ) -> Resource:
        if kind is Profile:
            raise DatastoreError(PROFILES_READ_ONLY)
        current = self.get(kind, name, namespace)
        if kind is WorkloadEndpoint:
            # the CNI DEL of a pod: the pod stays Kubernetes'; its Calico annotations go (as Calico does)
            assert isinstance(current, WorkloadEndpoint)
            gone = {a: None for a in (convert.ANN_POD_IP, convert.ANN_POD_IPS, convert.ANN_CONTAINER_ID)}
            patch: dict[str, Any] = {"metadata": {"annotations": gone}}
            if revision:
                patch["metadata"]["resourceVersion"] = revision
            path = api_path(kind, current.namespace, current.spec.pod) + "/status"
            self._json("PATCH", path, body=patch, content_type="application/merge-patch+json")
            return current
        if convert.is_native(kind):
            raise DatastoreError(
                f"{kind.KIND} objects are owned by Kubernetes in this mode; delete the "
                f"{'Pod' if kind is WorkloadEndpoint else kind.KIND} itself"
            )
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if revision:
            body["preconditions"] = {"resourceVersion": revision}
        self._json("DELETE", api_path(kind, current.namespace, name), body=body)
        return current

    def _store(self, kind: type[Resource], method: str, path: str, body: dict[str, Any]) -> Resource:
        result = self._from_k8s(kind, self._json(method, path, body=body))
        assert result is not None
        return result

    def _patch_native(self, obj: Resource, *, create: bool = False) -> Resource:
        kind = type(obj)
        if kind is WorkloadEndpoint:
            assert isinstance(obj, WorkloadEndpoint)
            # through the status subresource, as Calico's CNI plugin writes its pod annotations: the
            # node agent's RBAC then needs pods/status patch, not the right to change any pod's spec
            patch = convert.wep_to_pod_patch(obj)
            path = api_path(kind, obj.namespace, obj.spec.pod) + "/status"
        elif kind is Node:
            assert isinstance(obj, Node)
            patch, path = convert.node_to_k8s_patch(obj), api_path(kind, None, obj.name)
        else:
            raise DatastoreError(f"{kind.KIND} objects are read-only through felixpy in Kubernetes mode")
        if obj.metadata.resource_version and not create:
            patch["metadata"]["resourceVersion"] = obj.metadata.resource_version
        data = self._json("PATCH", path, body=patch, content_type="application/merge-patch+json")
        result = self._from_k8s(kind, data)
        if result is None:
            raise DatastoreError(f"{kind.KIND} {obj.name}: the patched pod is not an endpoint")
        return result

    # -- watch ------------------------------------------------------------------------------------

    def watch(self, kinds: builtins.list[type[Resource]], start_revision: int) -> KubeWatch:
        """Events from ``start_revision`` on (inclusive, as etcd's watch; Kubernetes' is exclusive)."""
        return KubeWatch(self, kinds, start_revision - 1)

    def _event(self, kind: type[Resource], etype: str, obj: dict[str, Any]) -> ResourceEvent:
        meta = obj.get("metadata", {})
        rev = int(meta.get("resourceVersion") or 0)
        res = None if etype == "DELETED" else self._from_k8s(kind, obj)
        if kind is WorkloadEndpoint:
            node = (obj.get("spec") or {}).get("nodeName") or ""
            name = convert.wep_name(node, "k8s", meta["name"], "eth0")
        else:
            name = meta["name"]
        ns = meta.get("namespace") if kind.NAMESPACED else None
        if res is None:
            return ResourceEvent("delete", kind, name, ns, None, rev)
        return ResourceEvent("put", kind, name, ns, res, rev)


class KubeWatch:
    """Batches of ResourceEvents from one watch per kind; ``close()`` ends it from any thread."""

    def __init__(self, backend: KubernetesBackend, kinds: builtins.list[type[Resource]], start_revision: int):
        self._backend = backend
        self._queue: queue.Queue[list[ResourceEvent] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._responses: list[Any] = []
        self._threads = [
            threading.Thread(
                target=self._run, args=(k, start_revision), daemon=True, name=f"watch-{k.PLURAL}"
            )
            for k in kinds
        ]
        for t in self._threads:
            t.start()

    def __iter__(self) -> KubeWatch:
        return self

    def __next__(self) -> list[ResourceEvent]:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                self.close()
                raise item
            return item
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        for resp in list(self._responses):
            # Best effort: unblock a reader thread stuck in a stream read.
            with contextlib.suppress(Exception):
                resp.response.shutdown() if hasattr(resp.response, "shutdown") else resp.response.close()

    def _run(self, kind: type[Resource], revision: int) -> None:
        try:
            for _ in range(MAX_WATCH_RESTARTS):
                if self._stop.is_set():
                    return
                revision = self._stream(kind, revision)
        except BaseException as err:
            if not self._stop.is_set():
                self._queue.put(err)

    def _stream(self, kind: type[Resource], revision: int) -> int:
        query = {
            "watch": "true",
            "resourceVersion": str(revision),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        resp = self._backend._request(
            "GET", api_path(kind), query=query, timeout=(REQUEST_TIMEOUT_S, WATCH_TIMEOUT_S + 30)
        )
        if resp.status >= 300:
            data = json.loads(resp.read() or b"{}")
            raise error_for(resp.status, data.get("message", ""), data.get("reason", ""))
        self._responses.append(resp)
        try:
            for line in iter_lines(resp.response):
                revision = self._handle(kind, json.loads(line), revision)
        except (OSError, ValueError) as err:
            if not self._stop.is_set():
                raise Unavailable(f"watch of {kind.KIND} broke: {err}") from err
        finally:
            self._responses.remove(resp)
        return revision

    def _handle(self, kind: type[Resource], event: dict[str, Any], revision: int) -> int:
        etype, obj = event.get("type"), event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise Compacted(f"watch of {kind.KIND} from {revision}: {obj.get('message')}")
            raise error_for(int(obj.get("code") or 500), obj.get("message", ""), obj.get("reason", ""))
        rev = int(obj.get("metadata", {}).get("resourceVersion") or revision)
        if etype != "BOOKMARK":
            self._queue.put([self._backend._event(kind, str(etype), obj)])
        return rev


def iter_lines(resp: Any) -> Iterator[bytes]:
    buf = b""
    for chunk in resp.stream(4096, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line


def error_for(status: int, message: str, reason: str = "") -> DatastoreError:
    if status == 404:
        return NotFound(message or "not found")
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(message)
    if status == 409:
        return Conflict(message)
    if status == 410:
        return Compacted(message)
    if status in (429, 500, 502, 503, 504):
        return Unavailable(f"Kubernetes API answered {status}: {message}")
    return DatastoreError(f"Kubernetes API answered {status} {reason}: {message}")
