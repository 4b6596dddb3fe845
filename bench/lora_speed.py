"""LoRA on the real MiniLM: one training step against full fine-tuning and against PEFT's LoRA,
all in one run (a merged LoRA's inference: bench/lora_merged.py).

    PYTHONPATH=. /work/envs/peftvenv/bin/python bench/lora_speed.py [--rounds 40] [--threads 2]

PEFT is not a dependency of adapterctl: run this with a Python that has ``peft`` (the shared
``/work/envs/peftvenv``), adapterctl taken from this checkout by ``PYTHONPATH``. Batch 32 x
sequence 128, 2 threads (``--threads 1`` where others share the cores), the protocol of bench/core_speed.py: each round times every side once,
in rotating order, and the report is the median of the per-round ratios. All sides start from
the same MiniLM weights; the LoRA is PEFT's and AdapterHub's default (r=8, alpha=8, query and
value) with a classification head. PEFT's model keeps the backbone's own dropout (its default,
and AdapterHub's); ours runs as ``train_adapter`` does by default (the frozen backbone without
dropout) and also with ``backbone_dropout="all"``, the like-for-like comparison.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from core_speed import installed_minilm, timed
from transformers import AutoModel, AutoModelForSequenceClassification


def full_model(path):
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5)


def peft_model(path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = get_peft_model(base, config).train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def ours(path, backbone_dropout: str = "none"):
    from adapterctl import AdapterModel

    model = AdapterModel(AutoModel.from_pretrained(path))
    model.add_adapter("task", "lora")
    model.add_head("task", num_labels=2)
    model.train_adapter("task", backbone_dropout=backbone_dropout)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = installed_minilm()
    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (args.batch,))

    def step(model, opt):
        F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sides = {"full": full_model(path), "peft": peft_model(path), "ours": ours(path), "ours_all": ours(path, "all")}
    timers = {name: (lambda m=m, o=o: step(m, o)) for name, (m, o) in sides.items()}
    names, ratios = list(timers), {k: [] for k in ("ours/full", "peft/full", "ours/peft", "ours_all/peft")}
    print(f"MiniLM, batch {args.batch} x {args.seq}, {args.threads} threads, {args.warmup} warm-up + {args.rounds} rounds")
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        t = {name: timed(timers[name]) for name in order}
        if r < args.warmup:
            continue
        for key in ratios:
            a, b = key.split("/")
            ratios[key].append(t[a] / t[b])
        print(f"round {r - args.warmup + 1}: " + ", ".join(f"{k} {t[k]:.3f}s" for k in names), flush=True)
    what = {"ours/full": "our LoRA training step / full fine-tuning step",
            "peft/full": "PEFT's LoRA training step / full fine-tuning step",
            "ours/peft": "our LoRA training step / PEFT's (goal <= 1.0)",
            "ours_all/peft": "ours with backbone_dropout='all' / PEFT's (like for like; goal <= 1.0)"}
    for key, values in ratios.items():
        print(f"{what[key]}: median {statistics.median(values):.3f}x (rounds {min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
