"""The download cache: every adapter in it arrived whole and verified, or is not there at all.

Downloads go to a temporary folder inside the cache, are checked against the card's size and
sha256, unpacked there (``pack.unpack`` checks every entry and the total size first), and only
then renamed into place in one step. Any failure, Ctrl-C included, removes the temporary
folder, so no half-written file is ever left for a later load to trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CorruptFileError
from ..io import temp_dir
from .pack import CONFIG_FILES, Limits, unpack


def default_root() -> Path:
    return Path(os.environ.get("ADAPTERCTL_CACHE") or Path.home() / ".cache" / "adapterctl").expanduser()


def file_digest(path: Path, algorithm: str = "sha256", prefix: bytes = b"") -> str:
    h = hashlib.new(algorithm, prefix)
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, sha256: str, size: int, source: str) -> None:
    """Refuse a file whose size or sha256 differs from what its card promises."""
    actual = Path(path).stat().st_size
    if actual != size:
        raise CorruptFileError(
            f"{source}: got {actual} bytes, the card says {size}; the download was truncated or the file "
            "changed on the hub. Nothing was kept; pull again, or ask the hub's maintainer to re-push it"
        )
    digest = file_digest(path)
    if digest != sha256:
        raise CorruptFileError(
            f"{source}: sha256 {digest} does not match the card's {sha256}; the file was tampered with or "
            "corrupted. Nothing was kept; do not use this hub copy until its maintainer re-pushes it"
        )


class Cache:
    """``ADAPTERCTL_CACHE`` or ``~/.cache/adapterctl``: ``adapters/`` from hubs, ``hf/`` from the HF Hub."""

    def __init__(self, root=None):
        self.root = Path(root).expanduser() if root else default_root()

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary folder on the cache's file system, removed whatever happens."""
        tmp = temp_dir(self.root / "download")  # .download.tmp-*
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def install(self, target: Path, fill: Callable[[Path], None]) -> Path:
        """Make ``target`` by letting ``fill`` populate a scratch folder, then rename it into place.

        The first complete install wins: a later one (another training process loading the same
        adapter, say) finds ``target`` there and uses it, never swapping it under a reader, which
        is why this is a plain rename and not ``io.atomic_dir`` (that one replaces).
        """
        if _loadable(target):
            return target
        with self.scratch() as tmp:
            fill(tmp)
            if not _loadable(tmp):
                raise CorruptFileError(f"{target.name}: the download holds none of {', '.join(CONFIG_FILES)}; "
                                       "it is not an adapter")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not _loadable(target):
                    raise
        return target

    def install_archive(self, target: Path, download: Callable[[Path], None], sha256: str, size: int,
                        source: str, limits: Limits | None = None) -> Path:
        """Download an adapter zip with ``download(path)``, verify it, unpack it into ``target``."""
        if _loadable(target):
            return target
        with self.scratch() as tmp:
            archive = tmp / "adapter.zip"
            download(archive)
            verify_file(archive, sha256, size, source)
            return self.install(target, lambda out: unpack(archive, out, limits))


def _loadable(folder: Path) -> bool:
    return any((folder / name).is_file() for name in CONFIG_FILES)
