# felixpy node image: the agent, felixctl, the CNI plugins, ExaBGP and the kernel tools they drive.
# Build:  docker build -t felixpy/felixpy:0.1.0 .
# (CI does not build it; the Helm chart's DaemonSet and route-reflector Deployment use it.)

# The host-side CNI binaries (felixpy/cni/forwarder.py): the runtime runs CNI plugins on the HOST, so
# what `felixpy install-cni` copies there is static: the forwarder to the agent's socket (installed as
# /opt/cni/bin/felixpy and felixpy-ipam) and the bundle launcher it puts in front of Debian's portmap
# (dynamic: it is copied with its loader and libc). No step hides a failure.
FROM debian:bookworm-slim AS cni-build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev containernetworking-plugins \
 && rm -rf /var/lib/apt/lists/*
COPY felixpy/cni/forward.c felixpy/cni/bundle_exec.c /src/
RUN mkdir -p /out/libexec /out/cni \
 && gcc -static -Os -s -Wall -Wextra -o /out/libexec/felixpy-cni /src/forward.c \
 && gcc -static -Os -s -Wall -Wextra -o /out/libexec/felixpy-bundle-exec /src/bundle_exec.c \
 && cp /usr/lib/cni/portmap /out/cni/portmap

FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv iptables ipset iproute2 conntrack ethtool kmod procps ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/felixpy
COPY pyproject.toml README.md ./
COPY felixpy ./felixpy
COPY bgp ./bgp
COPY policy ./policy
COPY ipam ./ipam
RUN python3 -m venv /opt/felixpy/venv \
 && /opt/felixpy/venv/bin/pip install --no-cache-dir . \
 && ln -s /opt/felixpy/venv/bin/felixpy /opt/felixpy/venv/bin/felixctl \
          /opt/felixpy/venv/bin/felixpy-cni /opt/felixpy/venv/bin/felixpy-ipam /opt/felixpy/venv/bin/exabgp \
          /usr/local/bin/ 2>/dev/null || true

# install-cni copies these to the host: the static forwarder and bundle launcher (looked up in
# <venv>/libexec/felixpy) and the reference plugins the conflist chains (CNI_PLUGIN_SOURCE_DIR=/usr/lib/cni).
COPY --from=cni-build /out/libexec/ /opt/felixpy/venv/libexec/felixpy/
COPY --from=cni-build /out/cni/ /usr/lib/cni/

ENV PATH=/opt/felixpy/venv/bin:$PATH \
    FELIXPY_RUN_DIR=/var/run/felixpy
ENTRYPOINT []
CMD ["felixpy", "node"]
