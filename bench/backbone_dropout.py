"""Does the frozen backbone need its own dropout while adapters train? Accuracy over seeds.

Trains one adapter per (task, trainer.backbone_dropout setting, seed) through the CLI and
prints the validation metric's mean and spread per setting, and the mean wall time:

    .venv/bin/python bench/backbone_dropout.py --tasks rotten_tomatoes mrpc --seeds 1 2 3 --jobs 1

``all`` keeps the backbone's dropout as its config says (AdapterHub's and PEFT's behaviour),
``hidden`` turns attention-probability dropout off, ``none`` turns all backbone dropout off.
Each run is ``adapterctl train`` with the defaults (2 epochs) unless ``--set`` adds overrides;
runs go to ``--out`` (one folder per run, ``results.json`` beside them). On 2 CPU cores one
rotten_tomatoes run takes 5-7 minutes; on a GPU, ``--jobs 6`` runs six at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def train(out: Path, task: str, setting: str, seed: int, extra: list[str]) -> dict:
    folder = out / f"{task}-{setting}-s{seed}"
    if not (folder / "metrics.json").is_file():
        command = [sys.executable, "-m", "adapterctl", "train", f"task={task}", f"seed={seed}",
                   f"trainer.backbone_dropout={setting}", f"output_dir={folder}", *extra]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"task": task, "setting": setting, "seed": seed, "score": metrics[metrics["main_metric"]],
            "metric": metrics["main_metric"], "wall_time_s": metrics["wall_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["rotten_tomatoes"])
    parser.add_argument("--settings", nargs="+", default=["all", "hidden", "none"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--out", type=Path, default=Path("outputs/backbone_dropout"))
    parser.add_argument("--set", nargs="*", default=["adapter=pfeiffer"], help="extra overrides for every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(t, s, seed) for seed in args.seeds for t in args.tasks for s in args.settings]
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda r: train(args.out, *r, args.set), runs))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{len(results)} runs in {time.time() - started:.0f}s; overrides: {' '.join(args.set)}")
    for task in args.tasks:
        for setting in args.settings:
            rows = [r for r in results if r["task"] == task and r["setting"] == setting]
            scores = [r["score"] for r in rows]
            print(f"{task:16s} backbone_dropout={setting:6s} {rows[0]['metric']} "
                  f"{statistics.mean(scores):.4f} ± {statistics.pstdev(scores):.4f} "
                  f"(min {min(scores):.4f}, max {max(scores):.4f}, n={len(scores)}); "
                  f"{statistics.mean(r['wall_time_s'] for r in rows):.0f}s per run")


if __name__ == "__main__":
    main()
