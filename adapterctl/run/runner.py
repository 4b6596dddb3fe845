"""A training run from start to finish: the skeleton ``train`` and ``fuse`` share.

A command says only what differs: a ``build`` function that returns what trains, what
``run.json`` records and how the finished run is saved (a ``Built``). The runner does the rest, in an order that keeps
failures cheap: the data are read and checked before the run folder exists (a bad start
leaves nothing behind); ``metrics.json`` is written last, so a run without it is unfinished
and ``resume=true`` continues it; the checkpoints go once the result is saved.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from accelerate.utils import broadcast_object_list, set_seed
from omegaconf import OmegaConf

from ..data import Task, data_root, load_rows
from ..errors import AdapterConfigError
from . import checkpoint, folders, loop
from .loggers import LOG, Trackers, log_to
from .schema import TrainerSettings


@dataclass
class Built:
    """What a training command adds to the skeleton."""

    model: object
    tokenizer: object
    about: str  # one line for the log: what trains
    record: dict  # run.json
    save: Callable[[Path, bool], dict]  # (run folder, overwrite) -> extra metrics.json fields


def sample(rows: list, limit: int | None, split_seed: int = 0) -> list:
    """A fixed random slice (the data may be sorted by label); the same slice in every run."""
    if not limit or limit >= len(rows):
        return rows
    return random.Random(split_seed).sample(rows, limit)


def trainer_settings(cfg) -> TrainerSettings:
    """The ``trainer`` node as the loop's settings; ``lr: null`` takes the adapter's own rate."""
    values = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:
        values["adapter_drop"] = loop.AdapterDropSettings(**values.get("adapter_drop", {}))
        settings = TrainerSettings(**values)
    except TypeError as e:  # a config.yaml from another version of adapterctl
        raise AdapterConfigError(f"the trainer settings do not fit this adapterctl ({e}); start a new run") from None
    if settings.lr is None:  # the adapter's (or the fusion's) own rate
        lr = OmegaConf.select(cfg, "adapter.lr") or OmegaConf.select(cfg, "fusion.lr")
        settings = dataclasses.replace(settings, lr=lr)
    return settings


def run_folder(cfg, accelerator, command: str) -> Path:
    """The run folder, chosen on the main process and shared with the others."""
    choice = [None, None]
    if accelerator.is_main_process:
        try:
            folder = Path(cfg.output_dir) if cfg.resume else folders.new_folder(command, cfg.output_dir)
            choice = [str(folder), None]
        except AdapterConfigError as e:
            choice = [None, str(e)]
    broadcast_object_list(choice)
    if choice[1]:
        raise AdapterConfigError(choice[1])
    return Path(choice[0])


def run(cfg, overrides: list[str], command: str, build: Callable[[object], Built]) -> Path:
    """One training run of ``command`` with the composed ``cfg``; returns its folder."""
    settings = trainer_settings(cfg)
    accelerator = loop.accelerator_for(settings)
    main = accelerator.is_main_process
    log_to(None, main)
    if settings.batch_size % accelerator.num_processes:
        raise AdapterConfigError(
            f"trainer.batch_size={settings.batch_size} is the global batch and must divide evenly over "
            f"{accelerator.num_processes} processes; pick a multiple of {accelerator.num_processes}"
        )
    started = time.time()
    set_seed(cfg.seed)
    built = build(cfg)
    model = built.model
    task = Task(cfg.task, built.tokenizer, settings.max_length)
    root = data_root(cfg.data_root)
    train_set = task.encode(sample(load_rows(cfg.task, root, "train"), settings.max_train_samples), "train")
    eval_set = task.encode(sample(load_rows(cfg.task, root, "validation"), settings.max_eval_samples), "validation")
    folder = run_folder(cfg, accelerator, command)  # only now: a run with bad inputs leaves no folder behind
    log_to(folder / f"{command}.log" if main else None, main)
    LOG.info("run folder: %s (%d process(es), %s)", folder, accelerator.num_processes, accelerator.distributed_type)
    LOG.info("%s: %d train / %d validation rows; %s\n%s", task.name, len(train_set), len(eval_set), built.about,
             model.adapter_summary())
    if main and not cfg.resume:
        folders.write_config(folder, cfg, overrides)
        folders.write_json(folder / folders.RUN_JSON, built.record)
    ckpt = folder / folders.CHECKPOINTS
    resumed_at = checkpoint.saved_step(ckpt / loop.LAST) if cfg.resume else None
    trackers = Trackers(folder, cfg.logger.backends, enabled=main, resume_step=resumed_at)

    def evaluate(m):
        return loop.evaluate(accelerator, m, task, eval_set, settings.eval_batch_size, cfg.task.metrics)

    state = loop.train(model, train_set.features, collate=task.collator(), settings=settings, seed=cfg.seed,
                       evaluate=evaluate, main_metric=cfg.task.main_metric, checkpoints=ckpt, resume=cfg.resume,
                       accelerator=accelerator, log=trackers.log, log_every=cfg.logger.every)
    trackers.close()
    if main:
        extra = built.save(folder, bool(cfg.resume))
        result = {**state.best_metrics, "best_step": state.best_step, "steps": state.step,
                  "train_loss": state.train_loss, "main_metric": cfg.task.main_metric, **extra,
                  "train_rows": len(train_set), "validation_rows": len(eval_set),
                  "processes": accelerator.num_processes, "wall_time_s": round(time.time() - started, 1)}
        folders.write_json(folder / folders.METRICS_JSON, result)
        folders.drop_checkpoints(folder)
        LOG.info("done: %s=%.4f, best at step %s of %d -> %s", cfg.task.main_metric, state.best_score or 0.0,
                 state.best_step, state.step, folder)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return folder
