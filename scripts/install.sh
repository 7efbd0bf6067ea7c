#!/usr/bin/env bash
# Installs what felixpy needs on Debian (run as root): the kernel tools, etcd, the BGP speakers used as
# peers in tests, the reference CNI plugins, and a venv at .venv with felixpy and its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
echo "felixpy install: Debian packages (etcd, iptables, ipset, iproute2, bird2, frr, gobgpd, CNI plugins) ..."
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends \
    etcd-server etcd-client iptables ipset iproute2 iputils-ping bird2 frr gobgpd \
    containernetworking-plugins conntrack ethtool iperf3 socat kmod procps openssl python3-venv \
    gcc libc6-dev binutils \
    wireguard-tools tcpdump \
    >/dev/null
# Building the node image without a registry or a daemon (scripts/build-image.sh): a debootstrap'd base and
# `buildah bud --isolation chroot`; the emulated-node e2e test runs the image from its root filesystem.
echo "felixpy install: image build tools (buildah, debootstrap) ..."
apt-get install -y -q --no-install-recommends buildah crun fuse-overlayfs debootstrap >/dev/null
# The Debian etcd/bird/frr packages start system services; felixpy starts its own instances.
for svc in etcd bird frr; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
done

echo "felixpy install: venv .venv with felixpy[dev] ..."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
# The static CNI forwarder and bundle launcher install-cni puts on hosts (gcc -static; .venv/libexec/felixpy).
.venv/bin/python -m felixpy.cni.forwarder
echo "felixpy install: done"
