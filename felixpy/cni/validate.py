"""Checks of a CNI request's identifiers, made before anything is allocated or stored (pure).

Used by the agent-side handler (whatever forwards the request to it) and by `felixpy-ipam`.
Each failure is one :class:`InvalidInput` with the CNI spec's error code and a message that
names the variable or config field and says why:

- ``CNI_CONTAINERID``: the spec's rule, ``^[A-Za-z0-9][A-Za-z0-9_.-]*$`` (it becomes part of an
  IPAM handle and of datastore keys, so ``/``, spaces and shell metacharacters never get that far).
  Code 4 (invalid environment variable).
- ``CNI_IFNAME``: the kernel's rule for a device name (``dev_valid_name``; CNI's
  ``ValidateInterfaceName`` says the same): 1 to 15 bytes, not ``.`` or ``..``, no ``/``, ``:``
  or whitespace. Code 4.
- ``CNI_NETNS``: a path (the agent also takes a name under /var/run/netns) without NUL; for ADD
  and CHECK it must exist (DEL for a namespace the runtime already removed must still clean up).
  Code 4.
- the network ``name`` (config): the spec's rule, as for container IDs (it is the first part of
  the IPAM handle). Code 7 (invalid network configuration).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

ERR_INVALID_ENV = 4
ERR_INVALID_CONFIG = 7
IFNAMSIZ = 16  # the kernel's buffer, NUL included: names are at most 15 bytes
MAX_ID_LENGTH = 1024  # the spec sets none; a bound keeps keys and log lines sane
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class InvalidInput(ValueError):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _shown(value: str) -> str:
    return repr(value if len(value) <= 64 else value[:64] + "...")


def _identifier(value: str, field: str, code: int) -> None:
    if not value:
        raise InvalidInput(code, f"{field} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(code, f"{field} is {len(value)} characters long (at most {MAX_ID_LENGTH})")
    if not _ID.fullmatch(value):
        raise InvalidInput(
            code,
            f"{field} {_shown(value)} is invalid: it must start with a letter or digit and contain "
            "only letters, digits, '_', '.' and '-'",
        )


def check_container_id(value: str) -> None:
    _identifier(value, "CNI_CONTAINERID", ERR_INVALID_ENV)


def check_network_name(value: str) -> None:
    _identifier(value, "network config field 'name'", ERR_INVALID_CONFIG)


def check_ifname(value: str) -> None:
    field = "CNI_IFNAME"
    if not value:
        raise InvalidInput(ERR_INVALID_ENV, f"{field} is empty")
    size = len(value.encode("utf-8", "surrogateescape"))
    if size >= IFNAMSIZ:
        raise InvalidInput(
            ERR_INVALID_ENV, f"{field} {_shown(value)} is {size} bytes long (the kernel allows at most 15)"
        )
    if value in (".", ".."):
        raise InvalidInput(ERR_INVALID_ENV, f"{field} {value!r} is not a valid interface name")
    bad = sorted({c for c in value if c in "/:" or c.isspace() or c == "\0"})
    if bad:
        raise InvalidInput(
            ERR_INVALID_ENV, f"{field} {_shown(value)} contains {', '.join(map(repr, bad))} (not allowed)"
        )


def check_netns(value: str, *, must_exist: bool, exists: Callable[[str], bool] = os.path.exists) -> None:
    field = "CNI_NETNS"
    if not value:
        if must_exist:
            raise InvalidInput(ERR_INVALID_ENV, f"{field} is empty")
        return
    if "\0" in value:
        raise InvalidInput(ERR_INVALID_ENV, f"{field} {_shown(value)} contains a NUL byte")
    if must_exist and not exists(value):
        raise InvalidInput(ERR_INVALID_ENV, f"{field} {_shown(value)} does not exist")


def check_request(
    command: str,
    *,
    container_id: str,
    ifname: str,
    netns: str,
    network: str,
    exists: Callable[[str], bool] = os.path.exists,
) -> None:
    """All checks for one ADD / DEL / CHECK, in the order a user fixes them; raises InvalidInput."""
    check_container_id(container_id)
    check_ifname(ifname)
    check_network_name(network)
    check_netns(netns, must_exist=command in ("ADD", "CHECK"), exists=exists)
