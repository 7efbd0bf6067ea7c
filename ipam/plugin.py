"""`felixpy-ipam`: a standalone CNI IPAM plugin over the IPAM library (like `host-local`).

Driven as a runtime drives it: CNI_COMMAND (ADD/DEL/CHECK/VERSION), CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH in the environment; the network config JSON on
stdin; the result (or a CNI error) as JSON on stdout; exit 0 on success, 1 on error.

Config (top level, or nested under "ipam" when a main plugin passes its own config)::

    {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "felixpy-ipam",
     "datastore_type": "etcdv3", "etcd_endpoints": "http://127.0.0.1:2379",
     "nodename": "node1", "ipv4_pools": ["10.0.0.0/16"], "ipv6_pools": [],
     "assign_ipv4": "true", "assign_ipv6": "false"}

Result: Calico IPAM's shape. Addresses carry their *block* prefix length
("10.0.0.5/26"), no gateway and no routes: the main plugin (felixpy-cni, like Calico's)
narrows them to /32 on the pod and adds the link-local default route itself. The handle
is ``<network name>.<CNI_CONTAINERID>``, so a repeated ADD returns the same addresses and
DEL of an unknown container succeeds.

Before the datastore is touched, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS (must exist for ADD and
CHECK, not for DEL) and the network name are checked (felixpy.cni.validate).

Error codes (CNI spec): 1 incompatible version, 4 invalid environment, 6 decode failure,
7 invalid network config (missing field, unknown or unusable pool), 11 try again later
(datastore unreachable, CAS contention, datastore locked for migration), 100 pool exhausted (or the
node at its maxBlocksPerHost), 999 anything else (a requested address reserved, in use or in no pool:
the message says which).
Imports stay light until a datastore is needed: VERSION and config errors cost ~nothing.

On a node, ``/opt/cni/bin/felixpy-ipam`` is the static forwarder instead (``felixpy install-cni``):
the agent answers with these same functions over its own IPAM and datastore (either kind), see
``felixpy.cni.ipam_service``. This console script stays for hosts with the venv and etcd access.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_NETWORK = "k8s-pod-network"
NODENAME_FILES = ("/var/lib/felixpy/nodename", "/var/lib/calico/nodename")  # felixpy's agent writes the first


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def _truthy(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no", ""):
        return False
    raise CNIError(7, f"invalid boolean {value!r} in network config")


def parse_config(raw: str | dict[str, Any], *, standalone: bool = True) -> dict[str, Any]:
    """The merged plugin config (top level overridden by "ipam"), validated; raises CNIError.
    ``standalone=False``: served by the agent, which brings its own datastore."""
    try:
        doc = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise CNIError(6, "failed to decode network config", str(exc)) from None
    if not isinstance(doc, dict):
        raise CNIError(6, "network config must be a JSON object")
    version = doc.get("cniVersion")
    if not version:
        raise CNIError(7, "network config is missing the required field cniVersion")
    if version not in SUPPORTED:
        raise CNIError(1, f"incompatible CNI version {version}", f"supported: {', '.join(SUPPORTED)}")
    conf = {k: v for k, v in doc.items() if k != "ipam"}
    if isinstance(doc.get("ipam"), dict):
        conf.update(doc["ipam"])
    if standalone and conf.get("datastore_type", "etcdv3") != "etcdv3":
        raise CNIError(7, f"datastore_type {conf['datastore_type']!r} is not supported by felixpy-ipam")
    if standalone and not (conf.get("etcd_endpoints") or os.environ.get("ETCD_ENDPOINTS")):
        raise CNIError(7, "network config is missing the required field etcd_endpoints")
    for key in ("ipv4_pools", "ipv6_pools"):
        pools = conf.get(key, [])
        if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
            raise CNIError(7, f"{key} must be a list of pool names or CIDRs")
    conf["assign_ipv4"] = _truthy(conf.get("assign_ipv4"), True)
    conf["assign_ipv6"] = _truthy(conf.get("assign_ipv6"), False)
    if not (conf["assign_ipv4"] or conf["assign_ipv6"]):
        raise CNIError(7, "assign_ipv4 and assign_ipv6 are both false: nothing to assign")
    return conf


def _cni_args(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for part in env.get("CNI_ARGS", "").split(";"):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _nodename(conf: Mapping[str, Any]) -> str:
    if conf.get("nodename"):
        return str(conf["nodename"])
    k8s = conf.get("kubernetes")
    if isinstance(k8s, dict) and k8s.get("node_name"):
        return str(k8s["node_name"])
    return nodename_from_files([conf["nodename_file"]] if conf.get("nodename_file") else NODENAME_FILES)


def nodename_from_files(paths: Sequence[str] = NODENAME_FILES) -> str:
    """The first non-empty node name file (the agent writes felixpy's; Calico's is read too), else the
    host name."""
    for path in paths:
        try:
            with open(path) as f:
                name = f.read().strip()
            if name:
                return name
        except OSError:
            pass
    return socket.gethostname()


def _require(env: Mapping[str, str], *names: str) -> None:
    for n in names:
        if not env.get(n):
            raise CNIError(4, f"required environment variable {n} is not set")


def _validate(command: str, conf: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Container ID, interface name, netns (must exist for ADD/CHECK) and network name, before any
    datastore is touched (felixpy.cni.validate): codes 4 / 7 naming the variable or field."""
    from felixpy.cni.validate import InvalidInput, check_request

    try:
        check_request(
            command,
            container_id=env.get("CNI_CONTAINERID", ""),
            ifname=env.get("CNI_IFNAME", ""),
            netns=env.get("CNI_NETNS", ""),
            network=str(conf.get("name") or DEFAULT_NETWORK),
        )
    except InvalidInput as exc:
        raise CNIError(exc.code, exc.msg) from None


def _connect(conf: Mapping[str, Any]) -> Any:
    """etcd as Calico's plugin reaches it: the network config's etcd_* fields, else ETCD_* from the
    environment (ETCD_USERNAME / ETCD_PASSWORD only there); several endpoints, comma-separated."""
    import dataclasses

    from felixpy.datastore.config import DatastoreConfig, connect_kv
    from felixpy.datastore.etcd import parse_endpoints
    from felixpy.datastore.resources import KVBackend
    from ipam.ipam import IPAM

    env = {k: v for k, v in os.environ.items() if k.startswith("ETCD_")}
    base = DatastoreConfig.from_env(env)
    cfg = dataclasses.replace(
        base,
        etcd_endpoints=conf.get("etcd_endpoints") or base.etcd_endpoints,
        etcd_ca_cert_file=conf.get("etcd_ca_cert_file") or base.etcd_ca_cert_file,
        etcd_cert_file=conf.get("etcd_cert_file") or base.etcd_cert_file,
        etcd_key_file=conf.get("etcd_key_file") or base.etcd_key_file,
    )
    try:
        parse_endpoints(cfg.etcd_endpoints)
    except ValueError as exc:
        raise CNIError(7, f"etcd_endpoints: {exc}") from None
    kv = connect_kv(cfg)
    return IPAM(kv, KVBackend(kv))


def _handle(conf: Mapping[str, Any], env: Mapping[str, str]) -> str:
    return f"{conf.get('name') or DEFAULT_NETWORK}.{env['CNI_CONTAINERID']}"


def _result(version: str, ipam: Any, addrs: list[str]) -> dict[str, Any]:
    ips = []
    for a in addrs:
        got = ipam.get_assignment(a)
        plen = got.block.split("/")[1] if got else ("32" if ":" not in a else "128")
        entry: dict[str, Any] = {"address": f"{a}/{plen}"}
        if version != "1.0.0":
            entry["version"] = "6" if ":" in a else "4"
        ips.append(entry)
    return {"cniVersion": version, "ips": ips, "dns": {}}


def cmd_add(conf: dict[str, Any], env: Mapping[str, str], ipam: Any = None) -> dict[str, Any]:
    _require(env, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
    _validate("ADD", conf, env)
    ipam = ipam or _connect(conf)
    handle = _handle(conf, env)
    held = ipam.assignments_for_handle(handle)
    if not held:
        args = _cni_args(env)
        node = _nodename(conf)
        attrs = {"node": node, "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
        if args.get("K8S_POD_NAME"):
            attrs.update(namespace=args.get("K8S_POD_NAMESPACE", ""), pod=args["K8S_POD_NAME"])
        if args.get("K8S_POD_UID"):
            attrs["uid"] = args["K8S_POD_UID"]  # the GC tells a re-created pod of the same name by it
        v4 = conf["assign_ipv4"]
        v6 = conf["assign_ipv6"]
        pools = (conf.get("ipv4_pools", []) if v4 else []) + (conf.get("ipv6_pools", []) if v6 else [])
        res = ipam.auto_assign(
            handle, node=node, num_v4=int(v4), num_v6=int(v6), attrs=attrs, pools=pools or None
        )
        held = res.v4 + res.v6
    return _result(conf["cniVersion"], ipam, held)


def cmd_del(conf: dict[str, Any], env: Mapping[str, str], ipam: Any = None) -> None:
    _require(env, "CNI_CONTAINERID", "CNI_IFNAME")
    _validate("DEL", conf, env)
    ipam = ipam or _connect(conf)
    ipam.release_by_handle(_handle(conf, env))
    args = _cni_args(env)
    if args.get("K8S_POD_NAME") and args.get("K8S_POD_NAMESPACE"):
        ipam.release_by_handle(f"{args['K8S_POD_NAMESPACE']}.{args['K8S_POD_NAME']}")


def cmd_check(conf: dict[str, Any], env: Mapping[str, str], ipam: Any = None) -> None:
    _require(env, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
    _validate("CHECK", conf, env)
    ipam = ipam or _connect(conf)
    held = set(ipam.assignments_for_handle(_handle(conf, env)))
    if not held:
        raise CNIError(3, f"container {env['CNI_CONTAINERID']} holds no address")
    prev = conf.get("prevResult") or {}
    for ip in prev.get("ips", []) if isinstance(prev, dict) else []:
        addr = str(ip.get("address", "")).split("/")[0]
        if addr and addr not in held:
            raise CNIError(999, f"address {addr} of the previous result is not assigned to this container")


def map_exception(exc: Exception) -> CNIError:
    from felixpy.datastore.errors import DatastoreError, Unavailable
    from ipam import errors

    if isinstance(exc, errors.PoolExhausted):
        return CNIError(100, "no free IP address", str(exc))
    if isinstance(exc, errors.PoolNotFound | errors.NoUsablePool):
        return CNIError(7, "invalid network config: no usable IP pool", str(exc))
    if isinstance(exc, errors.DatastoreLocked):
        return CNIError(11, "datastore locked (datastoreReady: false); try again later", str(exc))
    if isinstance(exc, errors.AddressReserved | errors.AddressInUse | errors.AddressNotInPool):
        return CNIError(999, "requested IP address cannot be assigned", str(exc))
    if isinstance(exc, errors.BlockLimitReached):
        return CNIError(100, "no free IP address", str(exc))
    if isinstance(exc, Unavailable | errors.RetriesExhausted):
        return CNIError(11, "datastore busy or unreachable; try again later", str(exc))
    if isinstance(exc, DatastoreError):
        return CNIError(5, "datastore error", str(exc))
    return CNIError(999, f"{type(exc).__name__}: {exc}")


def run(env: Mapping[str, str], stdin: TextIO, stdout: TextIO) -> int:
    version = "1.0.0"
    try:
        command = env.get("CNI_COMMAND", "")
        if command == "VERSION":
            json.dump({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}, stdout)
            return 0
        if command not in ("ADD", "DEL", "CHECK"):
            raise CNIError(4, f"CNI_COMMAND must be ADD, DEL, CHECK or VERSION, not {command!r}")
        conf = parse_config(stdin.read())
        version = conf["cniVersion"]
        try:
            if command == "ADD":
                json.dump(cmd_add(conf, env), stdout)
            elif command == "DEL":
                cmd_del(conf, env)
            else:
                cmd_check(conf, env)
        except CNIError:
            raise
        except Exception as exc:
            raise map_exception(exc) from exc
        return 0
    except CNIError as err:
        json.dump({"cniVersion": version, "code": err.code, "msg": err.msg, "details": err.details}, stdout)
        return 1


def main() -> None:
    sys.exit(run(os.environ, sys.stdin, sys.stdout))


if __name__ == "__main__":
    main()
