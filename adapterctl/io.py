"""Writing files safely: atomically, with the usual permissions, under a lock, inside their folder.

Everything adapterctl writes to disk goes through here (adapter folders, run folders and
checkpoints, hub cards, zips and the index, the download cache), so a crash or ``kill -9``
mid-write leaves the previous state readable and never half a file. Temporary files and folders
get the permissions the umask gives (``mkstemp``/``mkdtemp`` would give 0600/0700, which nginx
or a group sharing a hub folder cannot read). Names read from files (an ``adapter_setup.json``'s
children, say) go through ``child`` before they become paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import CorruptFileError, FolderBusyError


def _sibling(target: Path, kind: str) -> Path:
    """An unused hidden name beside ``target``: ``.<name>.<kind>-<random>``."""
    return target.with_name(f".{target.name}.{kind}-{secrets.token_hex(6)}")


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets it,
    for every thread, while it reads it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_permissions(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions a plain ``open``/``mkdir`` would,
    whatever the library that wrote them chose (safetensors writes 0600)."""
    mask = _umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def temp_dir(target: Path) -> Path:
    """A new empty folder beside ``target``, on its file system, with the umask's permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = _sibling(target, "tmp")
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o777)
            return path


def _backups(target: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(glob.escape(str(target.parent / f".{target.name}.old-")) + "*"))


def recover(target: Path) -> Path:
    """Finish what an overwrite killed between its two renames left behind, and return ``target``.

    ``atomic_dir`` replaces a folder by renaming it to ``.<name>.old-*``, then the new one into
    place. Killed in between, ``target`` is missing and the previous version waits beside it:
    it is renamed back. Killed after both renames, the old copy is removed.
    """
    target = Path(target)
    backups = _backups(target)
    if not backups:
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        for backup in backups:  # the new version is in place; these are leftovers
            shutil.rmtree(backup, ignore_errors=True)
    elif len(backups) == 1:
        if target.is_dir():
            target.rmdir()
        os.replace(backups[0], target)
    else:
        raise CorruptFileError(
            f"{target} is missing; interrupted writes left {len(backups)} earlier versions beside it "
            f"({', '.join(b.name for b in backups)}): rename the one to keep to {target.name}"
        )
    return target


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = False):
    """Yield a temporary folder beside ``target`` that replaces it only if the block succeeds."""
    target = recover(Path(target))
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(
            f"{target} already exists; choose another folder or pass overwrite=True to replace it"
        )
    tmp = temp_dir(target)
    try:
        yield tmp
        usual_permissions(tmp)
        if target.exists():
            backup = _sibling(target, "old")
            os.replace(target, backup)  # killed between these two renames: recover() undoes it
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(backup, target)
                raise
            shutil.rmtree(backup)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_file(path: Path, exclusive: bool = False) -> Iterator[BinaryIO]:
    """Yield a new temporary file beside ``path`` (opened ``wb``) that becomes ``path`` only if
    the block succeeds. ``exclusive``: never replace an existing ``path`` (``FileExistsError``),
    so two writers racing for one name cannot both win."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides, as for open()
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if ``path`` exists, also on NFS
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file via a temporary sibling and ``os.replace``: readers never see half a file."""
    with atomic_file(path) as out:
        out.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def locked(path: Path, timeout: float = 120.0):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block.

    A ``flock``: the kernel releases it when the holder exits, even by ``kill -9``, so a crashed
    writer never leaves a folder locked. Waits up to ``timeout`` seconds, then says who to wait for.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # NFS locks need a file open for writing
    except PermissionError:  # another user's lock file: a local flock works read-only too
        fd = os.open(path, os.O_RDONLY)
    try:
        give_up = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise FolderBusyError(
                        f"{path} is still locked after {timeout:g} s by another adapterctl process writing "
                        "there; try again when it has finished"
                    ) from None
                time.sleep(0.01)
            except OSError as e:
                raise FolderBusyError(f"cannot lock {path} ({e.strerror}): its file system has no working locks; "
                                      "write into this folder from one process at a time, or move it") from None
        yield
    finally:
        os.close(fd)


_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def child(folder: Path, name: str, what: str = "name") -> Path:
    """``folder / name`` for a ``name`` read from a file: one plain path component that resolves
    inside ``folder``, else ``CorruptFileError`` (a file must not point elsewhere on the disk)."""
    folder = Path(folder)
    if not isinstance(name, str) or name in ("", ".", "..") or _UNSAFE.search(name) or re.match(r"^[A-Za-z]:", name):
        raise CorruptFileError(f"{what} {name!r} in {folder} is not a plain file or folder name; refused, "
                               "fix the file that names it")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CorruptFileError(f"{what} {name!r} in {folder} resolves outside it (a link?); refused")
    return path
