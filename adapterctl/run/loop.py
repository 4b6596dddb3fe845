"""The accelerate loop: one code path for one CPU, one GPU, or many processes.

``trainer.batch_size`` is the global batch: accelerate splits each batch across processes
(``split_batches``), so two processes take the same optimizer steps as one. Each epoch's
order comes from a generator seeded with ``seed + epoch``, so a resumed run sees the same
batches as an uninterrupted one and can skip the ones already done.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .. import metrics as metric_fns
from ..data import Encoded, Task
from ..errors import AdapterConfigError
from . import checkpoint
from .loggers import LOG

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class LoopState:
    """The counters a checkpoint carries besides weights, optimizer and RNG."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    best_metrics: dict = field(default_factory=dict)
    evals_without_improvement: int = 0
    train_loss: float | None = None


def accelerator_for(trainer) -> Accelerator:
    # AdapterDrop leaves the dropped layers' adapters without gradients in a step: DDP must allow that
    unused = DistributedDataParallelKwargs(find_unused_parameters=bool(trainer.get("adapter_drop", {}).get("max_layer")))
    # Under torchrun on a machine without a GPU, accelerate enters MULTI_CPU (gloo) only when told cpu=True.
    launched_without_gpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True),
                       mixed_precision=trainer.mixed_precision,
                       gradient_accumulation_steps=trainer.gradient_accumulation_steps, kwargs_handlers=[unused],
                       cpu=launched_without_gpu)


def predict_split(accelerator: Accelerator, model, task: Task, encoded: Encoded, batch_size: int) -> list:
    """Per-row outputs over a split (logits, or (start, end) for QA), gathered from all processes."""
    features = [{k: v for k, v in f.items() if k in MODEL_INPUTS} for f in encoded.features]
    loader = accelerator.prepare(DataLoader(features, batch_size=batch_size, collate_fn=task.collator()))
    was_training = model.training
    model.eval()
    rows: list = []
    with torch.no_grad():
        for batch in loader:
            logits = model(**batch).logits
            parts = logits if isinstance(logits, tuple) else (logits,)
            gathered = [accelerator.gather_for_metrics(accelerator.pad_across_processes(p.contiguous(), dim=1)).float().cpu()
                        for p in parts]
            rows += list(zip(*gathered)) if isinstance(logits, tuple) else list(gathered[0])
    model.train(was_training)
    return rows


def evaluate(accelerator, model, task: Task, encoded: Encoded, batch_size: int, metric_names) -> dict:
    outputs = predict_split(accelerator, model, task, encoded, batch_size)
    predictions = task.decode(outputs, encoded)
    return metric_fns.compute(metric_names, predictions, encoded.references, num_labels=task.num_labels)


def train(cfg, accelerator: Accelerator, model, task: Task, train_set: Encoded, eval_set: Encoded, folder,
          trackers, resume: bool) -> LoopState:
    """Train to ``max_steps`` (or ``epochs``), evaluating, checkpointing and keeping the best."""
    t = cfg.trainer
    batch, accumulation = t.batch_size, t.gradient_accumulation_steps
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / batch) / accumulation)
    total = t.max_steps or t.epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr or cfg.adapter.lr, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total),
                              num_training_steps=total)
    ckpt = folder / "checkpoints"
    state = LoopState()
    if resume:
        state = LoopState(**checkpoint.restore(ckpt / "last", model, optimizer, scheduler))
        LOG.info("resumed from %s at step %d", ckpt / "last", state.step)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    eval_every = t.eval_steps or steps_per_epoch
    bar = tqdm(total=total, initial=state.step, desc="train", disable=not accelerator.is_main_process)
    started, losses = time.time(), []
    while state.step < total:
        epoch, done = divmod(state.step, steps_per_epoch)
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        rows = [train_set.features[i] for i in order[done * batch * accumulation:]]
        loader = accelerator.prepare(DataLoader(rows, batch_size=batch, collate_fn=task.collator()))
        for inputs in loader:
            with accelerator.accumulate(model):
                loss = model(**inputs).loss
                regularization = unwrapped.fusion_regularization_loss()  # fusion training only
                if regularization is not None:
                    loss = loss + regularization
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm:
                    accelerator.clip_grad_norm_(params, t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.detach().float())
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            bar.update(1)
            if state.step % cfg.logger.every == 0 or state.step == total:
                mean = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
                state.train_loss, losses = mean, []
                bar.set_postfix(loss=f"{mean:.4f}")
                trackers.log(state.step, {"train/loss": mean, "train/lr": scheduler.get_last_lr()[0]})
            if state.step % eval_every == 0 or state.step == total:
                _evaluate_and_keep_best(cfg, accelerator, unwrapped, task, eval_set, ckpt, state, trackers)
            if (t.save_steps and state.step % t.save_steps == 0) or state.step % eval_every == 0 or state.step == total:
                if accelerator.is_main_process:
                    checkpoint.save(ckpt / "last", unwrapped, optimizer, scheduler, asdict(state))
                accelerator.wait_for_everyone()
            if state.step >= total or _patience_spent(t, state):
                break
        if _patience_spent(t, state):
            LOG.info("early stopping at step %d: no improvement in %d evaluations", state.step,
                     state.evals_without_improvement)
            break
    bar.close()
    LOG.info("trained %d steps in %.1f s", state.step, time.time() - started)
    if state.best_step is not None:
        checkpoint.load_weights(ckpt / "best", unwrapped)
    return state


def _patience_spent(trainer, state: LoopState) -> bool:
    return bool(trainer.early_stopping_patience) and state.evals_without_improvement >= trainer.early_stopping_patience


def _evaluate_and_keep_best(cfg, accelerator, model, task, eval_set, ckpt, state: LoopState, trackers) -> None:
    scores = evaluate(accelerator, model, task, eval_set, cfg.trainer.eval_batch_size, cfg.task.metrics)
    if cfg.task.main_metric not in scores:
        raise AdapterConfigError(
            f"task.main_metric={cfg.task.main_metric!r} is not among the computed metrics ({', '.join(scores)}); pick one"
        )
    score = scores[cfg.task.main_metric]
    LOG.info("step %d: %s", state.step, ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    trackers.log(state.step, {f"eval/{k}": v for k, v in scores.items()})
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_step, state.best_metrics = score, state.step, scores
        state.evals_without_improvement = 0
        if accelerator.is_main_process:
            checkpoint.save_weights(ckpt / "best", model)
        accelerator.wait_for_everyone()
    else:
        state.evals_without_improvement += 1
