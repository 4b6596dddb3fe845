"""``adapterctl train``: compose the config, make the run folder, train, save the adapter.

Everything a later command needs lands in the run folder (see ``folders``): the best
adapter with its head under ``adapters/<name>/`` (full fine-tuning: the whole model under
``model/``), its validation metrics in ``metrics.json``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from accelerate.utils import broadcast_object_list, set_seed
from omegaconf import OmegaConf

from .. import metrics
from ..data import Task, data_root, load_rows
from ..errors import AdapterConfigError
from . import build, folders, loop, settings
from .loggers import LOG, Trackers, log_to


def sample(rows: list, limit: int | None, split_seed: int = 0) -> list:
    """A fixed random slice (the data may be sorted by label); the same slice in every run."""
    if not limit or limit >= len(rows):
        return rows
    return random.Random(split_seed).sample(rows, limit)


def run_folder(cfg, accelerator, command: str = "train") -> Path:
    """The run folder, chosen on the main process and shared with the others."""
    choice = [None, None]
    if accelerator.is_main_process:
        try:
            if cfg.resume:
                folder = Path(cfg.output_dir) if cfg.output_dir else folders.latest_run(command)
                if not (folder / "checkpoints" / "last").is_dir():
                    raise AdapterConfigError(f"{folder} has no checkpoint to resume from; drop resume=true")
            else:
                folder = folders.new_folder(command, cfg.output_dir)
            choice = [str(folder), None]
        except AdapterConfigError as e:
            choice = [None, str(e)]
    broadcast_object_list(choice)
    if choice[1]:
        raise AdapterConfigError(choice[1])
    return Path(choice[0])


def resumed_config(cfg, command: str = "train"):
    """``resume=true`` continues a run with the config it started with (its ``config.yaml``),
    so nothing but ``resume=true`` (and ``output_dir=`` for a run other than the latest) is needed."""
    folder = Path(cfg.output_dir) if cfg.output_dir else folders.latest_run(command)
    if not (folder / "config.yaml").is_file():
        raise AdapterConfigError(f"{folder} is not a run folder (no config.yaml); give output_dir=<run folder> to resume")
    saved = OmegaConf.load(folder / "config.yaml")
    saved.output_dir, saved.resume = str(folder), True
    OmegaConf.set_struct(saved, True)
    return saved


def write_result(cfg, folder: Path, state, accelerator, started: float, **extra) -> None:
    """``metrics.json``: the best evaluation and the run's counters; then the closing log line."""
    result = {**state.best_metrics, "best_step": state.best_step, "steps": state.step, "train_loss": state.train_loss,
              "main_metric": cfg.task.main_metric, **extra, "processes": accelerator.num_processes,
              "wall_time_s": round(time.time() - started, 1)}
    folders.write_json(folder / folders.METRICS_JSON, result)
    LOG.info("done: %s=%.4f at step %s -> %s", cfg.task.main_metric, state.best_score or 0.0, state.best_step, folder)


def run(overrides: list[str]) -> Path:
    """One training run; returns its folder."""
    cfg = settings.load("train", overrides)
    if cfg.resume:
        cfg = resumed_config(cfg)
    metrics.check(cfg.task.metrics)
    accelerator = loop.accelerator_for(cfg.trainer)
    if cfg.trainer.batch_size % accelerator.num_processes:
        raise AdapterConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} is the global batch and must divide evenly over "
            f"{accelerator.num_processes} processes; pick a multiple of {accelerator.num_processes}"
        )
    started = time.time()
    set_seed(cfg.seed)
    model, tokenizer = build.new_model(cfg)
    task = Task(cfg.task, tokenizer, cfg.trainer.max_length)
    root = data_root(cfg.data_root)
    train_set = task.encode(sample(load_rows(cfg.task, root, "train"), cfg.trainer.max_train_samples), "train")
    eval_set = task.encode(sample(load_rows(cfg.task, root, "validation"), cfg.trainer.max_eval_samples), "validation")
    folder = run_folder(cfg, accelerator)  # only now: a run with bad inputs leaves no folder behind
    main = accelerator.is_main_process
    log_to(folder / "train.log" if main else None)
    LOG.info("run folder: %s (%d process(es), %s)", folder, accelerator.num_processes, accelerator.distributed_type)
    LOG.info("%s: %d train / %d validation rows; adapter %s (%s)\n%s", task.name, len(train_set), len(eval_set),
             cfg.adapter.name, cfg.adapter.preset, model.adapter_summary())
    if main and not cfg.resume:
        folders.write_config(folder, cfg, overrides)
        below = model.active_setup.flatten()[:-1] if model.active_setup else []  # MAD-X: the frozen stack
        folders.write_json(folder / folders.RUN_JSON, {**folders.run_record(cfg, "train"), "setup": below})
    trackers = Trackers(folder, cfg.logger.backends, enabled=main)
    state = loop.train(cfg, accelerator, model, task, train_set, eval_set, folder, trackers, resume=cfg.resume)
    trackers.close()
    if main:
        name = cfg.adapter.name
        if cfg.adapter.preset == "none":
            build.save_full_model(model, tokenizer, folder / build.FULL_MODEL_DIR, name)
        else:
            model.save_adapter(folder / "adapters" / name, name, with_head=True)
            for frozen in model.active_setup.flatten()[:-1]:
                model.save_adapter(folder / "adapters" / frozen, frozen, with_head=False)
        write_result(cfg, folder, state, accelerator, started, train_rows=len(train_set), validation_rows=len(eval_set))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return folder
