"""Kernel route I/O shared by the dataplane and BGP: one batched rtnetlink route writer.

``messages`` packs and parses route and link messages (pure); ``writer.RouteWriter`` sends them
over one raw socket, many per send. It sits below both of its users — ``felixpy.dataplane``
(workload routes, blackholes and tunnel routes, protocol 80) and ``bgp`` (learned routes,
protocol 81) — and imports neither.
"""
