# felixpy node image: the agent, felixctl, the CNI plugins, ExaBGP and the kernel tools they drive.
# Build:  docker build -t felixpy/felixpy:0.1.0 .
# (CI does not build it; the Helm chart's DaemonSet and route-reflector Deployment use it.)
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

ENV PATH=/opt/felixpy/venv/bin:$PATH \
    FELIXPY_RUN_DIR=/var/run/felixpy
ENTRYPOINT []
CMD ["felixpy", "node"]
