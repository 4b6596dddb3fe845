"""Run folders: ``outputs/<command>/<YYYY-MM-DD>_<HH-MM-SS>/`` and the records in them.

A run folder holds ``config.yaml`` (resolved), ``overrides.yaml``, ``<command>.log``,
``run.json`` (what the run is: task, dataset, backbone, adapter, head, labels, metrics, so
that ``export`` needs no Hydra), ``metrics.json``, ``checkpoints/`` and ``adapters/<name>/``.
An existing folder is never reused silently.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from ..errors import AdapterConfigError
from ..io import atomic_write_text

RUN_JSON = "run.json"
METRICS_JSON = "metrics.json"


def new_folder(command: str, output_dir: str | None, base: Path = Path("outputs")) -> Path:
    """A fresh run folder; refuses one that exists and holds anything."""
    if output_dir:
        folder = Path(output_dir)
    else:
        folder = base / command / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if folder.exists() and any(folder.iterdir()):
        raise AdapterConfigError(
            f"output folder {folder} already exists; choose another output_dir=..., or continue it with resume=true"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def latest_run(command: str, base: Path = Path("outputs")) -> Path:
    """The newest run folder of ``command`` that has a checkpoint (what ``resume=true`` continues)."""
    runs = sorted(p.parent.parent for p in (base / command).glob("*/checkpoints/last"))
    if not runs:
        raise AdapterConfigError(
            f"nothing to resume: no run under {base / command} has a checkpoint; drop resume=true or give output_dir=<run>"
        )
    return runs[-1]


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
    """``run.json``: the facts ``export`` and ``evaluate`` need, without re-reading Hydra configs."""
    adapter = cfg.adapter
    full = adapter.preset == "none"
    return {
        "command": command,
        "task": cfg.task.name,
        "dataset": cfg.task.dataset,
        "dataset_subset": cfg.task.subset,
        "backbone": {"name": cfg.backbone.name, "path": cfg.backbone.path},
        "adapter": {
            "name": adapter.name,
            "preset": adapter.preset,
            "config": None if full else {k: v for k, v in OmegaConf.to_container(adapter).items() if k not in ("name", "lr")},
            "dir": None if full else f"adapters/{adapter.name}",
        },
        "full_model_dir": "model" if full else None,
        "head": {"type": cfg.head.type},
        "label_names": list(cfg.task.label_names),
        "metrics": list(cfg.task.metrics),
        "main_metric": cfg.task.main_metric,
        "seed": cfg.seed,
    }


def load_run(folder: Path) -> tuple[dict, object]:
    """A finished run's ``run.json`` and resolved config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterConfigError(f"run folder {folder} does not exist; give run=outputs/train/<date>_<time>")
    record = read_json(folder / RUN_JSON)
    return record, OmegaConf.load(folder / "config.yaml")
