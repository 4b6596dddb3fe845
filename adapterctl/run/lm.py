"""Language-model tasks (``kind: causal_lm`` or ``seq2seq``) are scored on what the model writes.

Each prompt is continued greedily (a decoder) or answered (an encoder-decoder's decoder) for as
many tokens as the longest completion or target. The label
whose word the text starts with is the prediction (``accuracy``, ``f1``; a text that starts
with no label word counts as wrong), the text itself is compared with the row's completion
(``exact_match``), and the completions' (targets') token losses under teacher forcing give
``perplexity``.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import metrics as metric_fns
from ..data import IGNORE, Encoded, Task, pad_id


def _device(model) -> torch.device:
    return next(model.parameters()).device


def completion_lengths(task: Task) -> int:
    """New tokens to generate: the longest completion's (its label word), EOS not counted; a
    seq2seq target's with its special tokens (BART's decoder writes ``<s>`` first)."""
    if task.kind == "seq2seq":
        return max(len(task.tokenizer(text_target=c)["input_ids"]) for c in task.completions)
    return max(len(task.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in task.completions)


def generate_texts(model, task: Task, encoded: Encoded, batch_size: int, desc: str | None = "generate") -> list[str]:
    """Greedy continuations of the split's prompts (``encoded.extra``), left-padded in batches;
    an encoder-decoder's whole output is its answer."""
    tok, collate, device = task.tokenizer, task.collator(left=True), _device(model)
    new_tokens = completion_lengths(task)
    texts: list[str] = []
    starts = range(0, len(encoded.extra), batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=desc is None):
        prompts = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in encoded.extra[start:start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(prompts).items()}
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id(tok))
        answers = out if task.kind == "seq2seq" else out[:, batch["input_ids"].shape[1]:]
        texts += tok.batch_decode(answers, skip_special_tokens=True)
    return texts


def completion_nll(model, task: Task, encoded: Encoded, batch_size: int) -> tuple[float, int]:
    """Summed negative log-likelihood of the completions' tokens (EOS included) and their count."""
    collate, device = task.collator(), _device(model)
    shift = 1 if task.kind == "causal_lm" else 0  # a causal LM head shifts labels by one; seq2seq's does not
    total, count = 0.0, 0
    for start in range(0, len(encoded.features), batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded.features[start:start + batch_size]).items()}
        scored = int((batch["labels"][:, shift:] != IGNORE).sum())
        total += float(model(**batch).loss) * scored
        count += scored
    return total, count


def evaluate(model, task: Task, encoded: Encoded, batch_size: int, metric_names) -> dict:
    """The named metrics of an LM task split (every process scores all rows)."""
    was_training = model.training
    model.eval()
    scores: dict[str, float] = {}
    with torch.no_grad():
        if set(metric_names) - {"perplexity"}:
            texts = generate_texts(model, task, encoded, batch_size)
            scores.update(metric_fns.compute(metric_names, task.decode(texts, encoded), encoded.references,
                                             num_labels=task.num_labels))
            if "exact_match" in metric_names:
                scores.update(metric_fns.exact_match(texts, [task.completions[r] for r in encoded.references]))
        if "perplexity" in metric_names:
            scores.update(metric_fns.perplexity(*completion_nll(model, task, encoded, batch_size)))
    model.train(was_training)
    return scores
