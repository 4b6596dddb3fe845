"""``adapterctl train``: a new adapter (or, with ``adapter=none``, the whole model) trained on a task.

The run's steps are the shared skeleton's (``runner``); this module says what is trained and
what is kept: the best adapter with its head under ``adapters/<name>/`` (and the frozen
adapters of ``setup=[...]`` beside it), or for full fine-tuning the whole model under ``model/``.
"""

from __future__ import annotations

from pathlib import Path

from . import build, folders, runner


def build_run(cfg) -> runner.Built:
    model, tokenizer = build.new_model(cfg)
    name = cfg.adapter.name
    below = model.active_setup.flatten()[:-1] if model.active_setup else []  # MAD-X: the frozen stack

    def save(folder: Path, overwrite: bool) -> dict:
        if cfg.adapter.preset == "none":
            build.save_full_model(model, tokenizer, folder / build.FULL_MODEL_DIR, name, overwrite=overwrite)
        else:
            model.save_adapter(folder / "adapters" / name, name, with_head=True, overwrite=overwrite)
            for frozen in below:
                model.save_adapter(folder / "adapters" / frozen, frozen, with_head=False, overwrite=overwrite)
        return {}

    return runner.Built(model, tokenizer, f"adapter {name} ({cfg.adapter.preset})",
                        {**folders.run_record(cfg, "train"), "setup": below}, save)


def run(cfg, overrides: list[str]) -> Path:
    """One training run with the composed ``cfg``; returns its folder."""
    return runner.run(cfg, overrides, "train", build_run)
