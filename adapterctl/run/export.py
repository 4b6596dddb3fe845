"""``adapterctl export run=<run folder> [out=<dir>] [org=... license=... ...]``.

Turns a training run into what the Hub publishes: the adapter folder (AdapterHub's layout, as
saved), a deterministic zip of it, and its card (``card.yaml``) with the zip's sha256 and size.
Everything the card says comes from the run's ``run.json``, ``metrics.json`` and the adapter's
own ``adapter_config.json``; the card's free-text fields come from the command line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import AdapterConfigError
from ..hub.cache import file_digest
from ..hub.card import architecture, dump_card, validate_card
from ..hub.pack import pack
from ..io import atomic_dir
from ..serialization import ADAPTER_CONFIG, read_json
from . import folders

CARD = "card.yaml"
# AdapterHub files a dataset under a task family; unknown tasks are their own family.
TASK_FAMILY = {
    "rotten_tomatoes": "sentiment", "sst2": "sentiment", "mnli": "nli", "qnli": "nli", "rte": "nli", "cb": "nli",
    "mrpc": "sts", "qqp": "sts", "conll2003": "ner", "squad": "qa",
}
OPTIONS = {
    "run": "the run folder (outputs/train/<date>_<time>)",
    "out": "where to write (default outputs/export/<date>_<time>)",
    "org": "the publishing organisation, the @org of the identifier (default: local)",
    "author": "who trained it", "license": "the adapter's license (default: other)",
    "description": "one paragraph for the card", "citation": "BibTeX to cite", "version": "default: 1",
    "task": "the task family (default from the run's task, e.g. sentiment)",
    "subtask": "default: the run's task (e.g. rotten_tomatoes)", "type": "text_task (default) or text_lang",
}


def _portable_name(envelope_name: str, run: dict) -> str:
    """A model name worth publishing: not a path that exists only on the training machine."""
    if envelope_name and not Path(envelope_name).is_absolute():
        return envelope_name
    backbone = run.get("backbone") or {}
    return str(backbone.get("path") or backbone.get("name") or "")


def make_card(run: dict, metrics: dict, envelope: dict, archive: Path, **fields) -> dict:
    """The Hub card for one exported version; ``fields`` are the command line's card fields."""
    subtask = fields.get("subtask") or run["task"]
    names = run.get("metrics") or list(metrics)
    version = str(fields.get("version") or "1")
    card = {
        "type": fields.get("type") or "text_task",
        "task": fields.get("task") or TASK_FAMILY.get(run["task"], run["task"]),
        "subtask": subtask,
        "org": fields.get("org") or "local",
        "dataset": run.get("dataset") or subtask,
        "backbone": {"model_type": envelope["model_type"], "model_name": _portable_name(envelope.get("model_name"), run),
                     "hidden_size": envelope["hidden_size"]},
        "architecture": architecture(envelope["config"]),
        "head": {"type": (run.get("head") or {}).get("type") or "none", "labels": list(run.get("label_names") or [])},
        "author": fields.get("author") or "",
        "description": fields.get("description") or (
            f"A {run.get('adapter', {}).get('preset', 'bottleneck')} adapter for {subtask}, trained with adapterctl."),
        "citation": fields.get("citation") or "",
        "license": fields.get("license") or "other",
        "metrics": {k: metrics[k] for k in names if isinstance(metrics.get(k), (int, float))},
        "default_version": version,
        "files": [{"version": version, "url": archive.name, "sha256": file_digest(archive),
                   "size": archive.stat().st_size}],
    }
    return validate_card(card, "the exported card")


def adapter_dir(run_folder: Path, run: dict) -> Path:
    adapter = run.get("adapter") or {}
    if run.get("full_model_dir") and not adapter.get("dir"):
        raise AdapterConfigError(f"run {run_folder} fine-tuned the whole model (adapter=none): there is no adapter "
                                 "to export; train with adapter=pfeiffer or houlsby")
    folder = run_folder / (adapter.get("dir") or f"adapters/{adapter.get('name')}")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise AdapterConfigError(f"{folder} holds no saved adapter ({ADAPTER_CONFIG}); is {run_folder} a finished run?")
    return folder


def export_run(run_folder: Path, out: Path | None = None, **fields) -> Path:
    """Write ``out/<adapter>/``, ``out/<adapter>.zip`` and ``out/card.yaml``; return ``out``."""
    run_folder = Path(run_folder)
    run, _ = folders.load_run(run_folder)
    metrics = folders.read_json(run_folder / folders.METRICS_JSON)
    source = adapter_dir(run_folder, run)
    envelope = read_json(source / ADAPTER_CONFIG)
    out = Path(out) if out else folders.new_folder("export", None)
    with atomic_dir(out) as tmp:
        shutil.copytree(source, tmp / source.name, symlinks=True)
        archive = pack(tmp / source.name, tmp / f"{source.name}.zip")
        card = make_card(run, metrics, envelope, archive, **fields)
        (tmp / CARD).write_text(dump_card(card), encoding="utf-8")
    return out


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


def main(argv: list[str]) -> int:
    """Entry point the top-level CLI dispatches ``adapterctl export ...`` to; user errors raise
    ``AdapterError`` (or ``FileExistsError``), which it prints as one line."""
    options = parse_options(argv, OPTIONS)
    if "run" not in options:
        raise AdapterConfigError("give the run to export: run=<run folder>, e.g. run=outputs/train/<date>_<time>")
    run = options.pop("run")
    out = export_run(Path(run), Path(options.pop("out")) if "out" in options else None, **options)
    print(f"exported {run} -> {out}\n\n{(out / CARD).read_text()}\npublish it: adapterctl hub push {out} --hub <hub folder>")
    return 0
