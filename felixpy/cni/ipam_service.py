"""The agent's answer to ``felixpy-ipam`` (the static forwarder run under that name): CNI IPAM only.

A runtime or another main plugin (``bridge`` with ``"ipam": {"type": "felixpy-ipam"}``) runs
``/opt/cni/bin/felixpy-ipam`` on the host; the forwarder sends the request with ``"plugin": "ipam"``
and the agent answers it here with the standalone plugin's own logic (``ipam.plugin``: same config,
result shape, handle ``<network>.<containerID>`` and error codes) over the agent's IPAM, so it works
with either datastore and needs no etcd address or credentials on the host. No dataplane change:
handled on the socket's thread, not the writer's.
"""

from __future__ import annotations

from typing import Any

import structlog

from ipam import plugin as ipam_plugin

log = structlog.get_logger(__name__)


def _env(request: dict[str, Any]) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": str(request.get("containerID") or ""),
        "CNI_NETNS": str(request.get("netns") or ""),
        "CNI_IFNAME": str(request.get("ifname") or ""),
        "CNI_ARGS": str(request.get("args") or ""),
    }


class IpamService:
    def __init__(self, *, nodename: str, ipam: Any) -> None:
        self.nodename, self.ipam = nodename, ipam

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """``{"result": ...}`` (None for DEL/CHECK) or ``{"error": {code, msg, details}}``."""
        command = str(request.get("command") or "")
        env = _env(request)
        try:
            conf = ipam_plugin.parse_config(request.get("config"), standalone=False)  # type: ignore[arg-type]
            conf.setdefault("nodename", self.nodename)
            try:
                if command == "ADD":
                    result: dict[str, Any] | None = ipam_plugin.cmd_add(conf, env, self.ipam)
                elif command == "DEL":
                    ipam_plugin.cmd_del(conf, env, self.ipam)
                    result = None
                elif command == "CHECK":
                    ipam_plugin.cmd_check(conf, env, self.ipam)
                    result = None
                else:
                    raise ipam_plugin.CNIError(4, f"CNI_COMMAND must be ADD, DEL or CHECK, not {command!r}")
            except ipam_plugin.CNIError:
                raise
            except Exception as exc:
                raise ipam_plugin.map_exception(exc) from exc
        except ipam_plugin.CNIError as err:
            log.info(
                "cni.ipam_failed",
                command=command,
                container=env["CNI_CONTAINERID"],
                code=err.code,
                msg=err.msg,
            )
            return {"error": {"code": err.code, "msg": err.msg, "details": err.details}}
        log.info(
            "cni.ipam_done",
            command=command,
            container=env["CNI_CONTAINERID"],
            addresses=[ip["address"] for ip in (result or {}).get("ips", [])],
        )
        return {"result": result}
