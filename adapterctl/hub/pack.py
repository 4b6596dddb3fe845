"""Pack an adapter folder into a zip, and unpack one safely.

Packing is deterministic (sorted names, fixed timestamps), so the same folder always gives the
same sha256 and a re-push of unchanged files is recognised. Unpacking checks every entry
before writing anything: names that are absolute or climb out with ``..``, links, devices and
duplicate names are refused, since a downloaded archive is untrusted input.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import UnsafeArchiveError

_EPOCH = (1980, 1, 1, 0, 0, 0)
MAX_UNPACKED = 20 * 2**30  # a zip bomb guard far above any adapter


def pack(folder: Path, archive: Path) -> Path:
    """Zip the regular files of ``folder`` (flat, as an adapter folder is) into ``archive``."""
    folder, archive = Path(folder), Path(archive)
    if archive.exists():
        raise FileExistsError(f"{archive} already exists; remove it or choose another name")
    files = sorted(folder.iterdir())
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise UnsafeArchiveError(f"{path} is not a regular file; an adapter folder holds only files")
    tmp = archive.with_name(f".{archive.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                info = zipfile.ZipInfo(path.name, date_time=_EPOCH)
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def _check_entry(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} is an absolute path; refused, nothing extracted")
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} climbs out of the folder with '..'; refused, nothing extracted")
    mode = info.external_attr >> 16  # no file type bits (zips made on Windows): a plain file
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise UnsafeArchiveError(f"{archive}: entry {name!r} is {kind}; refused, nothing extracted")


def unpack(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into the existing, empty folder ``dest`` after checking every entry."""
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise UnsafeArchiveError(f"{archive} is not a zip archive ({e}); refused") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            _check_entry(info, archive)
        names = [i.filename.rstrip("/") for i in infos]
        if len(set(names)) != len(names):
            raise UnsafeArchiveError(f"{archive} names an entry twice; refused, nothing extracted")
        if sum(i.file_size for i in infos) > MAX_UNPACKED:
            raise UnsafeArchiveError(f"{archive} would unpack to more than {MAX_UNPACKED} bytes; refused")
        for info in infos:
            target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, target.open("xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except zipfile.BadZipFile as e:  # a CRC mismatch: the archive was altered
                raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is corrupt ({e}); refused") from None
    return dest
