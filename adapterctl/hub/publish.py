"""Publish an exported adapter into a hub folder: its zip, its card (merged with the versions
already there), and a rebuilt index.

Nothing published is ever overwritten: the same zip again is recognised and left alone, new
contents become a new version (the next number, unless one is asked for), and asking for a
version that exists with other contents is an error.

A hub folder is shared (several people, CI jobs): a push holds the hub's lock from reading the
card to rebuilding the index, writes its zip through a temporary file of its own and claims the
version's file name exclusively, so concurrent pushes each get their own version and the index
lists them all. A push killed part-way is finished by the next try: a zip it left with the same
sha256 is adopted, and the index is rebuilt even when the card already lists the zip.
"""

from __future__ import annotations

import copy
import glob
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_file, atomic_write_text, child
from . import index
from .cache import file_digest, verify_file
from .card import card_id, card_slug, check_name, dump_card, read_card, validate_card

EXPORT_CARD = "card.yaml"


@dataclass(frozen=True)
class Published:
    card: Path
    version: str
    new: bool  # False: these very files were already published as ``version``


def _next_version(taken: list[str]) -> str:
    numbers = [int(v) for v in taken if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _orphan(folder: Path, slug: str, listed: set[str], sha256: str) -> str | None:
    """The version of a zip of ``slug`` that no card lists but holds these very bytes: what a
    push killed between writing its zip and its card left behind."""
    for path in sorted(folder.glob(f"{glob.escape(slug)}-*.zip")):
        if path.name not in listed and file_digest(path) == sha256:
            return path.name[len(slug) + 1 : -len(".zip")]
    return None


def _claim(archive: Path, folder: Path, slug: str, version: str, taken: list[str], chosen: bool) -> str:
    """Copy ``archive`` to ``<slug>-<version>.zip``, never replacing a file; returns the version.

    A zip already there with other contents (left by an interrupted push of other weights) moves
    this one to the next free version, or, for a ``chosen`` version, is an error.
    """
    while True:
        dest = folder / f"{slug}-{version}.zip"
        try:
            with archive.open("rb") as src, atomic_file(dest, exclusive=True) as out:
                shutil.copyfileobj(src, out, 1 << 20)
            return version
        except FileExistsError:
            if chosen:
                raise FileExistsError(f"{dest} exists, listed by no card (an interrupted push left it) and holds "
                                      "other contents; remove it or choose another version=...") from None
            taken = [*taken, version]
            version = _next_version(taken)


def publish(export_folder: Path, hub_root: Path, version: str | None = None) -> Published:
    """Add the adapter exported in ``export_folder`` (``card.yaml`` + its zip) to ``hub_root``."""
    export_folder, hub_root = Path(export_folder), Path(hub_root)
    if version is not None:
        check_name(version, "version")
    new = read_card(export_folder / EXPORT_CARD)
    file = next(f for f in new["files"] if f["version"] == new["default_version"])
    archive = child(export_folder, file["url"], "the card's file url")
    verify_file(archive, file["sha256"], file["size"], str(archive))

    slug = card_slug(new)
    folder = hub_root / index.CARDS / new["org"]
    card_path = folder / f"{slug}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    with index.lock(hub_root):
        card = read_card(card_path) if card_path.exists() else None
        files = card["files"] if card else []
        same = next((f for f in files if f["sha256"] == file["sha256"]), None)
        if same:
            index.build(hub_root)  # the push that wrote this card may have been killed before it indexed
            return Published(card_path, same["version"], new=False)
        taken = [f["version"] for f in files]
        if version and version in taken:
            raise FileExistsError(f"{card_id(new)} already has a version {version} with other contents; "
                                  f"choose another version=... (taken: {', '.join(taken)})")
        adopted = _orphan(folder, slug, {f["url"] for f in files}, file["sha256"])
        if adopted and adopted not in taken and version in (None, adopted):
            version = adopted
        else:
            wanted = version or (file["version"] if file["version"] not in taken else _next_version(taken))
            version = _claim(archive, folder, slug, wanted, taken, chosen=version is not None)
        merged = copy.deepcopy(new)  # the newest export describes the card; older versions stay listed
        merged["default_version"] = version
        merged["files"] = files + [{**file, "version": version, "url": f"{slug}-{version}.zip"}]
        validate_card(merged, str(card_path))
        atomic_write_text(card_path, dump_card(merged))
        index.build(hub_root)
    return Published(card_path, version, new=True)
