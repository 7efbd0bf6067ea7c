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
import os
import time
from typing import Any

import structlog

from felixpy.cni import inspect
from felixpy.cni.request import CNIRequest, HandlerError, format_result, parse_request, wep_name
from felixpy.dataplane.errors import NetnsNotFound
from felixpy.dataplane.links import HOST_VETH_MAC, VethSpec, delete_container_iface, host_addresses
from felixpy.dataplane.names import veth_name_for_container, veth_name_for_workload
from felixpy.datastore.errors import DatastoreError, NotFound, Unavailable
from felixpy.node.writer import ResourceMsg, Writer
from felixpy.resources import WorkloadEndpoint

log = structlog.get_logger(__name__)
ERR_CONTAINER_UNKNOWN, ERR_INVALID_CONFIG, ERR_TRY_AGAIN = 3, 7, 11
ERR_INTERNAL, ERR_IPAM, ERR_CHECK = 100, 101, 102


class CNIHandler:
    def __init__(
        self,
        *,
        nodename: str,
        kv: Any,
        backend: Any,
        ipam: Any,
        links: Any,
        writer: Writer,
        mtu_path: str,
        prefix: str = "cali",
        timeout: float = 60.0,
        policy: Any | None = None,
    ) -> None:
        self.nodename = nodename
        self.kv, self.backend, self.ipam, self.links = kv, backend, ipam, links
        self.writer = writer
        self.mtu_path = mtu_path
        self.prefix = prefix
        self.timeout = timeout
        self.policy = policy

    def handle(self, raw: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        try:
            req = parse_request(raw)
            op = {"ADD": self.add, "DEL": self.delete, "CHECK": self.check}.get(req.command)
            if op is None:
                raise HandlerError(4, f"unknown CNI command {req.command!r}")
            result = op(req)
            log.info(
                "cni.done",
                command=req.command,
                container=req.container_id[:12],
                seconds=round(time.monotonic() - start, 4),
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

    def mtu(self, req: CNIRequest) -> int:
        if req.config.get("mtu"):
            return int(req.config["mtu"])
        try:
            with open(self.mtu_path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return 1500

    # ---- ADD ------------------------------------------------------------------------------
    def add(self, req: CNIRequest) -> dict[str, Any]:
        if not req.netns or not os.path.exists(
            req.netns if "/" in req.netns else f"/var/run/netns/{req.netns}"
        ):
            raise HandlerError(ERR_CONTAINER_UNKNOWN, f"network namespace {req.netns!r} does not exist")
        self._wait_in_sync()
        addresses, fresh = self._addresses(req)
        try:
            return self._plumb_and_record(req, addresses)
        except BaseException:
            if fresh:
                self.ipam.release_by_handle(req.handle_id)
                log.info("cni.ipam_released", handle=req.handle_id, reason="ADD failed after assignment")
            raise

    def _wait_in_sync(self) -> None:
        if not self.writer.in_sync.wait(self.timeout):
            raise HandlerError(ERR_TRY_AGAIN, "agent not in sync with the datastore yet")

    def _addresses(self, req: CNIRequest) -> tuple[list[str], bool]:
        held = self.ipam.assignments_for_handle(req.handle_id)
        if held:
            return list(host_addresses(held)), False
        attrs = {"node": self.nodename, "namespace": req.namespace, "timestamp": str(time.time())}
        if req.pod:
            attrs["pod"] = req.pod
        try:
            got = self.ipam.auto_assign(req.handle_id, node=self.nodename, num_v4=1, attrs=attrs)
        except DatastoreError:
            raise
        except Exception as exc:
            raise HandlerError(
                ERR_IPAM, f"IPAM could not assign an address: {exc}", type(exc).__name__
            ) from exc
        log.info("cni.ipam_assigned", handle=req.handle_id, addresses=got.v4 + got.v6)
        return list(host_addresses(got.v4 + got.v6)), True

    def _plumb_and_record(self, req: CNIRequest, addresses: list[str]) -> dict[str, Any]:
        iface = self.host_iface(req)
        pod_side = inspect.container_iface(req.netns, req.ifname)
        intact = (
            pod_side is not None
            and set(addresses) <= set(pod_side.addresses)
            and inspect.host_iface(iface) is not None
        )
        if intact and pod_side is not None:
            mac = pod_side.mac
        else:
            try:
                veth = self.links.create(
                    VethSpec(iface, req.netns, tuple(addresses), req.ifname, self.mtu(req))
                )
            except NetnsNotFound as exc:
                raise HandlerError(ERR_CONTAINER_UNKNOWN, str(exc)) from exc
            mac = veth.container_mac
        wep = self._write_wep(req, iface, addresses, mac)
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
        stored = self.backend.apply(wep)
        return stored  # type: ignore[no-any-return]

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

    # ---- DEL ------------------------------------------------------------------------------
    def delete(self, req: CNIRequest) -> None:
        """Endpoint first (the agent withdraws the route), then interfaces, then the addresses."""
        ns, name = self.wep_key(req)
        try:
            wep = self.backend.get(WorkloadEndpoint, name, ns)
        except NotFound:
            wep = None
        ours = wep is None or wep.spec.container_id in (None, req.container_id)
        if wep is not None and ours:
            with contextlib.suppress(NotFound):
                self.backend.delete(WorkloadEndpoint, name, ns)
            msg = ResourceMsg("WorkloadEndpoint", (ns, name), None, self.kv.revision(), local=True)
            self.writer.submit_and_wait([msg], self.timeout)
        if req.netns:
            delete_container_iface(req.netns, req.ifname)
        if ours:
            self.links.delete(self.host_iface(req), reason=f"CNI DEL of container {req.container_id[:12]}")
        released = self.ipam.release_by_handle(req.handle_id)
        if released:
            log.info("cni.ipam_released", handle=req.handle_id, addresses=released, reason="CNI DEL")
        return None

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
