"""``adapterctl evaluate``: score a run's best adapter, or any adapter folder, on a task split.

``run=<folder>`` reuses the run's task, backbone and validation slice, so it reproduces the
run's ``metrics.json``; ``adapter=<folder> task=<task>`` scores an exported adapter.
"""

from __future__ import annotations

import json

from .. import metrics
from ..data import Task, data_root, load_rows
from ..errors import AdapterConfigError
from . import build, folders, loop, settings
from .loggers import LOG, log_to
from .train import sample


def run(overrides: list[str]) -> dict:
    cfg = settings.load("evaluate", overrides)
    model, tokenizer, task_cfg, trainer = build.trained_from(cfg)
    if task_cfg is None:
        raise AdapterConfigError("evaluating an adapter folder needs the task: add task=<name> (e.g. task=rte)")
    metrics.check(task_cfg.metrics)
    accelerator = loop.accelerator_for(trainer)
    folder = folders.new_folder("evaluate", cfg.output_dir) if accelerator.is_main_process else None
    log_to(folder / "evaluate.log" if folder else None)
    task = Task(task_cfg, tokenizer, trainer.max_length)
    limit = trainer.max_eval_samples if cfg.split == "validation" else None
    encoded = task.encode(sample(load_rows(task_cfg, data_root(cfg.data_root), cfg.split), limit), cfg.split)
    scores = loop.evaluate(accelerator, model, task, encoded, trainer.eval_batch_size, task_cfg.metrics)
    if folder:
        folders.write_config(folder, cfg, overrides)
        folders.write_json(folder / folders.METRICS_JSON, {**scores, "split": cfg.split, "rows": len(encoded)})
        LOG.info("%s %s (%d rows) -> %s", task.name, cfg.split, len(encoded), folder)
        print(json.dumps(scores, sort_keys=True))
    accelerator.end_training()
    return scores
