"""``adapterctl hub index|search|pull|push``: the Hub from the command line.

Flags say where (``--hub``, ``--cache``, ``--hf``); ``key=value`` words say what, as in the rest
of adapterctl (``adapterctl hub search task=sentiment backbone=bert``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import AdapterConfigError
from . import index
from .backends import HfHubBackend, is_url
from .card import read_card
from .export import ADAPTER_CONFIG, CARD, OPTIONS as EXPORT_OPTIONS, export_run
from .hubs import configured_hubs, find, pull, pull_hf, reachable
from .identifiers import FORMS, HfIdentifier, parse
from .publish import publish

PULL_OPTIONS = {"backbone": "model type or name, e.g. bert", "arch": "architecture name or config hash",
                "config": "exact config, e.g. pfeiffer[reduction_factor=8]"}
PUSH_OPTIONS = {k: v for k, v in EXPORT_OPTIONS.items() if k not in ("run", "out")}


def parse_options(argv: list[str], allowed: dict[str, str]) -> dict[str, str]:
    """``key=value`` words -> a dict; an unknown key is an error that lists the valid ones."""
    options = {}
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep or key not in allowed:
            valid = "\n".join(f"  {k}=...  {v}" for k, v in allowed.items())
            raise AdapterConfigError(f"unexpected {word!r}; the options are:\n{valid}")
        options[key] = value
    return options


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adapterctl hub", description="Find, pull and publish adapters.")
    sub = p.add_subparsers(dest="command", required=True)
    hub_help = "hub folder or URL (repeatable; default: $ADAPTERCTL_HUB, comma-separated)"
    s = sub.add_parser("index", help="rebuild a hub folder's index.json and explore.html from its cards")
    s.add_argument("--hub", help="the hub folder (default: the first of $ADAPTERCTL_HUB)")
    s.add_argument("--check", action="store_true",
                   help="change nothing; check every card, every zip's size and sha256, and the index (exit 1 if any is off)")
    s = sub.add_parser("search", help="list adapters: adapterctl hub search task=sentiment backbone=bert")
    s.add_argument("options", nargs="*", metavar="key=value", help=f"filters: {', '.join(index.FILTERS)}")
    s.add_argument("--hub", action="append", help=hub_help)
    s = sub.add_parser("pull", help="download and verify an adapter into the cache; prints its folder")
    s.add_argument("identifier", help=FORMS)
    s.add_argument("options", nargs="*", metavar="key=value", help=", ".join(PULL_OPTIONS))
    s.add_argument("--hub", action="append", help=hub_help)
    s.add_argument("--cache", help="cache folder (default: $ADAPTERCTL_CACHE or ~/.cache/adapterctl)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("push", help="publish a run or export folder into a hub folder (or an HF Hub repo)")
    s.add_argument("folder", help="a training run (outputs/train/...) or an export (outputs/export/...)")
    s.add_argument("options", nargs="*", metavar="key=value", help="card fields for a run: " + ", ".join(PUSH_OPTIONS))
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--hub", help="the hub folder to publish into")
    target.add_argument("--hf", metavar="OWNER/REPO", help="an HF Hub model repo to upload to (needs a login)")
    s.add_argument("--private", action="store_true", help="with --hf: create the repo private")
    return p


def _hubs(args) -> list:
    hubs = configured_hubs(",".join(args.hub) if args.hub else None)
    if not hubs:
        raise AdapterConfigError("no hub given: pass --hub <folder or URL> or set ADAPTERCTL_HUB")
    return hubs


def _index(args) -> int:
    hub = args.hub or _hubs(args)[0].location
    if is_url(hub):
        raise AdapterConfigError(f"{hub} is a URL; index the hub's folder, then serve it")
    if not Path(hub).is_dir():
        raise AdapterConfigError(f"hub folder {hub} does not exist; give the folder you push into with --hub")
    if args.check:
        problems = index.check(Path(hub))
        print("\n".join(problems) if problems else f"{hub}: every card, zip and the index are consistent")
        return 1 if problems else 0
    with index.lock(Path(hub)):
        entries = index.build(Path(hub))
    print(f"indexed {len(entries)} adapter(s): {Path(hub) / index.INDEX}, {Path(hub) / 'explore.html'}")
    return 0


def _search(args) -> int:
    filters = parse_options(args.options, dict.fromkeys(index.FILTERS, ""))
    hubs = _hubs(args)
    found = [(h, e) for h in reachable(hubs) for e in index.search(h.entries, **filters)]
    for hub, entry in found:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in entry.metrics.items())
        print(f"{entry.describe()}  {metrics}  [{hub.location}]")
    if not found:
        print(f"no adapter matches {' '.join(args.options) or '(no filter)'} in {', '.join(h.location for h in hubs)}")
    return 0


def _pull(args) -> int:
    options = parse_options(args.options, PULL_OPTIONS)
    ident = parse(args.identifier)
    if isinstance(ident, HfIdentifier):
        print(f"{args.identifier} -> {pull_hf(ident, args.cache)}")
        return 0
    found = find(args.identifier, _hubs(args), backbone=options.get("backbone"),
                 architecture=options.get("arch"), config=options.get("config"))
    folder = pull(found, args.cache, progress=not args.quiet)
    print(f"{found.entry.id}:{found.version} ({found.entry.backbone}, {found.entry.architecture}) -> {folder}")
    return 0


def _export_of(folder: Path, options: dict, version: str | None, tmp: str) -> Path:
    """``folder`` if it is an export, else an export of the run in it (written under ``tmp``)."""
    if (folder / CARD).is_file():
        if options:
            raise AdapterConfigError(f"{folder} is already exported; card fields ({', '.join(options)}) apply "
                                     "when pushing a run folder (or re-export it with them)")
        return folder
    return export_run(folder, Path(tmp) / "export", version=version, **options)


def _push(args) -> int:
    options = parse_options(args.options, PUSH_OPTIONS)
    version = options.pop("version", None)
    with tempfile.TemporaryDirectory(prefix="adapterctl-push-") as tmp:
        export = _export_of(Path(args.folder), options, version, tmp)
        if args.hf:
            adapter = next(p for p in sorted(export.iterdir()) if (p / ADAPTER_CONFIG).is_file())
            url = HfHubBackend().push(adapter, read_card(export / CARD), args.hf, private=args.private)
            print(f"pushed to hf:{args.hf}: {url}")
            return 0
        if is_url(args.hub):
            raise AdapterConfigError(f"{args.hub} is a URL; push into the hub's folder, then serve or sync it")
        done = publish(export, Path(args.hub), version=version)
    card = read_card(done.card)
    ident = f"{card['task']}/{card['subtask']}@{card['org']}:{done.version}"
    state = "published" if done.new else "already published, unchanged"
    print(f"{ident} {state}: {done.card}")
    return 0


def main(argv: list[str]) -> int:
    """Entry point the top-level CLI dispatches ``adapterctl hub ...`` to; user errors raise
    ``AdapterError`` (or ``FileExistsError``), which it prints as one line."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # key=value words may follow the flags too
    if any(w.startswith("-") or "=" not in w for w in extra) or (extra and not hasattr(args, "options")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.options += extra
    return {"index": _index, "search": _search, "pull": _pull, "push": _push}[args.command](args)
