"""Generation for the server: prompts continued each by its own adapter in one mixed batch
(``generate(adapter_names=...)``), every row's text streamed to its client as it comes.

A batch shares its language-model head and sampling settings (``Generation.key``); each row
stops at its own ``max_new_tokens``, at an end-of-sequence token, or when its client leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


@dataclass(eq=False)
class Generation:
    """One prompt to continue. ``emit`` hands events to its client (from the model's thread):
    ``{"text": piece}`` as text comes, then ``{"done": true, "text", "tokens", "finish_reason"}``
    (or ``{"done": true, "error": ...}``)."""

    adapter: str | None
    head: str  # the causal_lm head it runs with
    input_ids: list[int]
    max_new_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    emit: Callable[[dict], None]
    cancelled: bool = False  # its client left
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None

    @property
    def key(self) -> tuple:
        """What the generations of one batch share."""
        return self.head, self.temperature, self.top_p

    def add(self, token: int, tokenizer, eos: set[int]) -> None:
        if self.cancelled:
            self.finish = "cancelled"
            return
        if token in eos:
            return self.close("eos")
        self.tokens.append(token)
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.startswith(self.text) and not text.endswith("\ufffd"):  # a whole character, earlier text kept
            piece, self.text = text[len(self.text):], text
            if piece:
                self.emit({"text": piece})
        if len(self.tokens) >= self.max_new_tokens:
            self.close("length")

    def close(self, reason: str) -> None:
        self.finish = reason
        self.emit({"done": True, "text": self.text, "tokens": len(self.tokens), "finish_reason": reason})

    def fail(self, error: Exception) -> None:
        self.finish = "error"
        self.emit({"done": True, "error": {"type": type(error).__name__, "message": str(error)}})


class RowStreams(BaseStreamer, StoppingCriteria):
    """transformers' streamer and stopping criterion for a batch of generations: each new token
    goes to its row's ``Generation``; a finished or abandoned row stops."""

    def __init__(self, jobs: list[Generation], tokenizer, eos: set[int]):
        self.jobs, self.tokenizer, self.eos = jobs, tokenizer, eos
        self.prompts_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompts_seen:  # the first call hands over the prompts
            self.prompts_seen = True
            return
        for job, token in zip(self.jobs, value.view(-1).tolist()):
            if job.finish is None:
                job.add(token, self.tokenizer, self.eos)

    def end(self) -> None:
        for job in self.jobs:
            if job.finish is None:
                job.close("length")

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.tensor([job.finish is not None or job.cancelled for job in self.jobs], device=input_ids.device)


def generate(model, tokenizer, jobs: list[Generation], pad_id: int) -> None:
    """Run one batch: prompts padded on the left, each row with its adapter."""
    width = max(len(j.input_ids) for j in jobs)
    ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, job in enumerate(jobs):
        ids[i, width - len(job.input_ids):] = torch.tensor(job.input_ids)
        mask[i, width - len(job.input_ids):] = 1
    eos = end_of_sequence(model, tokenizer)
    head, temperature, top_p = jobs[0].key
    streams = RowStreams(jobs, tokenizer, eos)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    with model.adapter_setup(None, head=head):
        model.generate(input_ids=ids, attention_mask=mask, adapter_names=[j.adapter for j in jobs],
                       max_new_tokens=max(j.max_new_tokens for j in jobs), streamer=streams,
                       stopping_criteria=StoppingCriteriaList([streams]), pad_token_id=pad_id,
                       eos_token_id=sorted(eos) or None, **sampling)


def end_of_sequence(model, tokenizer) -> set[int]:
    """The tokenizer's end-of-sequence token and the model config's."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(model.config, "eos_token_id", None)
    ids |= set(config_eos) if isinstance(config_eos, list) else {config_eos}
    return {i for i in ids if i is not None}
