"""The training loop, as a library function: one code path for one CPU, one GPU or many processes.

``train`` takes any model whose ``forward(**batch)`` returns an output with ``.loss`` (an
``AdapterModel`` after ``train_adapter`` or ``train_fusion``, or any transformers model), the
training rows as feature dicts and a collator. It evaluates when asked, keeps the best
weights, and with a ``checkpoints`` folder resumes bit-exactly after a ``kill -9``. The
``adapterctl train`` and ``fuse`` commands call it; so can a script::

    from transformers import DataCollatorWithPadding
    from adapterctl.run.loop import TrainerSettings, train

    model.train_adapter("rte")                      # or train_fusion(...): its loss is added
    state = train(model, features, collate=DataCollatorWithPadding(tokenizer),
                  settings=TrainerSettings(max_steps=300, lr=1e-3, batch_size=32), seed=42,
                  evaluate=lambda m: {"accuracy": accuracy(m)}, main_metric="accuracy")
    state.best_metrics, state.best_step             # the model now holds the best weights

``features`` is a list of dicts the collator batches (``input_ids``, ``attention_mask``,
``labels``, ...). ``evaluate`` gets the model (in eval mode) and returns metrics, higher
``main_metric`` is better; without it the last weights are kept. The caller seeds the model's
initialization (``accelerate.utils.set_seed``); ``seed`` here fixes the data order.

Why resume is exact: each epoch's order comes from ``seed + epoch`` and a resumed epoch skips
the rows already done; the data loaders draw from their own generators, never from the global
one that dropout uses (which made a resumed epoch's dropout differ before); and a checkpoint
carries every process's RNG states, the optimizer, scheduler and gradient scaler, and the
losses not yet logged.
``trainer.batch_size`` is the global batch: accelerate splits each batch across processes
(``split_batches``), so two processes take the same optimizer steps as one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .. import metrics as metric_fns
from ..data import LM_KINDS, Encoded, Task
from ..errors import AdapterConfigError, CorruptFileError
from . import checkpoint, schema
from .loggers import LOG
from .schema import AdapterDropSettings, TrainerSettings

__all__ = ["LoopState", "TrainerSettings", "AdapterDropSettings", "train", "accelerator_for", "steps_per_epoch",
           "total_steps", "evaluate", "predict_split", "length_grouped"]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LAST, BEST = "last", "best"


@dataclass
class LoopState:
    """The counters a checkpoint carries besides weights, optimizer and RNG."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    best_metrics: dict = field(default_factory=dict)
    evals_without_improvement: int = 0
    train_loss: float | None = None
    pending_losses: list = field(default_factory=list)  # losses since the last logged mean
    total_steps: int | None = None

    @classmethod
    def from_checkpoint(cls, values: dict, source) -> "LoopState":
        known = {f.name for f in fields(cls)}
        if not set(values) <= known:
            raise CorruptFileError(f"{source} has loop counters adapterctl does not write "
                                   f"({', '.join(sorted(set(values) - known))}); the checkpoint is damaged")
        return cls(**values)


def accelerator_for(settings) -> Accelerator:
    # AdapterDrop leaves the dropped layers' adapters without gradients in a step: DDP must allow that
    unused = DistributedDataParallelKwargs(find_unused_parameters=bool(settings.adapter_drop.max_layer))
    # Under torchrun on a machine without a GPU, accelerate enters MULTI_CPU (gloo) only when told cpu=True.
    launched_without_gpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True),
                       mixed_precision=settings.mixed_precision,
                       gradient_accumulation_steps=settings.gradient_accumulation_steps, kwargs_handlers=[unused],
                       cpu=launched_without_gpu)


def steps_per_epoch(settings, rows: int) -> int:
    return math.ceil(math.ceil(rows / settings.batch_size) / settings.gradient_accumulation_steps)


def total_steps(settings, rows: int) -> int:
    """``max_steps``, else ``epochs`` passes over ``rows``."""
    return settings.max_steps or settings.epochs * steps_per_epoch(settings, rows)


def _loader(rows: Sequence, batch_size: int, collate) -> DataLoader:
    """In order, and with its own generator: creating an iterator then leaves the global RNG
    (dropout's) alone, so a resumed epoch draws exactly what the uninterrupted one drew."""
    return DataLoader(rows, batch_size=batch_size, collate_fn=collate, generator=torch.Generator())


def _draw_as_before() -> None:
    """The one number adapterctl 0.1's data loaders took from the global generator (their worker
    base seed) at each epoch's start and each evaluation, taken at the same moments: runs keep
    the numbers published with that version (README's tables) bit for bit. The loaders no longer
    draw themselves, and the draw of a resumed epoch happened before its checkpoint, so resuming
    stays exact."""
    torch.empty((), dtype=torch.int64).random_()


def train(model, rows: Sequence[dict], *, collate: Callable, settings: TrainerSettings | None = None, seed: int = 42,
          evaluate: Callable[[object], dict] | None = None, main_metric: str | None = None,
          checkpoints: Path | None = None, resume: bool = False, accelerator: Accelerator | None = None,
          log: Callable[[int, dict], None] | None = None, log_every: int = 10, progress: bool = True) -> LoopState:
    """Train ``model``'s trainable parameters on ``rows`` to ``max_steps`` (or ``epochs``),
    evaluating every ``eval_steps`` (else once per epoch) and at the end, and leave the best
    weights in the model. ``checkpoints``: a folder for ``last`` (every ``save_steps`` and after
    each evaluation) and ``best``, which ``resume=True`` continues from. ``log(step, values)``
    receives the train loss and learning rate every ``log_every`` steps on the main process."""
    settings = settings or TrainerSettings()
    schema.check(settings, prefix="")
    if settings.lr is None:
        raise AdapterConfigError("the loop needs a learning rate: TrainerSettings(lr=...)")
    if evaluate is not None and not main_metric:
        raise AdapterConfigError("evaluate= needs main_metric=, the key of its result that picks the best weights")
    if resume and checkpoints is None:
        raise AdapterConfigError("resume=True needs checkpoints=<the folder the interrupted run wrote>")
    accelerator = accelerator or accelerator_for(settings)
    every = steps_per_epoch(settings, len(rows))
    total = total_steps(settings, len(rows))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AdapterConfigError("the model has no trainable parameters; call train_adapter(...) or train_fusion(...)")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_scheduler(settings.scheduler, optimizer, num_warmup_steps=int(settings.warmup_ratio * total),
                              num_training_steps=total)
    state = LoopState(total_steps=total)
    if resume:
        state = _restore(Path(checkpoints) / LAST, model, optimizer, scheduler, accelerator, total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.train()
    keeper = _BestKeeper(Path(checkpoints) / BEST if checkpoints else None, accelerator)
    eval_every = settings.eval_steps or every
    bar = tqdm(total=total, initial=state.step, desc="train", disable=not (progress and accelerator.is_main_process))
    started = time.time()
    losses = [torch.tensor(v, device=accelerator.device) for v in state.pending_losses]
    batch, accumulation = settings.batch_size, settings.gradient_accumulation_steps
    while state.step < total and not _patience_spent(settings, state):
        epoch, done = divmod(state.step, every)
        if done == 0:
            _draw_as_before()
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(rows), generator=generator).tolist()
        if settings.group_by_length:
            order = length_grouped(order, rows, batch * accumulation, generator)
        loader = accelerator.prepare(_loader([rows[i] for i in order[done * batch * accumulation:]], batch, collate))
        for inputs in loader:
            with accelerator.accumulate(model):
                loss = model(**inputs).loss
                regularization = getattr(unwrapped, "fusion_regularization_loss", lambda: None)()
                if regularization is not None:  # AdapterFusion's value regularization
                    loss = loss + regularization
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.detach().float())
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            bar.update(1)
            if state.step % log_every == 0 or state.step == total:
                mean = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
                state.train_loss, losses = mean, []
                bar.set_postfix(loss=f"{mean:.4f}")
                if log is not None and accelerator.is_main_process:
                    log(state.step, {"train/loss": mean, "train/lr": scheduler.get_last_lr()[0]})
            evaluated = evaluate is not None and (state.step % eval_every == 0 or state.step == total)
            if evaluated:
                _evaluate_and_keep_best(evaluate, main_metric, unwrapped, state, keeper, log, accelerator)
            if checkpoints and (evaluated or state.step % every == 0 or state.step == total
                                or (settings.save_steps and state.step % settings.save_steps == 0)):
                state.pending_losses = [float(v) for v in losses]
                _save_last(Path(checkpoints) / LAST, unwrapped, optimizer, scheduler, state, accelerator)
            if state.step >= total or _patience_spent(settings, state):
                break
    bar.close()
    if _patience_spent(settings, state):
        LOG.info("early stopping at step %d: no improvement in %d evaluations", state.step,
                 state.evals_without_improvement)
    LOG.info("trained %d steps in %.1f s", state.step, time.time() - started)
    keeper.load_into(unwrapped, state)
    return state


def length_grouped(order: list[int], rows: Sequence[dict], batch: int, generator: torch.Generator,
                   megabatch: int = 50) -> list[int]:
    """``trainer.group_by_length`` (HF Trainer's idea): the shuffled ``order`` cut into runs of
    ``megabatch`` batches, each run sorted by row length (longest first) and cut into batches,
    then the batches shuffled; a short last batch stays last. Seeded like the order, so a resumed
    epoch skips exactly the batches already done."""
    batches = []
    for start in range(0, len(order), batch * megabatch):
        run = sorted(order[start:start + batch * megabatch], key=lambda i: -len(rows[i]["input_ids"]))
        batches += [run[j:j + batch] for j in range(0, len(run), batch)]
    last = [batches.pop()] if batches and len(batches[-1]) < batch else []
    return [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]] + [
        i for b in last for i in b]


def _restore(folder: Path, model, optimizer, scheduler, accelerator, total: int) -> LoopState:
    if not folder.is_dir():
        raise AdapterConfigError(f"nothing to resume: {folder} does not exist")
    counters, processes = checkpoint.restore(folder, model, optimizer, scheduler, rank=accelerator.process_index,
                                             scaler=accelerator.scaler)
    state = LoopState.from_checkpoint(counters, folder / checkpoint.STATE)
    if state.total_steps not in (None, total):
        raise AdapterConfigError(f"{folder} was written by a run of {state.total_steps} steps, this one has {total}; "
                                 "resume it with the settings it started with")
    if processes != accelerator.num_processes:
        LOG.warning("resuming with %d process(es) a checkpoint written by %d: the run continues, but its results "
                    "will not be bit-identical to an uninterrupted run", accelerator.num_processes, processes)
    LOG.info("resumed from %s at step %d", folder, state.step)
    return state


def _save_last(folder: Path, model, optimizer, scheduler, state: LoopState, accelerator) -> None:
    rng = gather_object([checkpoint.rng_state()])  # every process's own dropout stream
    if accelerator.is_main_process:
        checkpoint.save(folder, model, optimizer, scheduler, asdict(state), rng, scaler=accelerator.scaler)
    accelerator.wait_for_everyone()


class _BestKeeper:
    """The best weights so far: in ``checkpoints/best``, or in memory without a checkpoint folder."""

    def __init__(self, folder: Path | None, accelerator):
        self.folder, self.accelerator, self.weights = folder, accelerator, None

    def keep(self, model) -> None:
        if self.folder is None:
            self.weights = checkpoint.trainable_state(model)
        elif self.accelerator.is_main_process:
            checkpoint.save_weights(self.folder, model)
        self.accelerator.wait_for_everyone()

    def load_into(self, model, state: LoopState) -> None:
        if state.best_step is None:
            return
        if self.folder is not None:
            checkpoint.load_weights(self.folder, model)
        elif self.weights is not None:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in self.weights.items():
                    params[name].copy_(value)


def _patience_spent(settings, state: LoopState) -> bool:
    return bool(settings.early_stopping_patience) and state.evals_without_improvement >= settings.early_stopping_patience


def _evaluate_and_keep_best(evaluate, main_metric, model, state: LoopState, keeper: _BestKeeper, log,
                            accelerator) -> None:
    was_training = model.training
    model.eval()
    _draw_as_before()
    with torch.no_grad():
        scores = evaluate(model)
    model.train(was_training)
    if main_metric not in scores:
        raise AdapterConfigError(f"main metric {main_metric!r} is not among the computed metrics "
                                 f"({', '.join(scores)}); pick one of them")
    score = scores[main_metric]
    LOG.info("step %d of %d: %s", state.step, state.total_steps, ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    if log is not None and accelerator.is_main_process:
        log(state.step, {f"eval/{k}": v for k, v in scores.items()})
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_step, state.best_metrics = score, state.step, scores
        state.evals_without_improvement = 0
        keeper.keep(model)
    else:
        state.evals_without_improvement += 1


# Evaluation of a task split (the CLI's evaluate command and the evaluations during training).
def predict_split(accelerator: Accelerator, model, task: Task, encoded: Encoded, batch_size: int,
                  desc: str | None = "eval") -> list:
    """Per-row outputs over a split (logits, or (start, end) for QA), gathered from all processes."""
    features = [{k: v for k, v in f.items() if k in MODEL_INPUTS} for f in encoded.features]
    loader = accelerator.prepare(_loader(features, batch_size, task.collator()))
    was_training = model.training
    model.eval()
    rows: list = []
    show = desc is not None and accelerator.is_main_process
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not show):
            logits = model(**batch).logits
            parts = logits if isinstance(logits, tuple) else (logits,)
            gathered = [accelerator.gather_for_metrics(accelerator.pad_across_processes(p.contiguous(), dim=1)).float().cpu()
                        for p in parts]
            rows += list(zip(*gathered)) if isinstance(logits, tuple) else list(gathered[0])
    model.train(was_training)
    return rows


def evaluate(accelerator, model, task: Task, encoded: Encoded, batch_size: int, metric_names) -> dict:
    if task.kind in LM_KINDS:  # scored on generated text
        from . import lm

        return lm.evaluate(accelerator.unwrap_model(model), task, encoded, batch_size, metric_names)
    outputs = predict_split(accelerator, model, task, encoded, batch_size)
    predictions = task.decode(outputs, encoded)
    return metric_fns.compute(metric_names, predictions, encoded.references, num_labels=task.num_labels)
