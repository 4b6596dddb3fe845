"""``adapterctl predict``: labels and scores for texts, one JSON line per input.

Inputs: ``text="..."`` (or a list; a pair as a two-item list) or ``file=`` (.json, .jsonl,
.csv with the task's text columns, or a single ``text`` column). Output: JSON Lines on stdout,
or in ``output=<file>`` (an existing file only with ``overwrite=true``). With
``adapter=[a,b,...]`` (or ``run=[...]``) the adapters run in one Parallel pass and each line
holds every adapter's label and scores under its name. The text columns come from ``task=``,
else from the run, else from the run folder or export an adapter was saved in; a single text
given to an adapter of a sentence-pair task is an error, not a score.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import ListConfig

from ..data import DataError, Rows, read_inputs
from ..errors import AdapterConfigError
from ..io import atomic_write_text
from . import build


def _inputs(cfg) -> Rows:
    """The raw inputs with where each is: file rows, or the texts of ``text=``."""
    if cfg.file:
        return read_inputs(Path(cfg.file))
    texts = list(cfg.text) if isinstance(cfg.text, ListConfig) else [cfg.text]
    if not texts:
        raise DataError('text=[] holds no texts; give text="..." or text=[a,b]')
    return Rows([list(t) if isinstance(t, ListConfig) else t for t in texts], [f"text {i}" for i in range(len(texts))])


def _columns(tasks: list[tuple[str, object]]) -> list[str]:
    """The text columns every adapter reads; one Parallel pass feeds them all the same input."""
    known = {name: list(task.text_columns) for name, task in tasks if task is not None}
    shapes = {len(columns) for columns in known.values()}
    if len(shapes) > 1:
        listed = "; ".join(f"{name} reads {', '.join(columns)}" for name, columns in known.items())
        raise AdapterConfigError(f"the adapters read different inputs ({listed}): one Parallel pass gives every "
                                 "adapter the same input, so predict them one at a time")
    return next(iter(known.values()), ["text"])


def _rows(inputs: Rows, columns: list[str], names: list[str]) -> list[dict]:
    """Input rows keyed by the text columns; an input of the wrong shape is an error naming it."""
    single = len(columns) == 1
    who = f"adapter {names[0]!r}" if len(names) == 1 else "the adapters"
    rows = []
    for value, where in zip(inputs, inputs.where):
        if isinstance(value, dict):
            row = {columns[0]: value.get(columns[0], value.get("text"))} if single else value
        elif isinstance(value, list):
            if len(value) != len(columns):
                raise DataError(f"{where}: {len(value)} texts, but {who} read{'s' if len(names) == 1 else ''} "
                                f"{len(columns)} ({', '.join(columns)})")
            row = dict(zip(columns, value))
        elif single:
            row = {columns[0]: value}
        else:
            raise DataError(f"{where}: one text, but {who} score{'s' if len(names) == 1 else ''} pairs "
                            f"({', '.join(columns)}): give text=[[{columns[0]},{columns[1]}]] or a file with those "
                            "columns")
        for column in columns:
            if not isinstance(row.get(column), str):
                found = "no" if row.get(column) is None else f"a non-text {column!r} ({row.get(column)!r}), no"
                raise DataError(f"{where}: {found} text in column {column!r}; give the columns {', '.join(columns)} "
                                "for each input")
        rows.append(row)
    return rows


def run(cfg, overrides: list[str]) -> int:
    """Predict with the composed ``cfg``: JSON lines on stdout or in ``output=``."""
    inputs = _inputs(cfg)  # before loading a model: a bad file costs no time
    parallel = build.is_parallel(cfg)
    if parallel:
        model, tokenizer, tasks, trainer = build.parallel_from(cfg)
    else:
        model, tokenizer, task_cfg, trainer = build.trained_from(cfg)
        tasks = [(model.active_head, task_cfg)]
    names = [name for name, _ in tasks]
    heads = [model.heads[name] for name in names]
    for head in heads:
        if head.config["head_type"] not in ("classification", "regression"):
            raise AdapterConfigError(
                f"predict handles classification and regression heads; {head.name!r} is {head.config['head_type']}"
                + ("; generate writes text with it (adapterctl generate ...)" if head.config["head_type"] in ("causal_lm", "seq2seq_lm")
                   else ""))
    columns = _columns(tasks)
    rows = _rows(inputs, columns, names)
    lines = []
    for start in range(0, len(rows), trainer.eval_batch_size):
        chunk = rows[start:start + trainer.eval_batch_size]
        enc = tokenizer(*[[r[c] for r in chunk] for c in columns], truncation=True, max_length=trainer.max_length,
                        padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits
        for i, row in enumerate(chunk):
            labels = [label_scores(head_logits[i], head.id2label) for head_logits, head in zip(
                logits if parallel else [logits], heads)]
            lines.append(json.dumps({**row, **dict(zip(names, labels))} if parallel else {**row, **labels[0]}))
    text = "\n".join(lines) + "\n"
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cfg.output), text)
        print(f"{len(lines)} prediction(s) -> {cfg.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def label_scores(logits: torch.Tensor, id2label: dict | None) -> dict:
    """One row's answer: ``{"score"}`` for regression, else the best label, its probability and
    every label's (the serve command answers the same)."""
    if logits.numel() == 1:
        return {"score": float(logits)}
    probs = logits.softmax(-1).tolist()
    names = [id2label[i] if id2label else str(i) for i in range(len(probs))]
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": names[best], "score": probs[best], "scores": dict(zip(names, probs))}
