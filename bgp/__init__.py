"""BGP for felixpy: ExaBGP speaks the protocol, this package decides everything else.

The agent's API is one class, ``bgp.service.BGPService``::

    svc = BGPService(node_name, run_dir, *, netns=None, route_protocol=81, install_routes=True,
                     route_ops=None, reactor_speed=1.0, reflector_reactor_speed=0.1,
                     exabgp=None, resolve_secret=None)
    svc.update(nodes=[Node...], bgp_configs=[BGPConfiguration...], peers=[BGPPeer...],
               pools=[IPPool...], local_blocks=["10.65.0.0/26", ...], borrowed=["10.65.3.7", ...],
               bgp_filters=[BGPFilter...])
    svc.start()                      # threads + ExaBGP child; call update() before or after
    svc.status() -> list[PeerStatus] # address, type, state (up|start), since, info, name, routes_received
    svc.stop(graceful=True)          # ExaBGP ends without Cease when GR was negotiated; kernel routes stay

``update`` takes the full desired state every time (latest wins; thread-safe, cheap to repeat):
all Nodes (for the mesh, selectors, peer ASNs and listen ports), every BGPConfiguration
(``default`` and ``node.<name>``), every BGPPeer, every BGPFilter (the ones BGPPeers name in
``filters``), every IPPool, this node's *confirmed* affine
blocks, and the addresses this node hosts that were borrowed from other nodes' blocks.
``resolve_secret(name, key)`` returns BGPPeer ``password.secretKeyRef`` values.
``netns`` runs ExaBGP and programs routes inside a named namespace (tests, lab); the agent
running inside the node's namespace leaves it None.

Threads: ``bgp-service`` (the only writer of RIB/FIB), ``bgp-exabgp`` (supervisor),
``bgp-api-accept`` / ``-reader`` / ``-writer`` (the socket to the bridge). Processes: ExaBGP
(``exabgp server <run_dir>/exabgp.conf``), which runs ``python -m bgp.bridge <socket>``.
ExaBGP runs through ``bgp.exabgp_launch`` (its own ``main``, one copy hot spot made cheap)
unless ``exabgp`` names a binary. A route reflector's ExaBGP polls at ``reflector_reactor_speed``.
Run-dir files: ``exabgp.conf``, ``exabgp.pid``, ``exabgp.log``, ``bgp-api.sock``,
``bgp-status.json`` (``felixctl node status`` reads it; ``--run-dir`` or ``FELIXPY_RUN_DIR``).

Modules. Pure: ``topology`` (resources → PeerSpec sessions), ``route``, ``rib`` (Adj-RIB-In,
best paths, stale handling), ``bestpath`` (comparator chain), ``reflect`` (RFC 4456),
``filters`` (import refusal, exports, pools),
``peer_filters`` (BGPFilter rules per session), ``advertiser`` (per-peer Adj-RIB-Out → commands),
``exabgp_config``, ``exabgp_api`` (JSON → events, commands), ``engine`` (events + desired
state → commands and kernel routes), ``status``, ``selectors``, ``rtnl`` (FIB routes ↔
the kernel's route messages, which ``felixpy.netlinkio`` packs). With I/O: ``fib`` (desired vs
kernel, via a ``RouteOps``), ``netlink`` (``RouteOps`` over the agent's one batched route writer,
``felixpy.netlinkio``), ``channel`` (socket to the
bridge, ack-windowed writer), ``speaker`` (ExaBGP child), ``exabgp_launch`` (ExaBGP's main,
run by the speaker), ``bridge`` (runs under ExaBGP), ``service``.

Errors: nothing here raises to the agent after ``start``; failures are logged and retried
(ExaBGP restarts with backoff, route writes are retried by the periodic resync). ``update``
raises ``ValueError`` for resources it cannot use (an unparsable selector or address).
"""
