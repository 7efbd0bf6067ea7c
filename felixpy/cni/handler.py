"""Agent side of the CNI plugin: ADD / DEL / CHECK, run in the warm agent process.

ADD = IPAM (handle ``<network>.<containerID>``) + veth (host ``cali<11 hex>``) + WorkloadEndpoint
write + the endpoint injected into the writer loop, so the ADD returns only once the host route is
programmed (and, with a policy engine, the endpoint's chains). ADD is idempotent per container ID:
a repeat finds the same allocation and, when the pod side is intact, returns the same result
without touching the interface. DEL of an unknown container succeeds. If anything after the IPAM
assignment of a fresh ADD fails, the addresses are released.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple, cast

import structlog

from felixpy.cni import inspect
from felixpy.cni.request import (
    CNIRequest,
    HandlerError,
    format_result,
    ipam_options,
    parse_request,
    wep_name,
)
from felixpy.cni.validate import InvalidInput, check_request
from felixpy.dataplane.errors import NetnsNotFound
from felixpy.dataplane.iface_names import veth_name_for_container, veth_name_for_workload
from felixpy.dataplane.links import HOST_VETH_MAC, VethSpec, delete_container_iface, host_addresses
from felixpy.dataplane.sysctl import netns_path
from felixpy.datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound, Unavailable
from felixpy.datastore.resources import KVBackend, resource_key
from felixpy.resources import WorkloadEndpoint
from felixpy.resources.fields import FieldError
from felixpy.resources.name_rules import check_dns_label, check_wep_name
from felixpy.runtime.writer import ResourceMsg, Writer
from ipam.errors import DatastoreLocked, HandleExists

if TYPE_CHECKING:
    from felixpy.dataplane.links import WorkloadLinks
    from felixpy.dataplane.linux import PolicyDriver
    from felixpy.datastore.backend import Backend
    from felixpy.datastore.kv import KV
    from ipam.ipam import IPAM

log = structlog.get_logger(__name__)
_steps: threading.local = threading.local()
ERR_CONTAINER_UNKNOWN, ERR_INVALID_ENV, ERR_INVALID_CONFIG, ERR_TRY_AGAIN = 3, 4, 7, 11
ERR_INTERNAL, ERR_IPAM, ERR_CHECK = 100, 101, 102
DELETE_RETRIES = 10
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def _in_thread(fn: Callable[[*Ts], T], *args: *Ts) -> Future[tuple[T, float]]:
    """``fn(*args)`` in a helper thread that ends with it (nothing stays behind per request), and
    how long it took (milliseconds, for the ``cni.done`` steps)."""
    done: Future[tuple[T, float]] = Future()

    def body() -> None:
        start = time.perf_counter()
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the caller
            done.set_exception(exc)
        else:
            done.set_result((result, round((time.perf_counter() - start) * 1000, 2)))

    threading.Thread(target=body, name="felixpy-cni-ipam", daemon=True).start()
    return done


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Time one step of the current request (milliseconds, logged with ``cni.done``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        ms = getattr(_steps, "ms", None)
        if ms is not None:
            ms[name] = round(ms.get(name, 0.0) + (time.perf_counter() - start) * 1000, 2)


def validate_request(req: CNIRequest) -> None:
    """The request's identifiers (felixpy.cni.validate) before anything is allocated or stored:
    whatever forwards requests to the agent, the agent checks them itself."""
    try:
        check_request(
            req.command,
            container_id=req.container_id,
            ifname=req.ifname,
            netns=req.netns,
            network=req.network,
            exists=lambda netns: os.path.exists(netns_path(netns)),
        )
    except InvalidInput as exc:
        raise HandlerError(exc.code, exc.msg) from None


class CNIHandler:
    def __init__(
        self,
        *,
        nodename: str,
        kv: KV,
        backend: Backend,
        ipam: IPAM,
        links: WorkloadLinks,
        writer: Writer,
        mtu_path: str,
        prefix: str = "cali",
        timeout: float = 60.0,
        policy: PolicyDriver | None = None,
    ) -> None:
        self.nodename = nodename
        self.kv, self.backend, self.ipam, self.links = kv, backend, ipam, links
        self.writer = writer
        self.mtu_path = mtu_path
        self.prefix = prefix
        self.timeout = timeout
        self.policy = policy

    def handle(self, raw: dict[str, object]) -> dict[str, object]:
        start = time.monotonic()
        _steps.ms = {}
        try:
            req = parse_request(raw)
            op = {"ADD": self.add, "DEL": self.delete, "CHECK": self.check}.get(req.command)
            if op is None:
                raise HandlerError(4, f"unknown CNI command {req.command!r}")
            validate_request(req)
            result = op(req)
            log.info(
                "cni.done",
                command=req.command,
                container=req.container_id[:12],
                seconds=round(time.monotonic() - start, 4),
                steps_ms=_steps.ms,
            )
            return {"result": result}
        except HandlerError as exc:
            log.warning(
                "cni.failed", command=raw.get("command"), code=exc.code, msg=exc.msg, details=exc.details
            )
            return exc.to_json()
        except (Unavailable, TimeoutError) as exc:
            return HandlerError(ERR_TRY_AGAIN, "datastore unavailable", str(exc)).to_json()
        except Exception as exc:
            log.exception("cni.error", command=raw.get("command"))
            return HandlerError(ERR_INTERNAL, f"{type(exc).__name__}: {exc}").to_json()

    # ---- names ----------------------------------------------------------------------------
    def host_iface(self, req: CNIRequest) -> str:
        if req.pod:
            return veth_name_for_workload(req.namespace, req.pod, prefix=self.prefix)
        return veth_name_for_container(req.container_id, prefix=self.prefix)

    def wep_key(self, req: CNIRequest) -> tuple[str, str]:
        workload = req.pod or req.container_id
        return req.namespace, wep_name(self.nodename, req.orchestrator, workload, req.ifname)

    def _check_names(self, req: CNIRequest) -> None:
        """The endpoint's namespace and name (from K8S_POD_NAMESPACE / K8S_POD_NAME in CNI_ARGS) are
        valid resource names: checked before IPAM, not found out when the endpoint is written."""
        ns, name = self.wep_key(req)
        try:
            check_dns_label(ns, "K8S_POD_NAMESPACE")
            check_wep_name(name)
        except FieldError as exc:
            raise HandlerError(ERR_INVALID_ENV, f"CNI_ARGS: {exc.reason}") from None

    def mtu(self, req: CNIRequest) -> int:
        if req.config.get("mtu"):
            return int(req.config["mtu"])
        try:
            with open(self.mtu_path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return 1500

    # ---- ADD ----------------------------------------------------------------------------
    def add(self, req: CNIRequest) -> dict[str, object]:
        """IPAM, the veth, the endpoint written, its route and chains programmed: then the result."""
        self._check_names(req)
        self._wait_in_sync()
        iface = self.host_iface(req)
        if not self.links.exists(iface):  # no host side: the pair is made while IPAM assigns
            return self._add_overlapped(req, iface)
        with step("ipam"):
            addresses, fresh = self._addresses(req)
        try:
            return self._plumb_and_record(req, addresses, fresh=fresh)
        except BaseException:
            if fresh:
                self._release(req, "ADD failed after assignment")
            raise

    def _release(self, req: CNIRequest, reason: str) -> None:
        self.ipam.release_by_handle(req.handle_id)
        log.info("cni.ipam_released", handle=req.handle_id, reason=reason)

    def _add_overlapped(self, req: CNIRequest, iface: str) -> dict[str, object]:
        """A pod without a host veth (a fresh ADD, or one whose interface is gone): IPAM (etcd round
        trips) runs in a helper thread while this one makes the veth pair for the address families
        the config asks for; the pod side gets its addresses once IPAM answers. Whatever fails, the
        other half is undone: a fresh assignment released, a pair made deleted."""
        wanted = ipam_options(req.config)
        families = frozenset(v for v, n in ((4, wanted.num_v4), (6, wanted.num_v6)) if n > 0)
        assigned = _in_thread(self._addresses, req)
        spec = VethSpec(iface, req.netns, (), req.ifname, self.mtu(req))
        try:
            with step("veth"):
                pair = self.links.make_pair(spec, families)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                (_addresses, fresh), _ms = assigned.result(self.timeout)
                if fresh:
                    self._release(req, "ADD failed making the veth")
            if isinstance(exc, NetnsNotFound):
                raise HandlerError(ERR_CONTAINER_UNKNOWN, str(exc)) from exc
            raise
        try:
            (addresses, fresh), ms = assigned.result(self.timeout)
        except BaseException:
            self.links.delete(iface, reason="ADD failed in IPAM")
            raise
        _steps.ms["ipam"] = ms
        try:
            got: set[int] = {ipaddress.ip_interface(a).version for a in addresses}
            if got != set(families or {4}):  # held addresses of another shape: their sysctls
                self.links.repair_sysctls({iface: got})
            with step("veth"):
                mac = self.links.address_pod(pair, tuple(addresses)).container_mac
            return self._record(req, iface, addresses, mac)
        except BaseException:
            if fresh:
                self._release(req, "ADD failed after assignment")
            raise

    def _wait_in_sync(self) -> None:
        if not self.writer.in_sync.wait(self.timeout):
            raise HandlerError(ERR_TRY_AGAIN, "agent not in sync with the datastore yet")

    def _addresses(self, req: CNIRequest) -> tuple[list[str], bool]:
        """The container's addresses and whether they are fresh. A fresh ADD does not read its
        handle first: the assignment creates it in the block's transaction and reports one that
        exists already (HandleExists, nothing assigned): a repeated ADD, answered what it holds."""
        wanted = ipam_options(req.config)
        attrs = {"node": self.nodename, "namespace": req.namespace, "timestamp": str(time.time())}
        if req.pod:
            attrs["pod"] = req.pod
        if req.args.get("K8S_POD_UID"):
            attrs["uid"] = req.args["K8S_POD_UID"]  # the GC tells a re-created pod of the same name by it
        for new_handle in (True, False):
            try:
                got = self.ipam.auto_assign(
                    req.handle_id,
                    node=self.nodename,
                    num_v4=wanted.num_v4,
                    num_v6=wanted.num_v6,
                    attrs=attrs,
                    pools=list(wanted.pools) or None,
                    new_handle=new_handle,
                )
            except HandleExists:
                held = self.ipam.assignments_for_handle(req.handle_id)
                if held:
                    return list(host_addresses(held)), False
                continue  # a handle holding nothing: assign into it
            except DatastoreError:
                raise
            except DatastoreLocked as exc:  # datastore migration: the runtime retries the ADD later
                raise HandlerError(ERR_TRY_AGAIN, str(exc), type(exc).__name__) from exc
            except Exception as exc:
                raise HandlerError(
                    ERR_IPAM, f"IPAM could not assign an address: {exc}", type(exc).__name__
                ) from exc
            log.info("cni.ipam_assigned", handle=req.handle_id, addresses=got.v4 + got.v6)
            return list(host_addresses(got.v4 + got.v6)), True
        raise HandlerError(ERR_TRY_AGAIN, f"IPAM handle {req.handle_id} changed under the ADD")

    def _intact_mac(self, req: CNIRequest, iface: str, addresses: list[str]) -> str | None:
        """On a repeated ADD: the pod side's MAC when both sides are still as we left them."""
        pod_side = inspect.container_iface(req.netns, req.ifname)
        if pod_side is None or not set(addresses) <= set(pod_side.addresses):
            return None
        return pod_side.mac if inspect.host_iface(iface) is not None else None

    def _plumb_and_record(self, req: CNIRequest, addresses: list[str], *, fresh: bool) -> dict[str, object]:
        iface = self.host_iface(req)
        # A fresh assignment cannot have a pod side yet: only a repeated ADD checks what is there.
        mac = None if fresh else self._intact_mac(req, iface, addresses)
        if mac is None:
            try:
                with step("veth"):
                    veth = self.links.create(
                        VethSpec(iface, req.netns, tuple(addresses), req.ifname, self.mtu(req))
                    )
            except NetnsNotFound as exc:
                raise HandlerError(ERR_CONTAINER_UNKNOWN, str(exc)) from exc
            mac = veth.container_mac
        return self._record(req, iface, addresses, mac)

    def _record(self, req: CNIRequest, iface: str, addresses: list[str], mac: str) -> dict[str, object]:
        """The endpoint written and programmed (its route and chains in): the ADD's result."""
        with step("wep_write"):
            wep = self._write_wep(req, iface, addresses, mac)
        with step("dataplane"):
            self._program(req, wep)
        return format_result(
            req.cni_version,
            host_iface=iface,
            host_mac=HOST_VETH_MAC,
            ifname=req.ifname,
            mac=mac,
            sandbox=req.netns,
            addresses=addresses,
        )

    def _write_wep(self, req: CNIRequest, iface: str, addresses: list[str], mac: str) -> WorkloadEndpoint:
        ns, name = self.wep_key(req)
        # Without a kube-apiserver to ask, the service account is Kubernetes' default unless the runtime
        # passes K8S_POD_SERVICEACCOUNT (felixpy extension); labels and profiles then match what the
        # Kubernetes datastore derives from the Pod.
        sa = req.args.get("K8S_POD_SERVICEACCOUNT") or "default"
        labels = dict(req.labels) | {
            "projectcalico.org/namespace": ns,
            "projectcalico.org/orchestrator": req.orchestrator,
            "projectcalico.org/serviceaccount": sa,
        }
        wep = WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {
                    "orchestrator": req.orchestrator,
                    "node": self.nodename,
                    "containerID": req.container_id,
                    "pod": req.pod,
                    "endpoint": req.ifname,
                    "interfaceName": iface,
                    "ipNetworks": addresses,
                    "mac": mac,
                    "serviceAccountName": sa,
                    "profiles": [f"kns.{ns}", f"ksa.{ns}.{sa}"],
                },
            }
        )
        try:  # a fresh pod: one create; a repeated ADD finds the endpoint and updates it
            stored = self.backend.create(wep)
        except AlreadyExists:
            stored = self.backend.apply(wep)
        return cast(WorkloadEndpoint, stored)

    def _program(self, req: CNIRequest, wep: WorkloadEndpoint) -> None:
        msg = ResourceMsg(
            "WorkloadEndpoint",
            (wep.namespace or "", wep.name),
            wep,
            int(wep.metadata.resource_version or 0),
            local=True,
        )
        committed_ok = self.writer.submit_and_wait([msg], self.timeout)
        # A batch can report failure because of another endpoint (e.g. one being deleted right now);
        # what matters here is this endpoint's own routes.
        if not committed_ok and not all(
            inspect.host_route_to(ip, wep.spec.interface_name) for ip in wep.spec.ip_networks
        ):
            raise HandlerError(ERR_TRY_AGAIN, "dataplane did not program the endpoint in time")
        if self.policy is not None:
            deadline = time.monotonic() + self.timeout
            while not self.policy.endpoint_programmed(wep.spec.interface_name):
                if time.monotonic() > deadline:
                    raise HandlerError(ERR_TRY_AGAIN, "policy for the endpoint not programmed in time")
                time.sleep(0.01)

    # ---- DEL ----------------------------------------------------------------------------
    def delete(self, req: CNIRequest) -> None:
        """Endpoint first (the agent withdraws the route), then interfaces, then the addresses.

        The host veth is only looked up and queued (by interface index) for the agent's link
        reaper, which deletes it right after; its pod side goes with it (or with the pod's netns).

        The DEL waits for the commit that removes the endpoint's route, but not for the iptables
        removal of its chains: they match only its interface name, and the writer loop removes them
        with one plain commit once idle, or at the latest ``DEFERRED_MAX_SECONDS`` later (ADDs in
        between write insert-only; see LinuxDataplane.commit and Writer).
        """
        ns, name = self.wep_key(req)
        with step("wep_delete"):
            gone, ours = self._delete_wep(req, ns, name)
        if gone is not None:
            msg = ResourceMsg("WorkloadEndpoint", (ns, name), None, gone, local=True)
            with step("dataplane"):
                self.writer.submit_and_wait([msg], self.timeout)
        with step("veth"):
            queued = None
            if ours:  # by index, after the answer: the kernel's unregister is not the runtime's wait
                reason = f"CNI DEL of container {req.container_id[:12]}"
                queued = self.links.delete_later(self.host_iface(req), reason=reason)
            if queued is None and req.netns:  # not ours: the old container's own side (or a lone one)
                delete_container_iface(req.netns, req.ifname)
        with step("ipam"):
            released = self.ipam.release_by_handle(req.handle_id)
        if released:
            log.info("cni.ipam_released", handle=req.handle_id, addresses=released, reason="CNI DEL")
        return None

    def _delete_wep(self, req: CNIRequest, ns: str, name: str) -> tuple[int | None, bool]:
        """Delete this container's endpoint: (a revision no older than the delete or None, ours)."""
        for _ in range(DELETE_RETRIES):
            try:
                wep = cast(WorkloadEndpoint, self.backend.get(WorkloadEndpoint, name, ns))
            except NotFound:
                return None, True
            if wep.spec.container_id not in (None, req.container_id):
                return None, False  # the pod was re-created: the endpoint is its new container's
            rev = str(wep.metadata.resource_version or "") or None
            try:
                self._delete_at(ns, name, rev)
            except NotFound:
                return None, True
            except Conflict:  # rewritten since we read it: decide again on what is there now
                continue
            # Events of this endpoint older than the delete have revisions <= rev: those are the
            # ones a lagging watch must not replay over the local delete.
            return int(rev or 0) + 1, True
        raise HandlerError(ERR_TRY_AGAIN, f"workload endpoint {ns}/{name} keeps changing under the DEL")

    def _delete_at(self, ns: str, name: str, rev: str | None) -> None:
        """Delete the endpoint if it is still at ``rev`` (Conflict if not)."""
        if isinstance(self.backend, KVBackend) and rev is not None:
            # etcd: one compare-and-delete on the key (the backend would read the key again first)
            self.kv.delete(resource_key(WorkloadEndpoint, name, ns), int(rev))
        else:
            self.backend.delete(WorkloadEndpoint, name, ns, revision=rev)

    # ---- CHECK ----------------------------------------------------------------------------
    def check(self, req: CNIRequest) -> None:
        addresses = list(host_addresses(self.ipam.assignments_for_handle(req.handle_id)))
        problems = [] if addresses else [f"no IPAM allocation for handle {req.handle_id}"]
        iface = self.host_iface(req)
        if inspect.host_iface(iface) is None:
            problems.append(f"host interface {iface} missing")
        pod_side = inspect.container_iface(req.netns, req.ifname)
        if pod_side is None:
            problems.append(f"interface {req.ifname} missing in {req.netns}")
        for addr in addresses:
            if pod_side is not None and addr not in pod_side.addresses:
                problems.append(f"address {addr} missing on {req.ifname}")
            if not inspect.host_route_to(addr, iface):
                problems.append(f"route {addr} dev {iface} missing")
        try:
            self.backend.get(WorkloadEndpoint, self.wep_key(req)[1], req.namespace)
        except NotFound:
            problems.append("workload endpoint missing")
        if problems:
            raise HandlerError(ERR_CHECK, "CHECK failed: " + "; ".join(problems))
        return None
