"""Pack an adapter folder into a zip, and unpack one safely.

Packing is deterministic (sorted names, fixed timestamps), so the same folder always gives the
same sha256 and a re-push of unchanged files is recognised. Unpacking checks every entry
before writing anything, since a downloaded archive is untrusted input: names that are absolute
or climb out with ``..``, links, devices and duplicate names are refused; so is any file an
adapter folder does not hold (``ADAPTER_FILES``, the one list of them) and an archive that would
unpack to more than adapters need (``Limits``): a zip bomb is refused before a byte is written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..io import atomic_file
from .errors import UnsafeArchiveError

_EPOCH = (1980, 1, 1, 0, 0, 0)

# Every file an adapter folder may hold: what adapterctl, AdapterHub and PEFT save for an
# adapter, its head, a fusion or a setup. Nothing else is packed, unpacked or pulled from the
# HF Hub; a method or format that saves another file adds it here.
ADAPTER_FILES = {
    "adapter_config.json": "an adapter's config (AdapterHub's envelope, or PEFT's config)",
    "adapter.safetensors": "adapter weights",
    "pytorch_adapter.bin": "adapter weights, AdapterHub's legacy format (read as tensors only)",
    "adapter_model.safetensors": "PEFT adapter weights",
    "adapter_model.bin": "PEFT adapter weights, legacy format (read as tensors only)",
    "head_config.json": "the prediction head's config",
    "model_head.safetensors": "head weights",
    "pytorch_model_head.bin": "head weights, legacy format",
    "adapter_fusion_config.json": "an AdapterFusion's config",
    "model_adapter_fusion.safetensors": "fusion weights",
    "pytorch_model_adapter_fusion.bin": "fusion weights, legacy format",
    "adapter_setup.json": "a setup; its adapters and fusions sit in sub-folders named after them",
    "adapter_interface.json": "AdapterHub's plugin interface, for a model family it has no built-in support for",
    "README.md": "the model card of an HF Hub repo",
}
SETUP = "adapter_setup.json"
CONFIG_FILES = ("adapter_config.json", "adapter_fusion_config.json", SETUP)  # what makes a folder loadable
_CHILD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=-]*")  # a setup's sub-folder: an adapter or fusion name


@dataclass(frozen=True)
class Limits:
    """How much one archive may unpack to: at most ``ratio`` times its own size (weights barely
    compress, about 1.1x; a zip bomb expands a thousandfold), never less than ``floor`` (small
    configs compress well) and never more than ``max_bytes``. The environment variables
    ``ADAPTERCTL_MAX_UNPACKED`` (bytes) and ``ADAPTERCTL_MAX_UNPACK_RATIO`` change the defaults."""

    max_bytes: int = 8 * 2**30
    ratio: float = 20.0
    floor: int = 64 * 2**20
    max_entries: int = 1024

    @classmethod
    def from_env(cls) -> "Limits":
        changes = {}
        for var, field, kind in (("ADAPTERCTL_MAX_UNPACKED", "max_bytes", int),
                                 ("ADAPTERCTL_MAX_UNPACK_RATIO", "ratio", float)):
            if os.environ.get(var):
                try:
                    changes[field] = kind(os.environ[var])
                except ValueError:
                    raise UnsafeArchiveError(f"{var}={os.environ[var]!r} is not a number; set it to a "
                                             f"{'byte count' if kind is int else 'ratio'} or unset it") from None
        return dataclasses.replace(cls(), **changes)

    def allowed(self, archive_size: int) -> int:
        return int(min(self.max_bytes, max(self.floor, self.ratio * archive_size)))


def layout_problem(names: list[str]) -> str | None:
    """Why ``names`` ('/'-separated, directories ending in '/') cannot be an adapter folder, or
    None: top-level files from ``ADAPTER_FILES``; sub-folders only in a setup, one level deep."""
    setup = SETUP in names
    for name in names:
        parts = name.rstrip("/").split("/")
        if len(parts) == 1 and (name in ADAPTER_FILES or (setup and name.endswith("/") and _CHILD.fullmatch(parts[0]))):
            continue
        if (len(parts) == 2 and setup and _CHILD.fullmatch(parts[0]) and not name.endswith("/")
                and parts[1] in ADAPTER_FILES and parts[1] != SETUP):
            continue
        where = "" if len(parts) == 1 else " (sub-folders only in a setup, holding adapter files)"
        return (f"{name!r} is not a file an adapter folder holds{where}; the files are: "
                f"{', '.join(ADAPTER_FILES)}")
    return None


def _files(folder: Path) -> list[Path]:
    """The files of ``folder`` (and a setup's sub-folders), sorted; links and devices refused."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise UnsafeArchiveError(f"{path} is not a regular file; an adapter folder holds only files")
        if path.is_file():
            found.append(path)
    return found


def pack(folder: Path, archive: Path) -> Path:
    """Zip the files of the adapter folder ``folder`` into ``archive`` (which must not exist)."""
    folder, archive = Path(folder), Path(archive)
    if archive.exists():
        raise FileExistsError(f"{archive} already exists; remove it or choose another name")
    files = _files(folder)
    problem = layout_problem([p.relative_to(folder).as_posix() for p in files])
    if problem:
        raise UnsafeArchiveError(f"{folder}: {problem}. Move other files out of the folder before packing it")
    with atomic_file(archive, exclusive=True) as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_EPOCH)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
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


def unpack(archive: Path, dest: Path, limits: Limits | None = None) -> Path:
    """Extract ``archive`` into the existing, empty folder ``dest`` after checking every entry:
    names, kinds, the adapter layout and the total size (``limits``, default ``Limits.from_env()``)."""
    archive, dest = Path(archive), Path(dest)
    limits = limits or Limits.from_env()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise UnsafeArchiveError(f"{archive} is not a zip archive ({e}); refused") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeArchiveError(f"{archive} has {len(infos)} entries, more than an adapter folder's "
                                     f"{limits.max_entries}; refused, nothing extracted")
        for info in infos:
            _check_entry(info, archive)
        names = [i.filename.rstrip("/") for i in infos]
        if len(set(names)) != len(names):
            raise UnsafeArchiveError(f"{archive} names an entry twice; refused, nothing extracted")
        problem = layout_problem([i.filename for i in infos])
        if problem:
            raise UnsafeArchiveError(f"{archive}: {problem}; refused, nothing extracted")
        budget = limits.allowed(archive.stat().st_size)
        total = sum(i.file_size for i in infos)
        if total > budget:
            raise UnsafeArchiveError(
                f"{archive} would unpack to {total} bytes, more than the {budget} allowed for a "
                f"{archive.stat().st_size}-byte archive (a zip bomb?); refused, nothing extracted. If you trust it, "
                "raise ADAPTERCTL_MAX_UNPACK_RATIO or ADAPTERCTL_MAX_UNPACKED"
            )
        for info in infos:
            target = dest.joinpath(*PurePosixPath(info.filename).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, target.open("xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)  # zipfile stops at the declared size, then checks the CRC
            except zipfile.BadZipFile as e:  # a CRC mismatch: the archive was altered
                raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is corrupt ({e}); refused") from None
    return dest
