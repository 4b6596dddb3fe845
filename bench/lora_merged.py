"""A merged LoRA's inference on the real MiniLM against the bare model, in one run.

    .venv/bin/python bench/lora_merged.py [--rounds 200] [--batch 8] [--seq 128] [--threads 2]

Sides, all from the same MiniLM weights and all in eval mode under ``no_grad``:
``bare`` (transformers' AutoModelForSequenceClassification), ``bare copy`` (a second one: its
ratio to ``bare`` is this machine's noise floor), ``ours, no adapter`` (an AdapterModel with a
classification head, no adapter) and ``merged`` (the same with a LoRA on q, k, v, o and both
MLP projections, given random weights, then ``merge_adapter``). Each round times every side
once, in rotating order; the report is the median of the per-round ratios. The goal of issue
13 is merged <= 1.005x the bare model: merging folds the update into the projections' weights
and removes the LoRA's forward hooks, so nothing of the adapter is left on the hot path. The
bench counts the forward hooks left and checks the merged logits against the unmerged ones.
Short passes (batch 8) and many rounds: a half-percent goal needs hundreds of paired readings.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from core_speed import installed_minilm, timed
from transformers import AutoModel, AutoModelForSequenceClassification

from adapterctl import AdapterModel


def hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def ours(path, lora: bool) -> AdapterModel:
    torch.manual_seed(0)
    model = AdapterModel(AutoModel.from_pretrained(path))
    model.add_head("task", num_labels=2)
    if lora:
        model.add_adapter("task", "lora", attn_matrices=["q", "k", "v", "o"], intermediate_lora=True,
                          output_lora=True, set_active=True)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".loras.task." in name:
                    p.normal_(0, 0.02)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = installed_minilm()
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 20000, (args.batch, args.seq), generator=g),
              "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}

    bare = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    copy = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    plain, merged = ours(path, lora=False), ours(path, lora=True)
    with torch.no_grad():
        unmerged_logits = merged(**inputs).logits
        unmerged_hooks = hooks(merged)
        merged.merge_adapter("task")
        diff = (merged(**inputs).logits - unmerged_logits).abs().max().item()
    print(f"MiniLM, batch {args.batch} x {args.seq}, {args.threads} threads, {args.warmup} warm-up + "
          f"{args.rounds} rounds; merged vs unmerged logits: max |diff| {diff:.1e}; forward hooks: "
          f"{unmerged_hooks} unmerged, {hooks(merged)} merged, {hooks(plain)} without an adapter, {hooks(bare)} bare")

    sides = {"bare": bare, "bare copy": copy, "ours, no adapter": plain, "merged": merged}
    names, times = list(sides), {name: [] for name in sides}
    with torch.no_grad():
        for r in range(args.warmup + args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            t = {name: timed(lambda m=sides[name]: m(**inputs)) for name in order}
            if r >= args.warmup:
                for name in names:
                    times[name].append(t[name])

    def ratio(a: str, b: str) -> str:
        values = [x / y for x, y in zip(times[a], times[b])]
        q = statistics.quantiles(values, n=4)
        return f"median {statistics.median(values):.4f}x (quartiles {q[0]:.3f}-{q[2]:.3f})"

    print(f"bare pass: median {statistics.median(times['bare']) * 1e3:.1f} ms")
    print(f"bare copy / bare (the noise floor): {ratio('bare copy', 'bare')}")
    print(f"ours without an adapter / bare: {ratio('ours, no adapter', 'bare')}")
    print(f"merged LoRA / ours without an adapter: {ratio('merged', 'ours, no adapter')}")
    print(f"merged LoRA / bare (goal <= 1.005): {ratio('merged', 'bare')}")


if __name__ == "__main__":
    main()
