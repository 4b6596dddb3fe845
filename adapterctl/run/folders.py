"""Run folders: ``outputs/<command>/<YYYY-MM-DD>_<HH-MM-SS>/`` and the records in them.

A run folder holds ``config.yaml`` (resolved), ``overrides.yaml``, ``<command>.log``,
``run.json`` (what the run is: task, dataset, backbone, adapter, head, labels, metrics, so
that ``export`` needs no Hydra), ``metrics.json`` (written last: a run without it is
unfinished), ``adapters/<name>/`` (or ``model/``), and while it trains ``checkpoints/``.
An existing folder is never reused silently.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from ..errors import AdapterConfigError
from ..io import atomic_write_text, recover

RUN_JSON = "run.json"
METRICS_JSON = "metrics.json"


CHECKPOINTS = "checkpoints"


def new_folder(command: str, output_dir: str | None, base: Path = Path("outputs")) -> Path:
    """A fresh run folder; refuses one that exists and holds anything, or a path that is a file.

    Without ``output_dir`` the folder is named after the time; two runs started in the same second
    (or concurrently) each claim their own, the later one with a ``_1``, ``_2`` ... suffix."""
    if not output_dir:
        return _claim_timestamped(base / command)
    folder = Path(output_dir)
    taken = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if taken is not None:
        raise AdapterConfigError(f"output_dir={output_dir}: {taken} is a file, not a folder; "
                                 "choose another output_dir=...")
    if folder.exists() and any(folder.iterdir()):
        raise AdapterConfigError(
            f"output folder {folder} already exists; choose another output_dir=..., or continue it with resume=true"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _claim_timestamped(parent: Path) -> Path:
    """``parent/<YYYY-MM-DD>_<HH-MM-SS>[_<n>]``, created with ``mkdir`` so that no two runs share one."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if parent.exists() and not parent.is_dir():
        raise AdapterConfigError(f"{parent} is a file, not a folder; move it or choose output_dir=...")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        folder = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AdapterConfigError(f"could not claim a fresh run folder under {parent}; give output_dir=...")


def is_finished(folder: Path) -> bool:
    """A run that wrote its metrics: nothing left to resume."""
    return (folder / METRICS_JSON).is_file()


def last_checkpoint(folder: Path) -> Path:
    return folder / CHECKPOINTS / "last"


def latest_unfinished(command: str, base: Path = Path("outputs")) -> Path:
    """The unfinished run of ``command`` (a checkpoint, no metrics) whose checkpoint is newest,
    multirun jobs included: what ``resume=true`` continues."""
    runs = [p.parent for pattern in ("*/checkpoints", "*/*/checkpoints") for p in (base / command).glob(pattern)]
    runs = [run for run in runs if not is_finished(run) and recover(last_checkpoint(run)).is_dir()]
    if not runs:
        raise AdapterConfigError(
            f"nothing to resume: no unfinished run under {base / command} (one with checkpoints/last and no "
            f"{METRICS_JSON}); drop resume=true to start a new run, or give output_dir=<run folder>"
        )
    return max(runs, key=lambda run: last_checkpoint(run).stat().st_mtime)


def resumable(command: str, output_dir: str | None) -> Path:
    """The run ``resume=true`` continues: ``output_dir``, else the newest unfinished one; refuses a
    finished run and a folder that has no checkpoint."""
    if not output_dir:
        return latest_unfinished(command)
    folder = Path(output_dir)
    if not (folder / "config.yaml").is_file():
        raise AdapterConfigError(f"{folder} is not a run folder (no config.yaml); give output_dir=<run folder> "
                                 "to resume, or drop resume=true")
    if is_finished(folder):
        raise AdapterConfigError(f"{folder} is a finished run (it has {METRICS_JSON}): nothing to resume; "
                                 "drop resume=true to start a new run in another output_dir=...")
    if not recover(last_checkpoint(folder)).is_dir():
        raise AdapterConfigError(f"{folder} has no checkpoint yet (it stopped before its first): start it again "
                                 "in another output_dir=..., without resume=true")
    return folder


def drop_checkpoints(folder: Path) -> None:
    """A finished run keeps its result (``adapters/`` or ``model/``), not the checkpoints that
    only resuming needed (for full fine-tuning, three copies of the model)."""
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)


def write_config(folder: Path, cfg, overrides: list[str]) -> None:
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(folder / "overrides.yaml", yaml.safe_dump(list(overrides), default_flow_style=False))


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise AdapterConfigError(f"{path} is missing: {path.parent} is not a finished adapterctl run folder")
    return json.loads(path.read_text())


def run_record(cfg, command: str) -> dict:
    """``run.json``: the facts ``export`` and ``evaluate`` need, without re-reading Hydra configs;
    ``fuse`` adds its adapters and fusion."""
    record = {
        "command": command,
        "task": cfg.task.name,
        "dataset": cfg.task.dataset,
        "dataset_subset": cfg.task.subset,
        "backbone": backbone_record(cfg.backbone),
        "head": {"type": cfg.head.type},
        "label_names": list(cfg.task.label_names),
        "metrics": list(cfg.task.metrics),
        "main_metric": cfg.task.main_metric,
        "seed": cfg.seed,
    }
    if "adapter" in cfg:
        adapter = cfg.adapter
        full = adapter.preset == "none"
        record["adapter"] = {
            "name": adapter.name,
            "preset": adapter.preset,
            "config": None if full else {k: v for k, v in OmegaConf.to_container(adapter).items()
                                         if k not in ("name", "lr")},
            "dir": None if full else f"adapters/{adapter.name}",
        }
        record["full_model_dir"] = "model" if full else None
    return record


def backbone_record(backbone) -> dict:
    """``run.json``'s backbone: name, path, and the HF Hub model id (``hf_id``) that a Hub card
    names, unless ``backbone.path`` points elsewhere than the group's file says (another model)."""
    from .paths import conf_dir

    source = conf_dir() / "backbone" / f"{backbone.name}.yaml"
    default = OmegaConf.load(source) if source.is_file() else None
    same = default is not None and default.get("path") == backbone.path
    return {"name": backbone.name, "path": backbone.path, "hf_id": backbone.get("hf_id") if same else None}


def load_run(folder: Path) -> tuple[dict, object]:
    """A finished run's ``run.json`` and resolved config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterConfigError(f"run folder {folder} does not exist; give run=outputs/train/<date>_<time>")
    record = read_json(folder / RUN_JSON)
    return record, OmegaConf.load(folder / "config.yaml")
