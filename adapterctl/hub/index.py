"""A hub's index: one entry per card, for search and identifier resolution without reading
every card. ``index.json`` sits at the hub's root; cards live under ``adapters/<org>/``.
Whoever changes a hub folder (a push, ``hub index``) holds its lock (``.adapterctl.lock``) and
rebuilds the index from the cards, so concurrent pushes never leave an index that misses one.

Entries are keyed as AdapterHub keys its own index: identifier, backbone, then the config
hash, so one identifier can name the same task's adapters for several backbones and
architectures, and a look-up narrows by the model it will be loaded into.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import posixpath
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..core.config import config_hash, load_config
from ..io import atomic_write_text, locked
from .cache import file_digest
from .card import card_id, read_card
from .errors import AmbiguousAdapterError, CardError, UnknownAdapterError, WrongBackboneError
from .explore import PAGE, render
from .identifiers import Identifier

INDEX = "index.json"
CARDS = "adapters"
LOCK = ".adapterctl.lock"
FORMAT = "adapterctl-hub-index/1"


@dataclass(frozen=True)
class Entry:
    id: str
    type: str
    task: str
    subtask: str
    org: str
    dataset: str
    model_type: str
    model_name: str
    hidden_size: int
    architecture: str
    config_hash: str
    default_version: str
    versions: tuple
    card: str  # path of the card inside the hub, '/'-separated
    description: str = ""
    license: str = ""
    metrics: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_card(cls, card: dict, path: str) -> "Entry":
        b, a = card["backbone"], card["architecture"]
        return cls(
            id=card_id(card), type=card["type"], task=card["task"], subtask=card["subtask"], org=card["org"],
            dataset=card.get("dataset", ""), model_type=b["model_type"], model_name=b["model_name"],
            hidden_size=b["hidden_size"], architecture=a["name"], config_hash=a["config_hash"],
            default_version=card["default_version"], versions=tuple(f["version"] for f in card["files"]),
            card=path, description=card["description"], license=card["license"], metrics=card.get("metrics", {}),
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["versions"] = list(self.versions)
        return d

    @property
    def backbone(self) -> str:
        return f"{self.model_name or self.model_type} ({self.model_type}, hidden {self.hidden_size})"

    def describe(self) -> str:
        return (f"{self.id}  backbone={self.backbone}  arch={self.architecture} [{self.config_hash}]  "
                f"versions={','.join(self.versions)}")


def key(entry: Entry) -> tuple:
    """What makes two cards the same adapter: identifier, backbone and config."""
    return entry.id, entry.model_type, entry.hidden_size, entry.model_name, entry.config_hash


def _card_path_ok(path: str) -> bool:
    """An index (maybe served by a stranger) may only point at cards inside the hub's ``adapters/``."""
    return posixpath.normpath(path) == path and path.startswith(CARDS + "/") and path.endswith(".yaml")


def scan(root: Path) -> list[Entry]:
    """Read and validate every card under ``root/adapters``; refuse the lot if any is invalid."""
    root = Path(root)
    entries, problems, seen = [], [], {}
    for path in sorted((root / CARDS).rglob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        try:
            entry = Entry.from_card(read_card(path), rel)
        except CardError as e:
            problems.append(str(e))
            continue
        if key(entry) in seen:
            problems.append(f"{rel} describes the same adapter as {seen[key(entry)]}; merge their versions into one card")
        seen[key(entry)] = rel
        entries.append(entry)
    if problems:
        raise CardError(f"hub {root} has {len(problems)} invalid card(s):\n  " + "\n  ".join(problems))
    return entries


def lock(root: Path, timeout: float = 120.0):
    """The hub folder's lock: hold it to change cards, zips or the index (see ``io.locked``)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return locked(Path(root) / LOCK, timeout)


def build(root: Path) -> list[Entry]:
    """Rebuild ``index.json`` and the Explore page from the cards under ``root`` (hold ``lock``)."""
    root = Path(root)
    entries = scan(root)
    atomic_write_text(root / INDEX, dumps(entries))
    atomic_write_text(root / PAGE, render(entries))
    return entries


def check(root: Path) -> list[str]:
    """Everything wrong with the hub folder ``root``: invalid cards, a listed zip that is missing
    or does not match its card's size and sha256, an index that differs from the cards."""
    root = Path(root)
    try:
        entries = scan(root)
    except CardError as e:
        return [str(e)]
    problems = []
    for entry in entries:
        for file in read_card(root / entry.card)["files"]:
            if urllib.parse.urlsplit(file["url"]).scheme:
                continue  # hosted elsewhere
            path = (root / entry.card).parent / file["url"]
            if not path.is_file():
                problems.append(f"{entry.card}: version {file['version']}'s {file['url']} is missing")
            elif path.stat().st_size != file["size"] or file_digest(path) != file["sha256"]:
                problems.append(f"{entry.card}: version {file['version']}'s {file['url']} does not match its size or sha256")
    index = root / INDEX
    if not index.is_file() or index.read_text(encoding="utf-8") != dumps(entries):
        problems.append(f"{index} does not list exactly the cards; run 'adapterctl hub index --hub {root}'")
    return problems


def dumps(entries: list[Entry]) -> str:
    return json.dumps({"format": FORMAT, "adapters": [e.to_dict() for e in entries]}, indent=1) + "\n"


def loads(text: str, source: str) -> list[Entry]:
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        entries = [Entry(**{**e, "versions": tuple(e["versions"])}) for e in data["adapters"]]
        bad = [e.card for e in entries if not _card_path_ok(e.card)]
        if bad:
            raise ValueError(f"card paths outside {CARDS}/: {bad[:3]}")
        return entries
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CardError(f"{source} is not a valid hub index ({e}); run 'adapterctl hub index' on the hub") from None


# -- search and resolution ---------------------------------------------------------------

FILTERS = ("task", "subtask", "org", "dataset", "type", "backbone", "architecture", "id")


def _matches(entry: Entry, key: str, value: str) -> bool:
    value = value.lower()
    if key == "backbone":
        return value in (entry.model_type.lower(), entry.model_name.lower(), entry.model_name.lower().rsplit("/", 1)[-1])
    if key == "architecture":
        return value in (entry.architecture.lower(), entry.config_hash)
    return getattr(entry, key).lower() == value


def search(entries: list[Entry], **filters: str) -> list[Entry]:
    """Entries matching every filter (case-insensitive); ``backbone`` matches the model type or
    name, ``architecture`` the family name or the config hash."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise CardError(f"unknown search filter(s) {', '.join(unknown)}; use {', '.join(FILTERS)}")
    return [e for e in entries if all(_matches(e, k, v) for k, v in filters.items() if v is not None)]


def _listing(entries: list[Entry]) -> str:
    return "".join(f"\n  {e.describe()}" for e in entries)


def select(entries: list[Entry], ident: Identifier, model_type: str | None = None, hidden_size: int | None = None,
           model_name: str | None = None, backbone: str | None = None, architecture: str | None = None,
           config=None) -> Entry:
    """The one entry ``ident`` names for this backbone and architecture, else an error that
    lists the candidates and what to add to choose between them."""
    named = [e for e in entries if e.subtask == ident.subtask and ident.task in (None, e.task)
             and ident.org in (None, e.org)]
    if not named:
        close = difflib.get_close_matches(str(Identifier(ident.subtask, ident.task, ident.org)),
                                          sorted({e.id for e in entries}), n=8, cutoff=0.4)
        hint = f"; did you mean: {', '.join(close)}" if close else (
            f"; the configured hubs hold: {', '.join(sorted({e.id for e in entries})[:20]) or 'nothing'}")
        raise UnknownAdapterError(f"no adapter {ident} in the configured hubs{hint}")
    fitting = [e for e in named if model_type in (None, e.model_type) and hidden_size in (None, e.hidden_size)]
    if not fitting:
        raise WrongBackboneError(f"{ident} exists, but not for model_type={model_type}, hidden_size={hidden_size}; "
                                 f"its candidates:{_listing(named)}")
    fitting = search(fitting, backbone=backbone, architecture=architecture)
    if config is not None:
        digest = config_hash(load_config(config))
        fitting = [e for e in fitting if e.config_hash == digest]
    if ident.version:
        fitting = [e for e in fitting if ident.version in e.versions]
    if len(fitting) > 1 and model_name:
        fitting = [e for e in fitting if e.model_name == model_name] or fitting
    if len(fitting) == 1:
        return fitting[0]
    wanted = ", ".join(f"{k}={v}" for k, v in [("model_type", model_type), ("hidden_size", hidden_size),
                                                ("backbone", backbone), ("architecture", architecture),
                                                ("config", config),
                                                ("version", ident.version)] if v is not None)
    if not fitting:
        raise UnknownAdapterError(f"{ident} exists, but not for {wanted}; its candidates:{_listing(named)}")
    raise AmbiguousAdapterError(
        f"{ident} matches {len(fitting)} adapters; choose one with backbone=... or arch=... (name or config "
        f"hash):{_listing(fitting)}"
    )
