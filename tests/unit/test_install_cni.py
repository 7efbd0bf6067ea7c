"""`felixpy install-cni` puts on the host only what runs there: static forwarders, the reference
plugins the configuration chains (bundled with their loader when dynamic), and a valid conflist.

"The host" is a directory that starts empty: the tests check every file written against it (no
interpreter, library or path that exists only in the image) and, as root, run every installed
plugin chrooted into it, as a runtime on a host without Python or glibc would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from felixpy.cni import forwarder
from felixpy.kube.install_cni import (
    BUNDLE_DIR,
    InstallError,
    chained_types,
    elf_interpreter,
    install,
    main,
    render_conflist,
)

TEMPLATE = (
    '{"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": '
    '[{"type": "felixpy", "nodename": "__KUBERNETES_NODE_NAME__", "mtu": __CNI_MTU__,'
    ' "log_file_path": "/var/log/felixpy/cni/cni.log", "run_dir": "/var/run/felixpy",'
    ' "ipam": {"type": "felixpy-ipam"}},'
    ' {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}]}'
)
REFERENCE = Path("/usr/lib/cni")
# What the DaemonSet's hostPath volumes create on the host: paths the plugins may name.
HOST_PATHS_FROM_CHART = ("/var/run/felixpy", "/var/log/felixpy/cni", "/var/lib/felixpy")


def _need_build() -> None:
    try:
        forwarder.binary("felixpy-cni")
        forwarder.binary("felixpy-bundle-exec")
    except forwarder.ForwarderMissing as exc:
        print(f"skipping: {exc}")
        pytest.skip(str(exc))


def _need_portmap() -> None:
    if not (REFERENCE / "portmap").exists():
        print("skipping: containernetworking-plugins (/usr/lib/cni/portmap) is not installed")
        pytest.skip("no /usr/lib/cni/portmap")


@pytest.fixture
def host(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An empty host root, after install-cni wrote into its /opt/cni/bin and /etc/cni/net.d."""
    _need_build()
    _need_portmap()
    root = tmp_path / "host"
    written = install(
        bin_dir=root / "opt/cni/bin",
        conf_dir=root / "etc/cni/net.d",
        conf_name="10-felixpy.conflist",
        template=TEMPLATE,
        node_name="node-a",
        mtu=1430,
    )
    return root, written


def test_installs_forwarders_chained_plugins_and_conflist(host: tuple[Path, list[Path]]) -> None:
    root, written = host
    conf = json.loads((root / "etc/cni/net.d/10-felixpy.conflist").read_text())
    assert conf["plugins"][0]["nodename"] == "node-a" and conf["plugins"][0]["mtu"] == 1430
    bin_dir = root / "opt/cni/bin"
    for name in ("felixpy", "felixpy-ipam", "portmap"):
        assert bin_dir / name in written and os.access(bin_dir / name, os.X_OK)
    assert (bin_dir / "felixpy").read_bytes() == (bin_dir / "felixpy-ipam").read_bytes()
    assert written[-1].name == "10-felixpy.conflist"  # the configuration last: binaries first
    assert not list(bin_dir.glob(".*.tmp")) and not list(bin_dir.glob(f"{BUNDLE_DIR}/**/.*.tmp"))


def _paths_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.])(/[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)+)", text))


def test_nothing_written_needs_a_path_that_exists_only_in_the_image(host: tuple[Path, list[Path]]) -> None:
    """Every file the runtime executes is static or names a loader install-cni put on the host;
    every script's interpreter and every path in a text file exists on the host (or is one of the
    chart's hostPaths). The forwarder's own paths are the chart's run directory and /proc."""
    root, written = host
    bin_dir = root / "opt/cni/bin"
    problems = []

    def on_host(path: str) -> bool:
        return (root / path.lstrip("/")).exists() or path.startswith(HOST_PATHS_FROM_CHART)

    for path in written:
        data = path.read_bytes()
        interpreter = elf_interpreter(path)
        executed = path.parent == bin_dir
        if data.startswith(b"\x7fELF"):
            if executed and interpreter is not None and not on_host(interpreter):
                problems.append(f"{path.name}: ELF interpreter {interpreter} is not on the host")
            if not executed:
                assert path.parent.is_relative_to(bin_dir / BUNDLE_DIR), path
            continue
        text = data.decode()
        if text.startswith("#!"):
            shebang = text.splitlines()[0][2:].split()[0]
            if not on_host(shebang):
                problems.append(f"{path.name}: interpreter {shebang} is not on the host")
        problems += [f"{path.name}: names {p}, not on the host" for p in _paths_in(text) if not on_host(p)]
    # the static binaries' own strings: only the chart's run dir and the kernel's /proc
    for name in ("felixpy", "portmap"):
        strings = subprocess.run(
            ["strings", str(bin_dir / name)], capture_output=True, text=True, check=False
        )
        own = {p for p in _paths_in(strings.stdout) if p.startswith(("/opt", "/usr/lib/python", "/work"))}
        problems += [f"{name}: names {p}" for p in own]
    assert not problems, "\n".join(problems)
    # the check can fail: the Python plugin's launcher names this venv's interpreter
    from felixpy.kube.install_cni import launcher

    shebang = launcher("felixpy-cni").splitlines()[0][2:].split()[0]
    assert not on_host(shebang)


def _chroot_run(
    root: Path, plugin: str, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run /opt/cni/bin/<plugin> chrooted into ``root`` with /proc mounted (a private mount namespace)."""
    (root / "proc").mkdir(exist_ok=True)
    script = f'mount -t proc proc "{root}/proc" && exec chroot "{root}" /opt/cni/bin/{plugin}'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_installed_plugins_run_on_a_host_without_python_or_libc(host: tuple[Path, list[Path]]) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("skipping: chroot into the host root needs root and unshare")
        pytest.skip("needs root")
    root, _ = host
    assert not (root / "usr").exists() and not (root / "lib").exists() and not (root / "lib64").exists()
    for plugin in ("felixpy", "felixpy-ipam", "portmap"):
        proc = _chroot_run(root, plugin, {"CNI_COMMAND": "VERSION"})
        assert proc.returncode == 0, (plugin, proc.stdout, proc.stderr)
        assert "1.0.0" in json.loads(proc.stdout)["supportedVersions"]
    # without /proc (a bare chroot) the launcher finds its bundle from its absolute path
    bare = subprocess.run(
        [str(shutil.which("chroot")), str(root), "/opt/cni/bin/portmap"],
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bare.returncode == 0 and "1.0.0" in bare.stdout, bare.stdout + bare.stderr
    # no agent on this host: code 11 at once, naming the socket of the chart's run directory
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/var/run/netns/x",
    }
    conf = json.dumps(
        json.loads((root / "etc/cni/net.d/10-felixpy.conflist").read_text())["plugins"][0]
        | {"cniVersion": "1.0.0"}
    )
    proc = _chroot_run(root, "felixpy", env, conf)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["code"] == 11 and "/var/run/felixpy/cni.sock" in out["msg"]
    assert "exit=1" in (root / "var/log/felixpy/cni/cni.log").read_text()


def test_a_plugin_missing_from_the_image_is_named_and_nothing_is_configured(tmp_path: Path) -> None:
    _need_build()
    template = '{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "felixpy"}, {"type": "nosuch"}]}'
    with pytest.raises(InstallError, match="'nosuch'"):
        install(
            bin_dir=tmp_path / "bin",
            conf_dir=tmp_path / "net.d",
            conf_name="c",
            template=template,
            node_name="n",
            mtu=1,
        )
    assert not (tmp_path / "net.d" / "c").exists()


def test_main_reports_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_build()
    monkeypatch.setenv("CNI_BIN_DIR", str(tmp_path / "bin"))
    monkeypatch.setenv("CNI_CONF_DIR", str(tmp_path / "net.d"))
    monkeypatch.setenv("KUBERNETES_NODE_NAME", "n")
    monkeypatch.setenv("CNI_NETWORK_CONFIG", '{"cniVersion": "1.0.0", "plugins": [{"type": "../x"}]}')
    assert main() == 1
    assert capsys.readouterr().err.strip() == "install-cni: plugin type '../x' is not a file name"
    monkeypatch.delenv("CNI_NETWORK_CONFIG")
    assert main() == 2
    assert "CNI_NETWORK_CONFIG" in capsys.readouterr().err


def test_chained_types_in_order_without_repeats() -> None:
    conf = json.loads(render_conflist(TEMPLATE, node_name="n", mtu=1))
    assert chained_types(conf) == ["felixpy", "felixpy-ipam", "portmap"]
    assert chained_types({"type": "bridge", "ipam": {"type": "host-local"}}) == ["bridge", "host-local"]


def test_broken_template_is_refused() -> None:
    with pytest.raises(json.JSONDecodeError):
        render_conflist('{"mtu": __CNI_MTU__,}', node_name="n", mtu=1)
