"""``adapterctl predict``: labels and scores for texts, one JSON line per input.

Inputs: ``text="..."`` (or a list; a pair as a two-item list) or ``file=`` (.json, .jsonl,
.csv with the task's text columns, or a single ``text`` column). Output: JSON Lines on stdout,
or in ``output=<file>``. With ``adapter=[a,b,...]`` (or ``run=[...]``) the adapters run in one
Parallel pass and each line holds every adapter's label and scores under its name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import ListConfig

from ..data import DataError, read_inputs
from ..errors import AdapterConfigError
from . import build, settings


def _rows(cfg, columns: list[str]) -> list[dict]:
    """Input rows keyed by the task's text columns."""
    if bool(cfg.text) == bool(cfg.file):
        raise AdapterConfigError('give exactly one of text="..." or file=<.json, .jsonl or .csv>')
    if cfg.file:
        rows = read_inputs(Path(cfg.file))
    else:
        texts = list(cfg.text) if isinstance(cfg.text, ListConfig) else [cfg.text]
        rows = [dict(zip(columns, t)) if isinstance(t, ListConfig) else {"text": t} for t in texts]
    if len(columns) == 1:  # a single-text task also reads a plain "text" column
        rows = [{columns[0]: r.get(columns[0], r.get("text"))} for r in rows]
    for i, row in enumerate(rows):
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            raise DataError(f"input {i} has no {missing[0]!r}; give the columns {', '.join(columns)} for each input")
    return rows


def run(overrides: list[str]) -> int:
    cfg = settings.load("predict", overrides)
    parallel = build.is_parallel(cfg)
    if parallel:
        model, tokenizer, tasks, trainer = build.parallel_from(cfg)
        names, task_cfg = [name for name, _ in tasks], tasks[0][1]
    else:
        model, tokenizer, task_cfg, trainer = build.trained_from(cfg)
        names = [model.active_head]
    heads = [model.heads[name] for name in names]
    for head in heads:
        if head.config["head_type"] != "classification":
            raise AdapterConfigError(
                f"predict handles classification and regression heads; {head.name!r} is {head.config['head_type']}")
    columns = list(task_cfg.text_columns) if task_cfg else ["text"]
    rows = _rows(cfg, columns)
    lines = []
    for start in range(0, len(rows), trainer.eval_batch_size):
        chunk = rows[start:start + trainer.eval_batch_size]
        enc = tokenizer(*[[r[c] for r in chunk] for c in columns], truncation=True, max_length=trainer.max_length,
                        padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits
        for i, row in enumerate(chunk):
            labels = [_label(head_logits[i], head.id2label) for head_logits, head in zip(
                logits if parallel else [logits], heads)]
            lines.append(json.dumps({**row, **dict(zip(names, labels))} if parallel else {**row, **labels[0]}))
    text = "\n".join(lines) + "\n"
    if cfg.output:
        Path(cfg.output).write_text(text)
        print(f"{len(lines)} prediction(s) -> {cfg.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _label(logits: torch.Tensor, id2label: dict | None) -> dict:
    if logits.numel() == 1:
        return {"score": float(logits)}
    probs = logits.softmax(-1).tolist()
    names = [id2label[i] if id2label else str(i) for i in range(len(probs))]
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": names[best], "score": probs[best], "scores": dict(zip(names, probs))}
