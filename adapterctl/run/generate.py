"""``adapterctl generate``: text from a decoder or an encoder-decoder with an adapter (or the bare
backbone), streamed.

``prompt="..."`` or ``file=`` (.txt: one prompt per line; .json/.jsonl/.csv: a ``prompt`` or
``text`` column). The model is a run's (``run=``), an adapter folder or Hub id on this
command's backbone (``adapter=``, default backbone SmolLM2), or the backbone alone. With
``task=<causal_lm or seq2seq task>`` each prompt is the task's text, rendered through its template
(``task=rotten_tomatoes_lm prompt="a gripping film"`` asks ``Review: a gripping film\\nSentiment:``).
An encoder-decoder's completion is its decoder's whole output (the prompt is the encoder's).
Tokens print as they are generated (``stream=true``); ``stream=false`` prints one JSON line
per prompt with its completion instead, and ``output=<file>`` writes those lines to a file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed
from omegaconf import ListConfig
from transformers import TextStreamer

from ..data import LM_KINDS, DataError, Task, pad_id, read_inputs
from ..errors import AdapterConfigError
from ..io import atomic_write_text
from . import build


def prompts(cfg) -> list[str]:
    """The prompts as given, before any template: ``prompt=`` (one or a list) or ``file=``."""
    if cfg.prompt is not None:
        given = list(cfg.prompt) if isinstance(cfg.prompt, ListConfig) else [cfg.prompt]
        return [str(p) for p in given]
    path = Path(cfg.file)
    if path.suffix.lower() == ".txt":
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise DataError(f"{path} holds no prompts; write one prompt per line")
        return lines
    out, rows = [], read_inputs(path)
    for row, where in zip(rows, rows.where):
        text = row.get("prompt", row.get("text"))
        if not isinstance(text, str):
            raise DataError(f"{where}: no text in a 'prompt' or 'text' column; give each row one")
        out.append(text)
    return out


def render(task: Task | None, texts: list[str]) -> list[list[int]] | list[str]:
    """Task prompts (token ids, the template around each text) or the texts themselves."""
    if task is None:
        return texts
    if task.kind not in LM_KINDS or len(task.columns) != 1:
        raise AdapterConfigError(f"task={task.name} is not a one-column causal_lm or seq2seq task; generate renders prompts "
                                 "through such a task's template (e.g. task=rotten_tomatoes_lm), or drop task=")
    return [task.prompt_ids({task.columns[0]: t}, task.max_length) for t in texts]


def run(cfg, overrides: list[str]) -> int:
    """Generate for each prompt; returns the exit status."""
    texts = prompts(cfg)  # before loading a model: a bad file costs no time
    model, tokenizer, _, trainer = build.trained_from(cfg)
    task = Task(cfg.task, tokenizer, trainer.max_length) if cfg.get("task") is not None else None
    inputs = render(task, texts)
    set_seed(cfg.seed)
    options = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, pad_token_id=pad_id(tokenizer),
                   eos_token_id=tokenizer.eos_token_id)
    if cfg.do_sample:
        options.update(temperature=cfg.temperature, top_p=cfg.top_p)
    streamer = TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True) if cfg.stream else None
    lines = []
    device = next(model.parameters()).device
    for text, prompt in zip(texts, inputs):
        ids = torch.tensor([prompt]) if task else tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                                 streamer=streamer, **options)
        answer = out[0] if model.family.kind == "encoder-decoder" else out[0, ids.shape[1]:]
        completion = tokenizer.decode(answer, skip_special_tokens=True)
        if streamer is not None:
            print(flush=True)  # the streamer ends a prompt's text with a newline; a blank line between prompts
        lines.append(json.dumps({"prompt": text, "completion": completion}))
    text = "\n".join(lines) + "\n"
    if cfg.output:
        atomic_write_text(Path(cfg.output), text)
        print(f"{len(lines)} completion(s) -> {cfg.output}", file=sys.stderr)
    elif streamer is None:
        sys.stdout.write(text)
    return 0
