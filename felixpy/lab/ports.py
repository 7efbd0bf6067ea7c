"""Named container ports of lab pods, published on their WorkloadEndpoints.

A lab pod has no pod spec: the CNI plugin writes its WorkloadEndpoint from the CNI request
alone, so ``spec.ports`` starts empty. With a Kubernetes datastore the Pod's container ports
would fill it; here ``pod add --ports`` does the same afterwards through ``felixctl``
(``get wep -o json`` → set ``spec.ports`` → ``replace``, a compare-and-swap on the
resourceVersion, retried on conflict), and the agents' syncers pick the change up.

Parsing and naming are pure; :func:`publish` is the only part that talks to the datastore.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from felixpy.lab import ctl
from felixpy.lab.layout import LabError, LabNames

PROTOCOLS = ("TCP", "UDP", "SCTP")
PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class NamedPort:
    name: str
    protocol: str  # "TCP" | "UDP" | "SCTP"
    port: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> NamedPort:
        return NamedPort(name=str(data["name"]), protocol=str(data["protocol"]), port=int(data["port"]))


def parse_one(item: str) -> NamedPort:
    """``name=port[/proto]`` (protocol TCP by default, any case) -> NamedPort."""
    name, sep, rest = item.partition("=")
    number, _, proto = rest.partition("/")
    proto = (proto or "tcp").upper()
    if not sep or not number.isdigit() or not 1 <= int(number) <= 65535 or proto not in PROTOCOLS:
        raise LabError(f"bad port {item!r}: want name=port/proto, e.g. http=80/tcp")
    # felixpy.resources loads pydantic and builds every model: seconds under the VM stage's TCG, paid by
    # every felixpy-lab command if imported at the top, and needed only here
    from felixpy.resources.fields import FieldError, check_port_name

    try:
        check_port_name(name)
    except FieldError as exc:
        raise LabError(f"bad port {item!r}: {exc}") from exc
    return NamedPort(name=name, protocol=proto, port=int(number))


def parse_ports(text: str | None) -> list[NamedPort]:
    """``http=80/tcp,dns=53/udp`` -> ports; names must be unique."""
    ports = [parse_one(p.strip()) for p in (text or "").split(",") if p.strip()]
    names = [p.name for p in ports]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabError(f"duplicate port names: {', '.join(dup)}")
    return ports


def serve_names(serve: list[int]) -> list[NamedPort]:
    """The names the Kubernetes netpol e2e pods give their ports: ``serve-80-tcp``, ``serve-80-udp``…"""
    return [
        NamedPort(name=f"serve-{port}-{proto.lower()}", protocol=proto, port=port)
        for port in serve for proto in ("TCP", "UDP")
    ]


def merge(explicit: list[NamedPort], defaults: list[NamedPort]) -> list[NamedPort]:
    """``explicit`` plus the ``defaults`` whose names it does not already use."""
    taken = {p.name for p in explicit}
    return [*explicit, *(p for p in defaults if p.name not in taken)]


def with_ports(wep: dict[str, Any], ports: list[NamedPort]) -> dict[str, Any]:
    """A copy of the WorkloadEndpoint document with ``spec.ports`` set to ``ports``."""
    spec = dict(wep.get("spec") or {})
    spec["ports"] = [p.to_json() for p in ports]
    return {**wep, "spec": spec}


def find_wep(listing: dict[str, Any], *, pod: str, node: str) -> dict[str, Any] | None:
    """The pod's endpoint in a ``get wep -o json`` answer (a list, or one object)."""
    items = listing.get("items", [listing])
    for item in items:
        spec = item.get("spec") or {}
        if spec.get("pod") == pod and spec.get("node") == node:
            return dict(item)
    return None


def publish(names: LabNames, endpoint: str, *, namespace: str, pod: str, node: str,
            ports: list[NamedPort]) -> None:
    """Set ``spec.ports`` of the pod's WorkloadEndpoint (bounded retries on CAS conflicts)."""
    last = ""
    for attempt in range(PUBLISH_ATTEMPTS):
        got = ctl.felixctl(names, endpoint, ["get", "wep", "-n", namespace, "-o", "json"], timeout=30)
        wep = find_wep(json.loads(got.stdout or "{}"), pod=pod, node=node)
        if wep is None:
            raise LabError(f"no WorkloadEndpoint for pod {namespace}/{pod} on {node}")
        doc = json.dumps(with_ports(wep, ports))
        proc = ctl.felixctl(names, endpoint, ["replace", "-f", "-"], input=doc, timeout=30, check=False)
        if proc.returncode == 0:
            return
        last = (proc.stderr or proc.stdout).strip()
        time.sleep(0.2 * (attempt + 1))
    raise LabError(f"could not set the ports of {namespace}/{pod}'s endpoint: {last}")
