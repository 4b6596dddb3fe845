"""The AdapterHub side of bench/fusion_experiment.py: the same runs in AdapterHub's own library.

Runs in a separate environment with ``adapters==1.3.0`` (it pins transformers 4.57), never in
the project's: ``python3 -m venv /work/envs/ahfusion && /work/envs/ahfusion/bin/pip install
torch==2.13.0 && /work/envs/ahfusion/bin/pip install adapters==1.3.0``. It loads the adapter
folders our ``adapterctl train`` wrote (AdapterHub's format) into a ``BertAdapterModel`` built
on the same MiniLM weights and trains, with AdapterHub's ``AdapterTrainer``, one of:

  single   a new seq_bn (pfeiffer) adapter + head on the target task
  head     one frozen source adapter + a new head
  fusion   dynamic AdapterFusion over the frozen source adapters + a new head

    /work/envs/ahfusion/bin/python bench/fusion_adapterhub.py fusion --task cb --data <data root> \\
        --backbone <MiniLM folder> --sources <adapter folder> ... --seed 1 --lr 5e-5 --epochs 10 --out <folder>

Evaluates on the validation split after each epoch and writes ``<out>/metrics.json``: the
per-epoch validation metrics, the best and the last, and (fusion) the mean fusion attention
per layer over the validation rows' first token.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed

from adapters import AdapterTrainer, BertAdapterModel, Fuse, SeqBnConfig

COLUMNS = {"cb": ("premise", "hypothesis"), "rte": ("sentence1", "sentence2"), "mrpc": ("sentence1", "sentence2"),
           "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "sst2": ("sentence",),
           "rotten_tomatoes": ("text",)}


def encode(tokenizer, data: Path, task: str, split: str, max_length: int) -> list[dict]:
    rows = [json.loads(line) for line in (data / task / f"{split}.jsonl").open()]
    texts = [[r[c] for r in rows] for c in COLUMNS[task]]
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    return [{**{k: enc[k][i] for k in enc}, "labels": r["label"]} for i, r in enumerate(rows)]


def macro_f1(pred: np.ndarray, gold: np.ndarray, n: int) -> float:
    f1s = []
    for c in range(n):
        tp = np.sum((pred == c) & (gold == c))
        fp, fn = np.sum((pred == c) & (gold != c)), np.sum((pred != c) & (gold == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["single", "head", "fusion"])
    p.add_argument("--task", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--sources", nargs="*", default=[], help="adapter folders (head: exactly one)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    started = time.time()
    set_seed(a.seed)
    labels = json.loads((a.data / a.task / "meta.json").read_text())["label_names"]
    tokenizer = AutoTokenizer.from_pretrained(a.backbone)
    model = BertAdapterModel.from_pretrained(a.backbone)
    head = dict(num_labels=len(labels), id2label=dict(enumerate(labels)))
    if a.mode == "single":
        model.add_adapter(a.task, config=SeqBnConfig(reduction_factor=16, non_linearity="relu"))
        model.add_classification_head(a.task, **head)
        model.train_adapter(a.task)
    else:
        names = [model.load_adapter(str(s), with_head=False, use_safetensors=True) for s in a.sources]
        if a.mode == "head":
            (name,) = names
            model.add_classification_head(name, **head)
            model.base_model.freeze_model(True)  # the source adapter stays frozen; heads live outside the base model
            model.set_active_adapters(name)
            model.train()
        else:
            setup = Fuse(*names)
            model.add_adapter_fusion(setup, "dynamic")
            model.add_classification_head(setup.name, **head)
            model.train_adapter_fusion(setup)
    train_set = encode(tokenizer, a.data, a.task, "train", a.max_length)
    eval_set = encode(tokenizer, a.data, a.task, "validation", a.max_length)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def metrics(pred):
        guess = pred.predictions.argmax(-1)
        return {"accuracy": float(np.mean(guess == pred.label_ids)),
                "f1": macro_f1(guess, pred.label_ids, len(labels)) if len(labels) > 2
                else macro_f1(guess, pred.label_ids, 2)}

    args = TrainingArguments(
        output_dir=str(a.out / "trainer"), learning_rate=a.lr, num_train_epochs=a.epochs,
        per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64, warmup_ratio=a.warmup_ratio,
        eval_strategy="epoch", save_strategy="no", logging_strategy="epoch", seed=a.seed, report_to=[],
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = AdapterTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                             data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics)
    trainer.train()
    history = [{"epoch": h["epoch"], "accuracy": h["eval_accuracy"], "f1": h["eval_f1"]}
               for h in trainer.state.log_history if "eval_accuracy" in h]
    result = {"library": "adapters 1.3.0", "mode": a.mode, "task": a.task, "seed": a.seed, "lr": a.lr,
              "epochs": a.epochs, "batch_size": a.batch_size, "max_length": a.max_length, "sources": a.sources,
              "trainable_parameters": trainable, "history": history,
              "best": max(history, key=lambda h: h["accuracy"]), "last": history[-1],
              "wall_time_s": round(time.time() - started, 1)}
    if a.mode == "fusion":
        result["fusion_attention"] = fusion_attention(model, tokenizer, eval_set, setup)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("mode", "task", "seed", "best", "last", "wall_time_s")}))


@torch.no_grad()
def fusion_attention(model, tokenizer, rows: list[dict], setup) -> dict:
    """Mean fusion attention per layer over the validation rows, at the first token (the head's
    input) and over all real tokens: {layer: {adapter: weight}}."""
    model.eval()
    collate = DataCollatorWithPadding(tokenizer)
    first, every = {}, {}
    for i in range(0, len(rows), 64):
        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows[i:i + 64]])
        out = model(**batch, output_adapter_fusion_attentions=True)
        mask = batch["attention_mask"].numpy().astype(bool)
        for layer, sites in out.adapter_fusion_attentions[setup.name].items():
            for probs in sites.values():  # (batch, tokens, adapters)
                first.setdefault(layer, []).append(probs[:, 0])
                every.setdefault(layer, []).append(probs[mask])
    names = list(setup.children)  # flatten() is a set in AdapterHub

    def mean(d):
        return {str(k): dict(zip(names, np.concatenate(v).mean(0).round(4).tolist())) for k, v in sorted(d.items())}

    return {"first_token": mean(first), "all_tokens": mean(every)}


if __name__ == "__main__":
    main()
