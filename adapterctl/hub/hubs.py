"""The configured hubs, and turning an identifier into a verified local adapter folder.

Hubs come from the ``hubs`` argument or ``ADAPTERCTL_HUB`` (comma-separated folders and URLs),
searched together: an identifier must name exactly one adapter across all of them. A hub that
cannot be reached is a warning, not an error, as long as another hub answers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import AdapterConfigError
from . import index as idx
from .backends import COMMIT, HfHubBackend, HttpBackend, backend_for, is_url, join
from .cache import Cache
from .card import parse_card
from .errors import CardError, DownloadError, UnknownAdapterError
from .identifiers import FORMS, HfIdentifier, Identifier, parse

log = logging.getLogger(__name__)
MAX_INDEX = 64 * 2**20  # bytes: an index of some 50,000 adapters
MAX_CARD = 2**20


class Hub:
    """One hub: a folder or a URL, its index and its cards. ``http`` options (retries,
    backoff, timeout) go to the HTTP backend of a URL hub."""

    def __init__(self, location, **http):
        self.location = str(location)
        self.http = http
        self.backend = backend_for(self.location, **http)

    def __repr__(self):
        return f"Hub({self.location!r})"

    @cached_property
    def entries(self) -> list[idx.Entry]:
        text = self.backend.read_bytes(idx.INDEX, MAX_INDEX)
        if text is not None:
            return idx.loads(text.decode("utf-8"), f"{self.location}/{idx.INDEX}")
        if is_url(self.location):
            raise DownloadError(f"{self.location} has no {idx.INDEX}; run 'adapterctl hub index' on the hub folder")
        return idx.scan(Path(self.location))  # a local hub not indexed yet is read directly

    def card(self, entry: idx.Entry) -> dict:
        raw = self.backend.read_bytes(entry.card, MAX_CARD)
        if raw is None:
            raise DownloadError(f"{self.location}: the index names {entry.card}, which is missing; "
                                "run 'adapterctl hub index' on the hub")
        return parse_card(raw.decode("utf-8"), f"{self.location}/{entry.card}")

    def download(self, card_path: str, file: dict, dest: Path, progress: bool | None) -> None:
        """Stream a card's file (its url relative to the card, or absolute) to ``dest``, no more
        than the card's size."""
        from tqdm.auto import tqdm  # only when something is downloaded

        url = file["url"]
        backend, relative = (HttpBackend(url, **self.http), url) if is_url(url) else (self.backend, join(card_path, url))
        with tqdm(desc=Path(relative).name, total=file["size"], unit="B", unit_scale=True, unit_divisor=1024,
                  disable=None if progress is None else not progress) as bar, dest.open("wb") as out:
            backend.fetch(relative, out, file["size"], size=file["size"], progress=bar)


@dataclass(frozen=True)
class Found:
    hub: Hub
    entry: idx.Entry
    version: str


def configured_hubs(hubs=None) -> list[Hub]:
    """``hubs`` (a list, or a comma-separated string) or ``ADAPTERCTL_HUB``."""
    spec = hubs if hubs is not None else os.environ.get("ADAPTERCTL_HUB", "")
    items = spec.split(",") if isinstance(spec, str) else spec
    return [h if isinstance(h, Hub) else Hub(str(h).strip()) for h in items if str(h).strip()]


def _identifier(text: str) -> Identifier | HfIdentifier:
    ident = parse(text)
    if ident is None:
        raise AdapterConfigError(
            f"{text!r} is neither an adapter folder nor a hub identifier ({FORMS}); check the path or the spelling"
        )
    return ident


def find(identifier: str, hubs=None, **want) -> Found:
    """The hub entry and version ``identifier`` names; ``want`` narrows by model_type,
    hidden_size, model_name, architecture or config (see ``index.select``)."""
    ident = _identifier(identifier)
    if isinstance(ident, HfIdentifier):
        raise AdapterConfigError(f"{identifier} is an HF Hub repo; pull it with resolve(), it has no hub entry")
    hub_list = configured_hubs(hubs)
    if not hub_list:
        raise AdapterConfigError(
            f"cannot resolve {identifier}: no hub configured; set ADAPTERCTL_HUB to hub folders or URLs "
            "(comma-separated) or pass hubs=..."
        )
    up = reachable(hub_list)
    owners = {id(e): h for h in up for e in h.entries}
    try:
        entry = idx.select([e for h in up for e in h.entries], ident, **want)
    except UnknownAdapterError as e:
        down = [h.location for h in hub_list if h not in up]
        if down:
            raise UnknownAdapterError(f"{e}; not searched, as unreachable: {', '.join(down)}") from None
        raise
    return Found(owners[id(entry)], entry, ident.version or entry.default_version)


def reachable(hubs: list[Hub]) -> list[Hub]:
    """The hubs whose index could be read, each one that is down a warning; if none answers,
    the first one's error."""
    up, down = [], []
    for hub in hubs:
        try:
            hub.entries
        except DownloadError as e:
            down.append((hub, e))
        else:
            up.append(hub)
    if down and not up:
        raise down[0][1]
    for hub, error in down:
        log.warning("adapterctl: skipping hub %s: %s", hub.location, error)
    return up


def pull(found: Found, cache=None, progress: bool | None = None) -> Path:
    """Download ``found``'s file into the cache (verified, atomic) and return the adapter folder."""
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    card = found.hub.card(found.entry)
    e = idx.Entry.from_card(card, found.entry.card)  # from here on, only what the validated card says
    file = next((f for f in card["files"] if f["version"] == found.version), None)
    if idx.key(e) != idx.key(found.entry) or file is None:
        raise CardError(f"{found.hub.location}/{e.card} no longer matches the hub's index entry for "
                        f"{found.entry.id}:{found.version}; run 'adapterctl hub index' on the hub")
    target = (cache.root / "adapters" / e.org / e.task / e.subtask / f"{e.model_type}{e.hidden_size}-{e.config_hash}"
              / f"{found.version}-{file['sha256'][:16]}")
    source = f"{found.hub.location}: {e.id}:{found.version} ({file['url']})"
    return cache.install_archive(target, lambda dest: found.hub.download(e.card, file, dest, progress),
                                 file["sha256"], file["size"], source)


def pull_hf(ident: HfIdentifier, cache=None, api=None) -> Path:
    """An adapter repo from the HF Hub, each file verified, installed atomically in the cache."""
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    backend = HfHubBackend(api)
    base = cache.root / "hf" / ident.repo
    if ident.revision and COMMIT.fullmatch(ident.revision) and (base / ident.revision).is_dir():
        return base / ident.revision  # a commit never changes: no need to ask the Hub
    with cache.scratch() as tmp:
        commit = backend.pull_into(ident.repo, ident.revision, tmp)

        def move(out: Path) -> None:
            for path in tmp.iterdir():
                path.rename(out / path.name)

        return cache.install(base / commit, move)


def resolve(identifier: str, hubs=None, cache=None, progress: bool | None = None, model=None, api=None,
            **want) -> Path:
    """A Hub identifier -> the local folder of its adapter, downloaded and verified if needed.

    ``model`` (an ``AdapterModel``) narrows the choice to adapters that fit its backbone, as
    ``model.load_adapter("sentiment/rotten_tomatoes@ukp")`` does; ``want`` narrows further
    (``architecture="pfeiffer"``, ``config="pfeiffer[reduction_factor=8]"``, ``model_type=...``).
    """
    ident = _identifier(identifier)
    if isinstance(ident, HfIdentifier):
        return pull_hf(ident, cache, api)
    if model is not None:
        want = {"model_type": model.config.model_type, "hidden_size": model.hidden_size,
                "model_name": model.model_name or None, **want}
    return pull(find(identifier, hubs, **want), cache, progress)
