"""Turn a training run into what the Hub publishes: the adapter folder (AdapterHub's layout, as
saved), a deterministic zip of it, and its card (``card.yaml``) with the zip's sha256 and size.

Everything the card says comes from the run's ``run.json`` and ``metrics.json`` and the
adapter's own ``adapter_config.json``; its free-text fields from the caller (``adapterctl
export ... org=... license=...``, see ``adapterctl.run.export``). Run folders are read as the
JSON they are, so the Hub depends on no part of the training code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import AdapterConfigError, CorruptFileError
from ..io import atomic_dir
from .cache import file_digest
from .card import architecture, dump_card, is_model_id, validate_card
from .pack import pack

CARD = "card.yaml"
ADAPTER_CONFIG = "adapter_config.json"
RUN_JSON, METRICS_JSON = "run.json", "metrics.json"  # as adapterctl.run.folders writes them
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
    "backbone": "the backbone's HF Hub model id, e.g. sentence-transformers/all-MiniLM-L6-v2 (default: the run's)",
}


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise AdapterConfigError(f"{path} is missing: {path.parent} is not a finished adapterctl run folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); re-run or repair the run folder") from None


def backbone_names(run: dict, envelope: dict, given: str | None = None) -> dict:
    """The card's names for the backbone: ``model_name``, an HF Hub model id anyone can load
    (``given``, else the run's ``backbone.hf_id``, else what it loaded if that is an id), and
    ``loaded_from``, where the training run loaded it (a ``pkg://`` or local path), as a hint."""
    if given and not is_model_id(given):
        raise AdapterConfigError(f"backbone={given!r} is not an HF Hub model id; give one like "
                                 "sentence-transformers/all-MiniLM-L6-v2, which the card records for other machines")
    recorded = run.get("backbone") or {}
    loaded = str(recorded.get("path") or envelope.get("model_name") or "")
    candidates = (given, recorded.get("hf_id"), loaded, envelope.get("model_name"))
    name = next((str(n) for n in candidates if n and is_model_id(str(n))), "")
    return {"model_name": name, **({"loaded_from": loaded} if loaded and loaded != name else {})}


def make_card(run: dict, metrics: dict, envelope: dict, archive: Path, **fields) -> dict:
    """The Hub card for one exported version; ``fields`` are the command line's card fields."""
    subtask = fields.get("subtask") or run["task"]
    names = run.get("metrics") or list(metrics)
    version = str(fields.get("version") or "1")
    backbone = backbone_names(run, envelope, fields.get("backbone"))
    card = {
        "type": fields.get("type") or "text_task",
        "task": fields.get("task") or TASK_FAMILY.get(run["task"], run["task"]),
        "subtask": subtask,
        "org": fields.get("org") or "local",
        "dataset": run.get("dataset") or subtask,
        "backbone": {"model_type": envelope["model_type"], "model_name": backbone.pop("model_name"),
                     "hidden_size": envelope["hidden_size"], **backbone},
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


def export_run(run_folder: Path, out: Path, **fields) -> Path:
    """Write ``out/<adapter>/``, ``out/<adapter>.zip`` and ``out/card.yaml``; return ``out``."""
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        raise AdapterConfigError(f"run folder {run_folder} does not exist; give run=outputs/train/<date>_<time>")
    run, metrics = read_json(run_folder / RUN_JSON), read_json(run_folder / METRICS_JSON)
    source = adapter_dir(run_folder, run)
    envelope = read_json(source / ADAPTER_CONFIG)
    out = Path(out)
    with atomic_dir(out) as tmp:
        shutil.copytree(source, tmp / source.name, symlinks=True)
        archive = pack(tmp / source.name, tmp / f"{source.name}.zip")
        card = make_card(run, metrics, envelope, archive, **fields)
        (tmp / CARD).write_text(dump_card(card), encoding="utf-8")
    return out
