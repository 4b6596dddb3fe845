"""``adapterctl export run=<run folder> [out=<dir>] [org=... license=... backbone=... ...]``.

The command only: ``adapterctl.hub.export`` turns the run into an adapter folder, its zip and
its Hub card (``card.yaml``), which ``adapterctl hub push`` publishes.

``merge=true`` writes instead a plain transformers checkpoint with the run's adapter merged into
the backbone's weights (LoRA, IA3, DoRA, VeRA): ``AutoModel.from_pretrained(out)`` gives the
adapter's hidden states with no adapter code; the run's head sits beside it
(``head_config.json``, ``AdapterModel.load_head``). A backbone that came with its LM head (a
``*ForCausalLM`` or ``*ForConditionalGeneration`` checkpoint) is saved with it, so
``AutoModelForCausalLM.from_pretrained(out)`` (or ``AutoModelForSeq2SeqLM``) generates with the
adapter merged in.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AdapterConfigError
from ..hub.card import read_card
from ..hub.cli import parse_options
from ..hub.export import CARD, OPTIONS, RUN_JSON, adapter_dir, export_run, read_json
from ..io import atomic_dir
from . import folders

MERGE = {"merge": "true: a transformers checkpoint with the adapter merged in (LoRA, IA3, DoRA, VeRA), no card"}
TOKENIZER = "tokenizer_config.json"


def main(argv: list[str]) -> int:
    """Entry point the top-level CLI dispatches ``adapterctl export ...`` to; user errors raise
    ``AdapterError`` (or ``FileExistsError``), which it prints as one line."""
    options = parse_options(argv, {**OPTIONS, **MERGE})
    if "run" not in options:
        raise AdapterConfigError("give the run to export: run=<run folder>, e.g. run=outputs/train/<date>_<time>")
    run = options.pop("run")
    merge = options.pop("merge", "false").lower()
    if merge not in ("true", "false"):
        raise AdapterConfigError(f"merge={merge!r}: use merge=true or merge=false")
    card_fields = sorted(set(options) - {"out"})
    if merge == "true" and card_fields:
        raise AdapterConfigError(f"merge=true writes a checkpoint without a Hub card; drop {', '.join(card_fields)}")
    out = Path(options.pop("out")) if "out" in options else folders.new_folder("export", None)
    try:
        if merge == "true":
            export_merged(Path(run), out)
        else:
            export_run(Path(run), out, **options)
    except BaseException:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    if merge == "true":
        print(f"exported {run} -> {out}: a transformers checkpoint with the adapter merged in\n"
              f"load it: transformers.AutoModel.from_pretrained({str(out)!r})")
        return 0
    hint = "" if read_card(out / CARD)["backbone"]["model_name"] else (
        "note: the card names no HF Hub model id for the backbone, only where it was loaded from; "
        "re-export with backbone=<model id> so that others can tell which backbone it fits\n")
    print(f"exported {run} -> {out}\n\n{(out / CARD).read_text()}\n{hint}"
          f"publish it: adapterctl hub push {out} --hub <hub folder>")
    return 0


def export_merged(run_folder: Path, out: Path) -> Path:
    """The run's backbone with its adapter merged in, saved by transformers to ``out``."""
    from ..core.backbone import backbone_path
    from ..core.model import AdapterModel  # torch only for this form of the command

    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        raise AdapterConfigError(f"run folder {run_folder} does not exist; give run=outputs/train/<date>_<time>")
    run = read_json(run_folder / RUN_JSON)
    location = (run.get("backbone") or {}).get("path")
    if not location:
        raise AdapterConfigError(f"{run_folder / RUN_JSON} names no backbone path; is {run_folder} an adapterctl run?")
    model = AdapterModel.from_pretrained(location).eval()
    name = model.load_adapter(adapter_dir(run_folder, run))
    model.merge_adapter(name)
    with atomic_dir(out) as tmp:
        save_merged(model, tmp)
        if name in model.heads:
            model.write_head(tmp, name)
        source = Path(backbone_path(str(location)))
        if (source / TOKENIZER).is_file():
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(tmp))
    return Path(out)


def save_merged(model, directory: Path) -> None:
    """The backbone's own weights (adapters merged into them stay; the adapters' modules go), in
    the transformers LM around it where the checkpoint had an LM head (its head ``default``)."""
    own = {id(t) for name in model.adapters_config for m in model.adapter_modules(name)
           for t in m.state_dict(keep_vars=True).values()}
    head = model.heads["default"] if "default" in model.heads else None
    lm = head is not None and head.config["head_type"] in ("causal_lm", "seq2seq_lm")
    target = model._causal_lm("default") if lm else model.backbone
    state = {k: v.detach() for k, v in target.state_dict(keep_vars=True).items() if id(v) not in own}
    target.save_pretrained(str(directory), state_dict=state)
