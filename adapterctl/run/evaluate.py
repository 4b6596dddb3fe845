"""``adapterctl evaluate``: score a run's best adapter, or any adapter folder, on a task split.

``run=<folder>`` reuses the run's task, backbone and validation slice, so it reproduces the
run's ``metrics.json``; ``adapter=<folder> task=<task>`` scores an exported adapter.
``run=[r1,r2]`` (or ``adapter=[a,b] task=...``) runs the adapters in one Parallel pass and
scores each on its own task through its own head.
"""

from __future__ import annotations

import json

import torch

from .. import metrics
from ..core.model import AdapterModelOutput
from ..data import Task, data_root, load_rows
from ..errors import AdapterConfigError
from . import build, folders, loop
from .loggers import LOG, log_to
from .runner import sample


def _score(cfg, accelerator, scorer, tokenizer, task_cfg, trainer) -> tuple[dict, int]:
    """The metrics of ``scorer`` on ``cfg.split`` of one task, and the number of rows scored."""
    task = Task(task_cfg, tokenizer, trainer.max_length)
    limit = trainer.max_eval_samples if cfg.split == "validation" else None
    encoded = task.encode(sample(load_rows(task_cfg, data_root(cfg.data_root), cfg.split), limit), cfg.split)
    return loop.evaluate(accelerator, scorer, task, encoded, trainer.eval_batch_size, task_cfg.metrics), len(encoded)


def run(cfg, overrides: list[str]) -> dict:
    """Score with the composed ``cfg``; prints and returns the metrics."""
    if build.is_parallel(cfg):
        return run_parallel(cfg, overrides)
    model, tokenizer, task_cfg, trainer = build.trained_from(cfg)
    if task_cfg is None:
        raise AdapterConfigError("evaluating an adapter folder needs the task: add task=<name> (e.g. task=rte)")
    metrics.check(task_cfg.metrics)
    accelerator = loop.accelerator_for(trainer)
    folder = folders.new_folder("evaluate", cfg.output_dir) if accelerator.is_main_process else None
    log_to(folder / "evaluate.log" if folder else None, accelerator.is_main_process)
    scores, rows = _score(cfg, accelerator, model, tokenizer, task_cfg, trainer)
    if folder:
        folders.write_config(folder, cfg, overrides)
        folders.write_json(folder / folders.METRICS_JSON, {**scores, "split": cfg.split, "rows": rows})
        LOG.info("%s %s (%d rows) -> %s", task_cfg.name, cfg.split, rows, folder)
        print(json.dumps(scores, sort_keys=True))
    accelerator.end_training()
    return scores


class ParallelHead(torch.nn.Module):
    """One child's outputs of a model that runs a Parallel setup, for the one-task loop."""

    def __init__(self, model, index: int):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, **inputs):
        return AdapterModelOutput(logits=self.model(**inputs).logits[self.index])


def run_parallel(cfg, overrides: list[str]) -> dict:
    """``run=[...]`` or ``adapter=[...]``: the adapters in one Parallel model, each scored on its
    own task (its run's, else ``task=``) through its own head; metrics keyed by adapter name."""
    model, tokenizer, tasks, trainer = build.parallel_from(cfg)
    if any(task_cfg is None for _, task_cfg in tasks):
        raise AdapterConfigError("evaluating adapter folders needs the task: add task=<name> (e.g. task=rte)")
    for _, task_cfg in tasks:
        metrics.check(task_cfg.metrics)
    accelerator = loop.accelerator_for(trainer)
    folder = folders.new_folder("evaluate", cfg.output_dir) if accelerator.is_main_process else None
    log_to(folder / "evaluate.log" if folder else None, accelerator.is_main_process)
    results = {}
    for index, (name, task_cfg) in enumerate(tasks):
        scores, rows = _score(cfg, accelerator, ParallelHead(model, index), tokenizer, task_cfg, trainer)
        results[name] = {**scores, "task": task_cfg.name, "rows": rows}
    if folder:
        folders.write_config(folder, cfg, overrides)
        folders.write_json(folder / folders.METRICS_JSON, {"adapters": results, "split": cfg.split})
        LOG.info("%s: %s -> %s", cfg.split, json.dumps(results, sort_keys=True), folder)
        print(json.dumps(results, sort_keys=True))
    accelerator.end_training()
    return results
