"""felixpy.private_files: modes set explicitly, whatever the umask, with no moment where a secret
is readable by other users, and existing files and directories tightened."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from felixpy.private_files import PRIVATE, SECRET, open_log, private_dir, world_accessible, write_file


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_private_dir_and_its_missing_parents_are_0700_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    target = private_dir(tmp_path / "a" / "b" / "run")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", target)] == [0o700] * 3


def test_existing_directory_is_tightened_never_widened(tmp_path: Path) -> None:
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    wide.mkdir()
    narrow.mkdir()
    os.chmod(wide, 0o755)
    os.chmod(narrow, 0o500)
    private_dir(wide)
    private_dir(narrow)
    assert (mode(wide), mode(narrow)) == (0o700, 0o500)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "file")


@pytest.mark.parametrize("wanted", [SECRET, PRIVATE])
def test_write_file_has_its_mode_whatever_the_umask(tmp_path: Path, umask: int, wanted: int) -> None:
    path = tmp_path / "exabgp.conf"
    path.write_text("old")
    os.chmod(path, 0o644)  # left wide by an older version: replaced, not inherited
    write_file(path, "neighbor 10.0.0.1 { md5-password c2VjcmV0; }", wanted)
    assert mode(path) == wanted
    assert path.read_text().startswith("neighbor")
    assert os.listdir(tmp_path) == ["exabgp.conf"], "no temporary file left behind"


def test_write_file_never_shows_a_readable_or_partial_file(tmp_path: Path) -> None:
    """A reader polling the directory while the file is rewritten sees only 0600 files and whole texts."""
    path = tmp_path / "exabgp.conf"
    texts = [f"config {i} " * 2000 for i in range(2)]
    write_file(path, texts[0], SECRET)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        old = os.umask(0)
        try:
            while not stop.is_set():
                for name in os.listdir(tmp_path):
                    try:
                        info = os.lstat(tmp_path / name)
                    except FileNotFoundError:
                        continue
                    if stat.S_IMODE(info.st_mode) != SECRET:
                        seen.append(f"{name} {oct(info.st_mode)}")
        finally:
            os.umask(old)

    old = os.umask(0)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(200):
            write_file(path, texts[i % 2], SECRET)
            assert path.read_text() in texts
    finally:
        stop.set()
        watcher.join(10)
        os.umask(old)
    assert seen == []


def test_open_log_appends_with_its_mode_and_tightens_an_old_log(tmp_path: Path, umask: int) -> None:
    log = tmp_path / "agent.log"
    log.write_text("old line\n")
    os.chmod(log, 0o644)
    fd = open_log(log)
    try:
        os.write(fd, b"new line\n")
    finally:
        os.close(fd)
    assert mode(log) == PRIVATE
    assert log.read_text() == "old line\nnew line\n"
    os.symlink(log, tmp_path / "link")
    with pytest.raises(OSError):
        open_log(tmp_path / "link")  # O_NOFOLLOW: never write through a planted symlink


def test_world_accessible_lists_what_others_can_read_write_or_list(tmp_path: Path) -> None:
    private_dir(tmp_path / "run")
    write_file(tmp_path / "run" / "secret", "x", SECRET)
    assert world_accessible(tmp_path / "run") == []
    os.chmod(tmp_path / "run" / "secret", 0o604)
    assert world_accessible(tmp_path / "run") == [(str(tmp_path / "run" / "secret"), 0o604)]


def test_wireguard_key_material_is_0600_in_a_0700_directory(tmp_path: Path, umask: int) -> None:
    """The WireGuard device config holds the node's private key: FELIXPY_STATE_DIR/wireguard/ is
    0700 (created so, or tightened when an older version left it 0755) and the file 0600."""
    from felixpy.dataplane.wireguard_kernel import write_private

    fresh = tmp_path / "state" / "wireguard" / "wireguard.cali.conf"
    write_private(str(fresh), "[Interface]\nPrivateKey = c2VjcmV0\n")
    assert (mode(fresh), mode(fresh.parent), mode(fresh.parent.parent)) == (0o600, 0o700, 0o700)
    old = tmp_path / "old" / "wireguard"
    old.mkdir(parents=True)
    os.chmod(old, 0o755)
    (old / "wg-v6.cali.conf").write_text("wide")
    os.chmod(old / "wg-v6.cali.conf", 0o644)
    write_private(str(old / "wg-v6.cali.conf"), "[Interface]\nPrivateKey = c2VjcmV0\n")
    assert (mode(old / "wg-v6.cali.conf"), mode(old)) == (0o600, 0o700)
    assert sorted(os.listdir(old)) == ["wg-v6.cali.conf"], "no temporary file left behind"
    assert world_accessible(tmp_path / "state") == []
