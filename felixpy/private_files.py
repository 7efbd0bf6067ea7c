"""Files the agent and the lab write, with their modes set explicitly (never left to the umask).

Three classes of file, and the directories that hold them:

- secrets (ExaBGP's config with its MD5 passwords, any key material): ``SECRET`` 0600;
- logs, status and pid files: ``PRIVATE`` 0640 (root and the root group, never other users);
- a directory that holds either: ``PRIVATE_DIR`` 0700 (not listable by other users).

Every write is umask-independent and has no window where the file is readable by others:
whole-file writes go to a temporary file created with ``O_EXCL`` and mode 0600 (``mkstemp``),
are ``fchmod``-ed to their final mode, then renamed over the target; appended logs are opened
with their mode and ``fchmod``-ed (which also tightens a file left with wider bits by an older
version). An existing directory is only ever tightened, never widened.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SECRET = 0o600
PRIVATE = 0o640
PRIVATE_DIR = 0o700


def private_dir(path: str | os.PathLike[str], mode: int = PRIVATE_DIR) -> Path:
    """``path`` as a directory with at most ``mode``: created with it (and so are missing parents),
    an existing one is tightened, never widened."""
    target = Path(path)
    missing = [target]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, mode)
            os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
    info = os.lstat(target)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{target} exists and is not a directory")
    current = stat.S_IMODE(info.st_mode)
    if current & ~mode:
        os.chmod(target, current & mode)
    return target


def write_file(path: str | os.PathLike[str], data: str | bytes, mode: int = PRIVATE) -> None:
    """Replace ``path`` atomically with ``data``; the file has exactly ``mode`` from its first byte."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_log(path: str | os.PathLike[str], mode: int = PRIVATE) -> int:
    """A file descriptor appending to ``path`` (created with ``mode``; an existing file gets ``mode``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def log_file(path: str | os.PathLike[str], mode: int = PRIVATE) -> Iterator[int]:
    """`open_log` as a context manager: the descriptor is closed on exit (after handing it to a child)."""
    fd = open_log(path, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def world_accessible(root: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """Every path under ``root`` (itself included) that other users can read, write or list, with
    its mode: what the file-mode tests assert empty. Symlinks are not followed."""
    found: list[tuple[str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            try:
                info = os.lstat(name)
            except FileNotFoundError:  # gone meanwhile (a .tmp renamed, a socket closed)
                continue
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o007:
                found.append((name, mode))
    return sorted(set(found))
