"""Publish an exported adapter into a hub folder: its zip, its card (merged with the versions
already there), and a rebuilt index.

Nothing published is ever overwritten: the same zip again is recognised and left alone, new
contents become a new version (the next number, unless one is asked for), and asking for a
version that exists with other contents is an error.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_write_text
from . import index
from .cache import verify_file
from .card import card_id, card_slug, dump_card, read_card, validate_card

EXPORT_CARD = "card.yaml"


@dataclass(frozen=True)
class Published:
    card: Path
    version: str
    new: bool  # False: these very files were already published as ``version``


def _next_version(taken: list[str]) -> str:
    numbers = [int(v) for v in taken if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _copy_new(src: Path, dest: Path) -> None:
    """Copy ``src`` to a ``dest`` that must not exist yet, appearing whole or not at all."""
    if dest.exists():
        raise FileExistsError(f"{dest} already exists in the hub; it is not replaced")
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def publish(export_folder: Path, hub_root: Path, version: str | None = None) -> Published:
    """Add the adapter exported in ``export_folder`` (``card.yaml`` + its zip) to ``hub_root``."""
    export_folder, hub_root = Path(export_folder), Path(hub_root)
    new = read_card(export_folder / EXPORT_CARD)
    file = next(f for f in new["files"] if f["version"] == new["default_version"])
    archive = export_folder / file["url"]
    verify_file(archive, file["sha256"], file["size"], str(archive))

    card_path = hub_root / index.CARDS / new["org"] / f"{card_slug(new)}.yaml"
    card = read_card(card_path) if card_path.exists() else None
    files = card["files"] if card else []
    same = next((f for f in files if f["sha256"] == file["sha256"]), None)
    if same:
        return Published(card_path, same["version"], new=False)
    taken = [f["version"] for f in files]
    if version and version in taken:
        raise FileExistsError(f"{card_id(new)} already has a version {version} with other contents; "
                              f"choose another version=... (taken: {', '.join(taken)})")
    version = version or (file["version"] if file["version"] not in taken else _next_version(taken))

    card_path.parent.mkdir(parents=True, exist_ok=True)
    zip_name = f"{card_slug(new)}-{version}.zip"
    _copy_new(archive, card_path.parent / zip_name)
    merged = copy.deepcopy(new)  # the newest export describes the card; older versions stay listed
    merged["default_version"] = version
    merged["files"] = files + [{**file, "version": version, "url": zip_name}]
    validate_card(merged, str(card_path))
    atomic_write_text(card_path, dump_card(merged))
    index.build(hub_root)
    return Published(card_path, version, new=True)
