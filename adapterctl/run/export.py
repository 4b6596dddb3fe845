"""``adapterctl export run=<run folder> [out=<dir>] [org=... license=... backbone=... ...]``.

The command only: ``adapterctl.hub.export`` turns the run into an adapter folder, its zip and
its Hub card (``card.yaml``), which ``adapterctl hub push`` publishes.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AdapterConfigError
from ..hub.card import read_card
from ..hub.cli import parse_options
from ..hub.export import CARD, OPTIONS, export_run
from . import folders


def main(argv: list[str]) -> int:
    """Entry point the top-level CLI dispatches ``adapterctl export ...`` to; user errors raise
    ``AdapterError`` (or ``FileExistsError``), which it prints as one line."""
    options = parse_options(argv, OPTIONS)
    if "run" not in options:
        raise AdapterConfigError("give the run to export: run=<run folder>, e.g. run=outputs/train/<date>_<time>")
    run = options.pop("run")
    out = Path(options.pop("out")) if "out" in options else folders.new_folder("export", None)
    try:
        export_run(Path(run), out, **options)
    except BaseException:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    hint = "" if read_card(out / CARD)["backbone"]["model_name"] else (
        "note: the card names no HF Hub model id for the backbone, only where it was loaded from; "
        "re-export with backbone=<model id> so that others can tell which backbone it fits\n")
    print(f"exported {run} -> {out}\n\n{(out / CARD).read_text()}\n{hint}"
          f"publish it: adapterctl hub push {out} --hub <hub folder>")
    return 0
