"""Composing a command's config from ``conf/`` with Hydra, and turning Hydra's errors into
one line that names the fix.

We use Hydra's compose API rather than ``@hydra.main``: one console script serves several
commands, errors must stay one line, and multirun is a plain loop over the combinations
(see ``sweep``), so every job writes the same run folder as a single run.
"""

from __future__ import annotations

import difflib
import itertools
import re
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..core import registry
from ..errors import AdapterConfigError
from . import schema
from .paths import conf_dir, recipes_dir

# The groups' types: conf/trainer/default.yaml picks the trainer's, each conf/adapter/<preset>.yaml
# its method's (every registered method's config dataclass).
ConfigStore.instance().store(group="trainer", name="schema", node=schema.TrainerSettings)
for _name, _spec in registry.methods().items():
    ConfigStore.instance().store(group="schema/adapter", name=_name, node=schema.adapter_schema(_spec.config_class))

# Keys spelt like a config group on the command line: ``adapter=<folder>`` in evaluate and
# predict names a folder, not an option of conf/adapter/, so it is read as ``adapter_path``.
PATH_KEYS = {"evaluate": {"adapter": "adapter_path"}, "predict": {"adapter": "adapter_path"},
             "generate": {"adapter": "adapter_path"}}

# Keys whose value is free text (``text="a gripping, funny film"``): quoted for Hydra, so a comma
# or an apostrophe is text, not a sweep or a syntax error. A list (``text=[...]``) stays a list.
FREE_TEXT_KEYS = {"predict": ("text",), "generate": ("prompt",)}


def _quote_free_text(override: str) -> str:
    key, _, value = override.partition("=")
    if value.startswith(("[", "'", '"')):
        return override
    quote = "'" if "'" not in value else '"'
    return f"{key}={quote}{value.replace(quote, chr(92) + quote)}{quote}"


def expand(command: str, overrides: list[str]) -> list[str]:
    """The overrides Hydra gets: the recipe's first, ``adapter=<folder>`` renamed where it names a
    folder, free text quoted."""
    overrides = recipe_overrides(overrides) + [o for o in overrides if not o.startswith("recipe=")]
    for key, renamed in PATH_KEYS.get(command, {}).items():
        overrides = [f"{renamed}={o.split('=', 1)[1]}" if o.startswith(f"{key}=") else o for o in overrides]
    return [_quote_free_text(o) if o.split("=", 1)[0] in FREE_TEXT_KEYS.get(command, ()) else o for o in overrides]


def compose_config(command: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """``conf/<command>.yaml`` with the overrides, unresolved (what ``--cfg job`` prints)."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return compose(command, overrides=expand(command, overrides), return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise AdapterConfigError(explain(e, command)) from None


def load(command: str, overrides: list[str]) -> DictConfig:
    """The composed, resolved and checked config of ``command``, recipe applied first: every
    value a command will use is known good before it loads a model or makes a folder."""
    cfg = compose_config(command, overrides)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise AdapterConfigError(explain(e, command)) from None
    OmegaConf.set_struct(cfg, True)
    check(cfg, command)
    return cfg


def prepare(command: str, overrides: list[str]) -> DictConfig:
    """What the command runs with: ``load``, and for ``resume=true`` the run's own saved config."""
    cfg = load(command, overrides)
    if cfg.get("resume"):
        cfg = resumed(cfg, command, overrides)
    return cfg


def check(cfg: DictConfig, command: str) -> None:
    """Values Hydra's types cannot rule out, as one line naming the key and what it takes."""
    from .. import metrics

    if "seed" in cfg and (not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool)):
        raise AdapterConfigError(f"seed={cfg.seed!r} is not a valid integer; give seed=<integer> (e.g. seed=42)")
    for key in ("resume", "overwrite"):
        if key in cfg and not isinstance(cfg[key], bool):
            raise AdapterConfigError(f"{key}={cfg[key]!r} is not true or false; give {key}=true or {key}=false")
    if "trainer" in cfg:
        schema.check(cfg.trainer)
    if command == "fuse":
        if OmegaConf.is_missing(cfg, "adapters") or not isinstance(cfg.adapters, ListConfig) or len(cfg.adapters) < 2:
            given = "none" if OmegaConf.is_missing(cfg, "adapters") else repr(cfg.adapters)
            raise AdapterConfigError(f"fuse needs at least two adapters to fuse (got {given}): give adapters=[a,b,...] "
                                     "(train runs, exported or adapter folders, adapter names or Hub ids)")
    if cfg.get("task") is not None:
        metrics.check(cfg.task.metrics)
        if "head" in cfg:
            check_head(cfg.head.type, cfg.task)
    zero_shot = command == "evaluate" and cfg.get("task") is not None and cfg.task.kind in (
        "causal_lm", "seq2seq")  # data.LM_KINDS (data imports torch; the CLI checks before it)
    if command in ("evaluate", "predict") and bool(cfg.run) == bool(cfg.adapter_path) and not (
            zero_shot and not cfg.run):
        raise AdapterConfigError("give exactly one of run=<run folder> or adapter=<adapter folder, name or Hub id> "
                                 "(a list of either runs them in one Parallel pass)")
    if command == "predict":
        check_inputs(cfg, "text", 'text="..." or text=[a,b]', ".json, .jsonl or .csv")
    if command == "generate":
        if cfg.run and cfg.adapter_path:
            raise AdapterConfigError("give at most one of run=<run folder> or adapter=<adapter folder or Hub id>")
        check_inputs(cfg, "prompt", 'prompt="..."', ".txt, .json, .jsonl or .csv")
        if cfg.max_new_tokens < 1:
            raise AdapterConfigError(f"max_new_tokens={cfg.max_new_tokens}: give a positive number of tokens")


# task kind -> the head types its rows can train (a classification task with one label is regression)
HEADS_FOR = {"classification": ("classification",), "tagging": ("tagging",), "qa": ("question_answering",),
             "causal_lm": ("causal_lm",), "seq2seq": ("seq2seq_lm",)}


def check_head(head_type: str, task) -> None:
    fits = ("regression",) if task.kind == "classification" and len(task.label_names) == 1 else HEADS_FOR.get(
        task.kind, ())
    if head_type not in fits:
        labels = f", labels {', '.join(map(str, task.label_names))}" if task.kind == "classification" else ""
        raise AdapterConfigError(f"head={head_type} does not fit task {task.name} ({task.kind}{labels}); "
                                 f"use head=auto ({' or '.join(fits) or 'none fits'})")


def check_inputs(cfg: DictConfig, key: str, example: str, kinds: str) -> None:
    """predict's and generate's inputs: ``<key>=`` or ``file=``, and where the output goes."""
    if bool(cfg[key]) == bool(cfg.file):
        raise AdapterConfigError(f"give exactly one of {example} or file=<{kinds}>")
    if cfg.file and not Path(cfg.file).is_file():
        raise AdapterConfigError(f"input file {cfg.file} does not exist; give file=<path to {kinds}>")
    if cfg.output:
        out = Path(cfg.output)
        if out.is_dir():
            raise AdapterConfigError(f"output={out} is a folder; give a file path, e.g. output={out / 'predictions.jsonl'}")
        if out.exists() and not cfg.overwrite:
            raise AdapterConfigError(f"output file {out} already exists; choose another output=... or add overwrite=true")


# Keys that only say which run to continue, not how it trains.
RESUME_KEYS = ("resume", "output_dir")


def resumed(cfg: DictConfig, command: str, overrides: list[str]) -> DictConfig:
    """``resume=true`` continues a run with the config it started with (its ``config.yaml``). A
    setting given beside it must agree with that config: a change would make the resumed run a
    different one, so it is an error, never ignored."""
    from . import folders

    folder = folders.resumable(command, cfg.output_dir)
    saved = OmegaConf.load(folder / "config.yaml")
    changed = []
    for key in override_keys(command, overrides):
        if key.split(".")[0] in RESUME_KEYS:
            continue
        ours, theirs = OmegaConf.select(cfg, key, default=None), OmegaConf.select(saved, key, default=None)
        ours, theirs = (OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
                        for v in (ours, theirs))
        if ours != theirs:
            changed.append(f"{key}={_show(ours)} (the run has {_show(theirs)})")
    if changed:
        raise AdapterConfigError(f"resume=true continues {folder} with its own settings, and {'; '.join(changed)} would "
                                 "change them: drop those to resume it, or start a new run without resume=true")
    saved.output_dir, saved.resume = str(folder), True
    OmegaConf.set_struct(saved, True)
    check(saved, command)
    return saved


def _show(value) -> str:
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def override_keys(command: str, overrides: list[str]) -> list[str]:
    """The config keys (or groups) the overrides set, recipes included."""
    try:
        parsed = OverridesParser.create().parse_overrides(expand(command, overrides))
    except HydraException as e:
        raise AdapterConfigError(f"cannot read the overrides: {_first_line(e)}") from None
    return [o.key_or_group for o in parsed]


def recipe_overrides(overrides: list[str]) -> list[str]:
    """A recipe is a whole run as plain YAML: group choices (``task: rte``) and values
    (``trainer: {epochs: 3}``); it becomes overrides the command line can still change."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")]
    if not names:
        return []
    path = Path(names[-1])
    if not path.suffix:
        path = recipes_dir() / f"{names[-1]}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in recipes_dir().glob("*.yaml"))) or "none"
        raise AdapterConfigError(f"no recipe {names[-1]!r}; choose one of {known} (adapterctl recipes lists them)")
    data = yaml.safe_load(path.read_text()) or {}
    groups = {p.name for p in conf_dir().iterdir() if p.is_dir()}
    out = []
    for key, value in data.items():
        if key in groups and isinstance(value, str):
            out.append(f"{key}={value}")
        else:
            out += [f"{k}={_hydra_value(v)}" for k, v in _flatten(key, value)]
    return out


def _flatten(prefix: str, value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}", v)
    else:
        yield prefix, value


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, dict, bool)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def sweep(command: str, overrides: list[str]) -> list[list[str]]:
    """Multirun: the cartesian product of comma-separated (sweep) overrides, in order, each
    combination composed and checked before the first job runs."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise AdapterConfigError(f"cannot read the overrides: {_first_line(e)}") from None
    choices = []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([raw])
    jobs = [list(combo) for combo in itertools.product(*choices)]
    for n, job in enumerate(jobs):
        try:
            cfg = load(command, job)
        except AdapterConfigError as e:
            raise AdapterConfigError(f"multirun job {n} ({' '.join(job)}): {e}") from None
        if cfg.get("resume"):
            raise AdapterConfigError("resume=true continues one run: give output_dir=<the job's folder> without -m")
    return jobs


# Hydra's own flags that adapterctl answers (``--cfg job``, ...); any other ``--name`` is a mistake.
FLAGS = ("-m", "--multirun", "-h", "--help", "--cfg", "-c", "--resolve", "--info", "-i")


def reject_flags(command: str, args: list[str]) -> None:
    """``--max_steps 5``: adapterctl takes ``key=value`` settings; say which key was meant."""
    for i, arg in enumerate(args):
        if not arg.startswith("-") or arg in FLAGS or arg.split("=")[0] in FLAGS or args[i - 1:i] in (["--cfg"], ["-c"]):
            continue
        name, _, value = arg.lstrip("-").partition("=")
        if not value and i + 1 < len(args) and "=" not in args[i + 1] and not args[i + 1].startswith("-"):
            value = args[i + 1]
        keys = [k for k in _default_keys(command) if k.split(".")[-1] == name] or [name]
        typed = " ".join(args[i:i + 2]) if value and "=" not in arg else arg
        meant = " or ".join(f"{k}={value or '<value>'}" for k in keys)
        raise AdapterConfigError(f"adapterctl takes settings as key=value, not --flags: write {meant} instead of "
                                 f"{typed} (adapterctl {command} --help lists the keys)")


def explain(error: Exception, command: str) -> str:
    """One line naming the problem and the fix, for the errors users hit."""
    text = str(error)
    m = re.search(r"Could not find '([^'/]+)/([^']+)'.*?Available options in '[^']+':\n(.*?)(?:\nConfig search|$)",
                  text, re.S)
    if m:
        group, option = m.group(1), m.group(2)
        options = [o for o in m.group(3).split() if o != "schema"]  # schema: the group's types, not a choice
        return f"unknown {group} {option!r}; choose one of: {', '.join(options)} ({group}=<name>)" + _did_you_mean(
            option, options)
    cause = f"{error.__cause__}"
    m = (re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)\s+full_key: (\S+)", cause)
         or re.search(r"Value '(.*)' is not a valid (\w+) \(type \w+\)\s+full_key: (\S+)", cause))
    if m:  # a value of the wrong type for a key typed in run/schema.py
        value, kind, key = m.groups()
        return (f"{key}={value!r} is not a valid {kind.lower()}; give {key}=<{kind.lower()}> "
                f"(adapterctl {command} --help lists the keys and their types)")
    m = (re.search(r"Could not override '([^']+)'.\s*To append", text) or re.search(r"Key '([^']+)' is not in struct", text)
         or re.search(r"Could not override '([^']+)'. No match in the defaults list", text))
    if m:
        key = m.group(1)
        return f"unknown key {key!r} for `adapterctl {command}`{_key_hint(key, command)}"
    if "LexerNoViableAlt" in text or "mismatched input" in text or "extraneous input" in text:
        return f"cannot read the settings ({_first_line(error)}); write each as key=value, e.g. trainer.max_steps=5"
    return f"bad configuration: {_first_line(error)}"


def _default_keys(command: str) -> list[str]:
    """Every key of the command's default config, dotted (``trainer.max_steps``)."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = OmegaConf.to_container(compose(command), resolve=False)
    except HydraException:
        return []
    return [k.lstrip(".") for k, _ in _flatten("", cfg)]


def _groups(command: str) -> list[str]:
    text = (conf_dir() / f"{command}.yaml").read_text()
    return sorted(p.name for p in conf_dir().iterdir() if p.is_dir() and f"- {p.name}:" in text)


def _key_hint(key: str, command: str) -> str:
    """Suggest the nearest existing key or config group (``adaptr`` -> the group ``adapter``)."""
    keys = _default_keys(command)
    if "." not in key:  # a top-level word: a group or a top-level key
        groups = _groups(command)
        close = difflib.get_close_matches(key, groups + [k for k in keys if "." not in k], n=1, cutoff=0.6)
        if close and close[0] in groups:
            options = sorted(f.stem for f in (conf_dir() / close[0]).glob("*.yaml"))
            return f"; did you mean the group {close[0]!r} ({close[0]}={'|'.join(options)})?"
        if close:
            return f"; did you mean {close[0]!r}?"
    return _did_you_mean(key, keys) or f"; adapterctl {command} --help lists the keys (add a new one with +{key}=...)"


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
