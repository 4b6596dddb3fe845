"""``adapterctl fuse adapters=[mnli,qnli,sst2] task=cb``: AdapterFusion over trained adapters.

The named adapters load frozen (without their heads), a fusion layer and a new head for the
task are added, and only those train, with the fusion's value regularization in the loss.
The run folder holds, besides the usual records, ``setup/``: AdapterHub's
``save_adapter_setup`` layout (``adapter_setup.json``, a folder per adapter, and the fusion
folder ``<a,b,c>/`` with the head), which ``AdapterModel.load_adapter_setup`` and
``adapterctl evaluate run=<this run>`` read.
"""

from __future__ import annotations

import time
from pathlib import Path

from accelerate.utils import set_seed
from omegaconf import OmegaConf

from .. import metrics
from ..core.composition import Fuse
from ..data import Task, data_root, load_rows
from ..errors import AdapterConfigError
from . import build, folders, loop, settings
from .loggers import LOG, Trackers, log_to
from .train import run_folder, sample, write_result

SETUP_DIR = "setup"


def run(overrides: list[str]) -> Path:
    """One fusion run; returns its folder."""
    cfg = settings.load("fuse", overrides)
    if len(cfg.adapters) < 2:
        raise AdapterConfigError(f"fuse needs at least two adapters, got {list(cfg.adapters)}: adapters=[a,b,...]")
    metrics.check(cfg.task.metrics)
    accelerator = loop.accelerator_for(cfg.trainer)
    folder = run_folder(cfg, accelerator, "fuse")
    main = accelerator.is_main_process
    log_to(folder / "fuse.log" if main else None)
    started = time.time()
    set_seed(cfg.seed)
    model, tokenizer = build.load_backbone(cfg.backbone.path)
    sources = [build.adapter_source(spec) for spec in cfg.adapters]
    names = [model.load_adapter(source, with_head=False) for source in sources]
    fusion = model.add_fusion(names, {k: v for k, v in OmegaConf.to_container(cfg.fusion).items() if k != "lr"})
    model.add_head(fusion, cfg.head.type, **build.head_options(cfg.head, cfg.task.label_names))
    setup = Fuse(*names)
    model.train_fusion(setup, backbone_dropout=cfg.trainer.backbone_dropout)
    if cfg.trainer.gradient_checkpointing:
        build.checkpoint_activations(model)
    task = Task(cfg.task, tokenizer, cfg.trainer.max_length)
    root = data_root(cfg.data_root)
    train_set = task.encode(sample(load_rows(cfg.task, root, "train"), cfg.trainer.max_train_samples), "train")
    eval_set = task.encode(sample(load_rows(cfg.task, root, "validation"), cfg.trainer.max_eval_samples), "validation")
    LOG.info("%s: %d train / %d validation rows; %s fusion over %s\n%s", task.name, len(train_set), len(eval_set),
             cfg.fusion.preset, ", ".join(names), model.adapter_summary())
    if main and not cfg.resume:
        folders.write_config(folder, cfg, overrides)
        folders.write_json(folder / folders.RUN_JSON, run_record(cfg, sources, fusion))
    trackers = Trackers(folder, cfg.logger.backends, enabled=main)
    state = loop.train(cfg, accelerator, model, task, train_set, eval_set, folder, trackers, resume=cfg.resume)
    trackers.close()
    if main:
        model.save_adapter_setup(folder / SETUP_DIR, setup)
        write_result(cfg, folder, state, accelerator, started, fusion=fusion, train_rows=len(train_set),
                     validation_rows=len(eval_set))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return folder


def run_record(cfg, sources: list, fusion: str) -> dict:
    """``run.json`` of a fusion run: what ``evaluate run=...`` needs to rebuild the model."""
    return {
        "command": "fuse",
        "task": cfg.task.name,
        "dataset": cfg.task.dataset,
        "dataset_subset": cfg.task.subset,
        "backbone": {"name": cfg.backbone.name, "path": cfg.backbone.path},
        "adapters": [str(s) for s in sources],
        "fusion": {"name": fusion, **OmegaConf.to_container(cfg.fusion)},
        "setup_dir": SETUP_DIR,
        "adapter": {"name": fusion, "dir": None},
        "full_model_dir": None,
        "head": {"type": cfg.head.type},
        "label_names": list(cfg.task.label_names),
        "metrics": list(cfg.task.metrics),
        "main_metric": cfg.task.main_metric,
        "seed": cfg.seed,
    }
