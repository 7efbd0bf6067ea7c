# felixpy node image: the agent, felixctl, the CNI plugins, ExaBGP and the kernel tools they drive.
#
# Build anywhere:   docker build -t felixpy/felixpy:0.1.0 .
# Build here / CI:  scripts/build-image.sh   (no registry: a debootstrap'd bookworm base passed as BASE,
#                   then `buildah bud --isolation chroot`; see docs/operations.md, "Building the image")
#
# Two stages. The builder has what only the build needs (python3-venv, pip's cache, gcc for the static
# CNI forwarder, the whole containernetworking-plugins package); the runtime stage gets the venv, the
# forwarder, `portmap`, and the kernel tools the agent runs: iptables, ipset, iproute2, ethtool.
# Every RUN is `set -eu`: no step hides a failure.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates containernetworking-plugins; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY felixpy ./felixpy
COPY bgp ./bgp
COPY policy ./policy
COPY ipam ./ipam
# A non-editable install: the venv holds felixpy itself, not a link to /src. Bytecode is compiled here so
# the agent, felixctl and the CNI plugin do not write it at run time. PIP_CERT: a CA bundle for pip when
# the build goes through a TLS-intercepting proxy (scripts/build-image.sh mounts this machine's).
ARG PIP_CERT=""
RUN set -eu; \
    python3 -m venv /opt/felixpy/venv; \
    /opt/felixpy/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_CERT:+--cert "$PIP_CERT"} . ; \
    /opt/felixpy/venv/bin/pip uninstall -y pip setuptools; \
    /opt/felixpy/venv/bin/python3 -m compileall -q /opt/felixpy/venv/lib; \
    mkdir -p /opt/felixpy/cni; \
    cp /usr/lib/cni/portmap /opt/felixpy/cni/portmap; \
    /opt/felixpy/venv/bin/felixpy --help >/dev/null; \
    /opt/felixpy/venv/bin/felixctl --help >/dev/null

FROM ${BASE}
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 iptables ipset iproute2 ethtool; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*
COPY --from=builder /opt/felixpy /opt/felixpy
# Debian's own path for CNI plugins, where install-cni looks for the reference plugins it copies.
COPY --from=builder /opt/felixpy/cni/portmap /usr/lib/cni/portmap
RUN set -eu; \
    for tool in felixpy felixctl felixpy-cni felixpy-ipam exabgp; do \
        ln -s "/opt/felixpy/venv/bin/$tool" "/usr/local/bin/$tool"; \
    done; \
    felixpy --help >/dev/null; felixctl --help >/dev/null; exabgp version >/dev/null; \
    iptables --version; ipset --version; ip -V; CNI_COMMAND=VERSION /usr/lib/cni/portmap

ENV PATH=/opt/felixpy/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    FELIXPY_RUN_DIR=/var/run/felixpy
ENTRYPOINT []
CMD ["felixpy", "node"]
