"""In-memory :class:`~felixpy.dataplane.netlink_ops.Netlink` for unit tests of the diff logic.

It keeps one route per (table, dst, metric) like the kernel's replace semantics, refuses routes to
interfaces it does not know (as ENODEV would), and records every mutating call in ``calls``.
"""

from __future__ import annotations

from collections.abc import Sequence

from felixpy.dataplane.errors import DataplaneError, LinkNotFound
from felixpy.dataplane.kernel_objects import MAIN_TABLE
from felixpy.dataplane.netlink_ops import KernelRoute, Link, normalise_cidr


class FakeNetlink:
    def __init__(self, links: list[str] | None = None) -> None:
        self.routes: dict[tuple[int, str, int | None], KernelRoute] = {}
        self.links: dict[str, Link] = {}
        self.calls: list[tuple[str, str]] = []
        for name in links or []:
            self.add_link(name)

    def add_link(self, name: str, *, kind: str = "veth", mac: str = "ee:ee:ee:ee:ee:ee") -> Link:
        link = Link(index=len(self.links) + 2, name=name, kind=kind, mac=mac, mtu=1500, up=True)
        self.links[name] = link
        return link

    def remove_link(self, name: str) -> None:
        """Like the kernel: deleting a link deletes the routes through it."""
        self.links.pop(name, None)
        self.routes = {k: r for k, r in self.routes.items() if r.target.dev != name}

    def list_routes(self, *, proto: int | None = None, table: int = MAIN_TABLE) -> list[KernelRoute]:
        return [r for r in self.routes.values() if r.table == table and (proto is None or r.proto == proto)]

    def replace_route(self, route: KernelRoute) -> None:
        if route.target.dev and route.target.dev not in self.links:
            raise LinkNotFound(route.target.dev)
        route = KernelRoute(normalise_cidr(route.dst), route.target, route.proto, route.table, route.metric)
        self.routes[(route.table, route.dst, route.metric)] = route
        self.calls.append(("replace", route.dst))

    def del_route(self, route: KernelRoute) -> None:
        self.routes.pop((route.table, normalise_cidr(route.dst), route.metric), None)
        self.calls.append(("del", route.dst))

    def apply_routes(
        self, *, delete: Sequence[KernelRoute] = (), replace: Sequence[KernelRoute] = ()
    ) -> list[tuple[KernelRoute, DataplaneError]]:
        failed: list[tuple[KernelRoute, DataplaneError]] = []
        for route in delete:
            self.del_route(route)
        for route in replace:
            try:
                self.replace_route(route)
            except DataplaneError as exc:
                failed.append((route, exc))
        return failed

    def list_links(self) -> list[Link]:
        return list(self.links.values())

    def link_by_name(self, name: str) -> Link | None:
        return self.links.get(name)
