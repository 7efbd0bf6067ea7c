"""VXLAN identity helpers (pure): the derived VTEP MAC, as Felix's vxlan_resolver does it."""

from __future__ import annotations

import hashlib


def vtep_mac(nodename: str, configured: str | None = None) -> str:
    """``configured`` if set, else 0x66 followed by the first 5 bytes of sha1(nodename)."""
    if configured:
        return configured.lower()
    digest = hashlib.sha1(nodename.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x66, *digest[:5]))
