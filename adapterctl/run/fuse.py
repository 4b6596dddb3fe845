"""``adapterctl fuse adapters=[mnli,qnli,sst2] task=cb``: AdapterFusion over trained adapters.

The named adapters load frozen (without their heads), a fusion layer and a new head for the
task are added, and only those train, with the fusion's value regularization in the loss.
The run folder holds, besides the usual records, ``setup/``: AdapterHub's
``save_adapter_setup`` layout (``adapter_setup.json``, a folder per adapter, and the fusion
folder ``<a,b,c>/`` with the head), which ``AdapterModel.load_adapter_setup`` and
``adapterctl evaluate run=<this run>`` read.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..core.composition import Fuse
from . import build, folders, runner

SETUP_DIR = "setup"


def build_run(cfg) -> runner.Built:
    """The backbone, the named adapters frozen and without heads, a fusion over them and a new
    head for the task: only the fusion and the head train."""
    model, tokenizer = build.load_backbone(cfg.backbone.path)
    sources = [build.adapter_source(spec) for spec in cfg.adapters]
    names = [model.load_adapter(source, with_head=False) for source in sources]
    fusion = model.add_fusion(names, {k: v for k, v in OmegaConf.to_container(cfg.fusion).items() if k != "lr"})
    model.add_head(fusion, cfg.head.type, **build.head_options(cfg.head, cfg.task.label_names))
    setup = Fuse(*names)
    model.train_fusion(setup, backbone_dropout=cfg.trainer.backbone_dropout)
    if cfg.trainer.gradient_checkpointing:
        build.checkpoint_activations(model)

    def save(folder: Path, overwrite: bool) -> dict:
        model.save_adapter_setup(folder / SETUP_DIR, setup, overwrite=overwrite)
        return {"fusion": fusion}

    return runner.Built(model, tokenizer, f"{cfg.fusion.preset} fusion over {', '.join(names)}",
                        run_record(cfg, sources, fusion), save)


def run(cfg, overrides: list[str]) -> Path:
    """One fusion run with the composed ``cfg``; returns its folder."""
    return runner.run(cfg, overrides, "fuse", build_run)


def run_record(cfg, sources: list, fusion: str) -> dict:
    """``run.json`` of a fusion run: what ``evaluate run=...`` needs to rebuild the model."""
    return {**folders.run_record(cfg, "fuse"), "adapters": [str(s) for s in sources],
            "fusion": {"name": fusion, **OmegaConf.to_container(cfg.fusion)}, "setup_dir": SETUP_DIR,
            "adapter": {"name": fusion, "dir": None}, "full_model_dir": None}
