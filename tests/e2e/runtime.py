"""The container runtime's side of the emulated node: image root filesystems, containers, CNI calls.

A container here is what a runtime makes of a privileged, hostNetwork container: a process in the
node's network namespace (the lab's node namespace), in a mount namespace of its own (``unshare
--mount``) whose root is an overlay of the image's root filesystem (``buildah mount``, never written:
each container gets its own upper directory, as a runtime's writable layer), with /proc, /sys and /dev,
the pod's volumes bound in (hostPath volumes from the node's "host" directory), the ServiceAccount
token at its standard path, then ``chroot`` into it and ``exec`` of the argv with exactly the
environment the kubelet computed (``env -i``). Probes and ``kubectl exec`` enter it with ``nsenter``
(mount + network namespace, its root).

The node's "host" is a directory (``HostRoot``): what hostPath volumes see. It has no Python and no
felixpy; the runtime runs CNI plugins from it (``chroot`` into it), so a plugin that needs anything
the host does not have fails here as it would on a node. Two paths are the real machine's, because
they are the kernel's: /lib/modules (the running kernel's modules) and the network-namespace
directory (the runtime creates pod namespaces there; the agent opens them). A machine that has no
/lib/modules (seen in session 11) gives the node an empty one, beside its host root, instead.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.kubelet import CREATES, SA_DIR, Container, Mount
from tests.fixtures.cniruntime import Runtime

REAL_FROM_MACHINE = ("/lib/modules", "/var/run/netns", "/run/netns")


def buildah(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


@dataclass
class ImageRoot:
    """The image's root filesystem, mounted read-only in use (``buildah from`` + ``buildah mount``)."""

    image: str
    ctr: str = ""
    path: Path = Path()
    config: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> ImageRoot:
        self.config = json.loads(buildah("inspect", "--type", "image", self.image))["OCIv1"]["config"]
        # Docker-style keys, as in the image's config: Env, Entrypoint, Cmd, WorkingDir.
        self.config = {k[:1].upper() + k[1:]: v for k, v in self.config.items()}
        self.ctr = buildah("from", "--pull-never", self.image)
        self.path = Path(buildah("mount", self.ctr))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ctr:
            subprocess.run(["buildah", "umount", self.ctr], capture_output=True, timeout=60, check=False)
            subprocess.run(["buildah", "rm", self.ctr], capture_output=True, timeout=60, check=False)


@dataclass
class HostRoot:
    """One node's host filesystem: a bare directory tree (no Python, no felixpy, no shell)."""

    path: Path

    def resolve(self, host_path: str) -> Path:
        return self.path / host_path.lstrip("/")

    def prepare(self, m: Mount) -> Path:
        """The source of a hostPath mount, created as the kubelet does for *OrCreate types."""
        assert m.host_path is not None
        if m.host_path in REAL_FROM_MACHINE:
            real = Path(m.host_path)
            if real.exists():
                return real
            # A machine without it (a container-based machine has no /lib/modules tree): every real
            # node has its kernel's modules, so the node gets an empty directory in its place; the
            # agent finds no module there, as it finds none on such a machine. It lies beside the host
            # root, not in it: a real /lib there would shadow the userland's lib -> usr/lib link.
            src = self.path.parent / f"{self.path.name}-machine" / m.host_path.strip("/")
            src.mkdir(parents=True, exist_ok=True)
            return src
        src = self.resolve(m.host_path)
        kind = CREATES.get(m.host_type)
        if kind == "dir":
            src.mkdir(parents=True, exist_ok=True)
        elif kind == "file":
            src.parent.mkdir(parents=True, exist_ok=True)
            src.touch(exist_ok=True)
        elif not src.exists():
            raise FileNotFoundError(f"hostPath {m.host_path} (type {m.host_type or 'unset'}) does not exist "
                                    f"on the node and the kubelet does not create it")
        return src

    def interpreters(self) -> list[str]:
        """Anything in the host root that could run Python (there must be none)."""
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("python*") if p.is_file())


def within(root: Path, path: str, *, max_links: int = 40) -> str:
    """``path`` resolved inside the tree at ``root`` as a process chrooted there would resolve it
    (symlinks followed, absolute ones from ``root``, ``..`` never above it); returned relative.

    Needed because the image's /var/run is a symlink to /run: a mount target computed on the host
    side without this would follow it out of the container into the machine's own /run.
    """
    parts = [p for p in path.split("/") if p]
    out: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        candidate = root.joinpath(*out, part)
        if candidate.is_symlink():
            links += 1
            if links > max_links:
                raise OSError(f"too many symbolic links resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                out = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        out.append(part)
    return "/".join(out)


def host_runnable(host: HostRoot, binary: Path) -> str | None:
    """Why ``binary`` (a file in the host root) cannot run on that host, or None.

    A script needs its interpreter on the host; an ELF with a program interpreter (dynamic) needs
    that loader on the host; a static ELF needs nothing.
    """
    data = binary.read_bytes()
    if data.startswith(b"#!"):
        interp = data[2:].split(b"\n", 1)[0].strip().split()[0].decode()
        if not host.resolve(interp).exists():
            return f"it is a script for {interp}, which the host does not have"
        return None
    if data[:4] != b"\x7fELF":
        return "it is neither a script nor an ELF binary"
    # ELF64 little-endian: program headers; PT_INTERP (3) names the dynamic loader.
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == 3:
            p_offset, = struct.unpack_from("<Q", data, off + 8)
            p_filesz, = struct.unpack_from("<Q", data, off + 32)
            loader = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
            if not host.resolve(loader).exists():
                return f"it is dynamically linked against {loader}, which the host does not have"
    return None


def _mount_script(root: Path, upper: Path, image: Path, binds: list[tuple[Path, Mount]], sa: Path) -> str:
    q = shlex.quote
    lines = [
        "set -eu",
        f"mount -t overlay overlay -o lowerdir={image},upperdir={upper}/diff,workdir={upper}/work "
        f"{q(str(root))}",
        f"mount -t proc proc {q(str(root / 'proc'))}",
        # `ip netns exec` remounted /sys for the node's network namespace; the container sees that one.
        f"mount --rbind /sys {q(str(root / 'sys'))}",
        f"mount --rbind /dev {q(str(root / 'dev'))}",
        f"mount -t tmpfs -o mode=1777 tmpfs {q(str(root / 'tmp'))}",
    ]
    for src, m in binds:
        target = root / within(image, m.target)
        make = f"mkdir -p {q(str(target))}" if src.is_dir() else (
            f"mkdir -p {q(str(target.parent))} && touch {q(str(target))}")
        lines.append(make)
        lines.append(f"mount --rbind {q(str(src))} {q(str(target))}")
        if m.propagation == "HostToContainer":
            lines.append(f"mount --make-rslave {q(str(target))}")
        elif m.propagation == "Bidirectional":
            lines.append(f"mount --make-rshared {q(str(target))}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {q(str(target))}")
    sa_target = root / within(image, SA_DIR)
    lines += [f"mkdir -p {q(str(sa_target))}", f"mount --bind -o ro {q(str(sa))} {q(str(sa_target))}"]
    return "\n".join(lines)


@dataclass
class RunningContainer:
    name: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    netns: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exec(self, argv: list[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``kubectl exec``: argv in the container's namespaces and root, with its environment."""
        env_args = [f"{k}={v}" for k, v in self.env.items()]
        full = ["nsenter", "-t", str(self.pid), "-m", "-n", "-r", "-w", "--", "/usr/bin/env", "-i", *env_args,
                *argv]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)

    def stop(self, grace: float = 30) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start(
    c: Container, *, image: ImageRoot, host: HostRoot, netns: str, workdir: Path, token: str,
    secrets: dict[str, dict[str, str]] | None = None, cluster_ca: Path | None = None,
) -> RunningContainer:
    """Start ``c`` as the runtime would (see the module's docstring); returns at once."""
    base = workdir / c.name
    if base.exists():
        shutil.rmtree(base)
    for sub in ("rootfs", "upper/diff", "upper/work", "sa"):
        (base / sub).mkdir(parents=True)
    sa = base / "sa"
    (sa / "token").write_text(token)
    (sa / "namespace").write_text("kube-system")
    (sa / "token").chmod(0o600)
    if cluster_ca is not None:
        shutil.copyfile(cluster_ca, sa / "ca.crt")
    binds = []
    for m in c.mounts:
        if m.secret is not None:
            src = base / "secret" / m.secret
            src.mkdir(parents=True, exist_ok=True)
            for key, value in (secrets or {}).get(m.secret, {}).items():
                (src / key).write_text(value)
                (src / key).chmod(0o400)
            binds.append((src, m))
        else:
            binds.append((host.prepare(m), m))
    script = _mount_script(base / "rootfs", base / "upper", image.path, binds, sa)
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in c.env.items())
    argv = " ".join(shlex.quote(a) for a in c.argv)
    script += f"\ncd {shlex.quote(str(base / 'rootfs'))}\nexec chroot . /usr/bin/env -i {env_args} {argv}\n"
    log = base / "container.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "slave", "--",
             "/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return RunningContainer(name=c.name, proc=proc, env=c.env, netns=netns, log=log)


def run_to_completion(rc: RunningContainer, *, timeout: float) -> int:
    """An init container: wait for it to exit (bounded); its exit code."""
    try:
        return rc.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc.stop(grace=5)
        raise


# The kernel's filesystems every Linux host has, mounted into the host root for each plugin run
# (in a mount namespace of that run alone); the shell runs before the chroot, from the machine.
_HOST_KERNEL_FS = (
    'mount -t proc proc "$0/proc" && mount --rbind /sys "$0/sys" && mount --rbind /dev "$0/dev" '
    '&& exec chroot "$0" "$@"'
)


# A node's distribution userland, for the plugins that use the host's tools (``portmap`` runs the
# host's ``iptables``, as under every CNI network): the machine's /usr and /etc/alternatives, bound
# read-only into the host root for that run alone, with the merged-/usr links a Debian host has.
# (/run/xtables.lock, the lock iptables takes, is a hostPath of the chart: the agent's and portmap's
# iptables share it, as on a node.)
_USERLAND_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
_USERLAND_DIRS = ("usr", "etc/alternatives", "run")
_HOST_USERLAND = (
    'mount --rbind -o ro /usr "$0/usr" && mount --bind -o ro /etc/alternatives "$0/etc/alternatives" && '
)


def cni_runtime(host: HostRoot, *, netns: str, conflist: dict[str, Any], userland: bool = False) -> Runtime:
    """libcni over the node's host: plugins from the host's /opt/cni/bin, each run chrooted into the
    host root (only what the host has, plus /proc, /sys, /dev) inside the node's network namespace.

    ``userland``: the host also has a distribution's /usr (iptables for ``portmap``); see
    ``add_userland``/``remove_userland`` for the mount points it needs."""
    for d in ("proc", "sys", "dev"):
        (host.path / d).mkdir(exist_ok=True)
    script = (_HOST_USERLAND if userland else "") + _HOST_KERNEL_FS
    prefix = ("ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "--",
              "/bin/sh", "-c", script, str(host.path))
    return Runtime(bin_dir=Path("/opt/cni/bin"), conflist=conflist, exec_prefix=prefix)


def add_userland(host: HostRoot) -> list[Path]:
    """The mount points and links a userland run needs in the host root; returns what it created."""
    made: list[Path] = []
    for d in _USERLAND_DIRS:
        p = host.path / d
        if not p.exists():
            p.mkdir(parents=True)
            made.append(p)
    for name, target in _USERLAND_LINKS.items():
        p = host.path / name
        if not p.exists() and not p.is_symlink():
            p.symlink_to(target)
            made.append(p)
    return made


def remove_userland(made: list[Path]) -> None:
    """Undo ``add_userland``: the host root has no userland again (its other tests require none)."""
    for p in reversed(made):
        if p.is_symlink():
            p.unlink()
        elif p.is_dir():
            p.rmdir()
